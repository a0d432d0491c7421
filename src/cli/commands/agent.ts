import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle agent --policy FILE [--socket PATH] [--events FILE]
                    [--collector HOST:PORT (--ca F --cert F --key F | --insecure)] [--spool DIR]

Runs the supervisor as a daemon: loads the sensor once for the host, installs FILE as the default policy
(its agents: list starts sessions by itself, in the kernel, when an agent binary execs), and serves a
local control socket that \`bridle run\`, \`bridle attach\` and \`bridle agent reload\` use. Requests
from processes inside a session are refused.

  SIGHUP               reload FILE; an invalid policy is reported (file:line:col) and the old one stays
  bridle agent reload  the same, through the control socket (optionally --policy OTHER_FILE)
  bridle agent status  sessions, policy, lost-event counters

Flags:
  --policy FILE        default policy (required)
  --socket PATH        control socket (default /run/bridle/agent.sock, env BRIDLE_SOCKET)
  --report-socket PATH where session processes (bridle mcp) report tool calls; the agent stamps the
                       sender's session and exec_id from the kernel (default /run/bridle/report.sock,
                       env BRIDLE_REPORT_SOCKET)
  --events FILE        append every event as NDJSON to FILE (default: stdout)
  --collector H:P      ship every event to a bridle collector over gRPC (mutual TLS)
  --ca/--cert/--key F  PEM files for the collector link (made by \`bridle certs\`)
  --insecure           plain-text link to the collector (loudly warned; for tests only)
  --spool DIR          where un-acknowledged events wait (default /var/lib/bridle/spool)

Example:
  bridle agent --policy /etc/bridle/policy.yaml --collector collector.corp:7443 \\
    --ca /etc/bridle/ca.pem --cert /etc/bridle/host.pem --key /etc/bridle/host-key.pem
`;

const DEFAULT_SPOOL = '/var/lib/bridle/spool';

const agent: Command = {
  summary: 'run the supervisor as a daemon with a local control socket',
  help,
  async run(argv) {
    const { flags, rest } = parseFlags(argv, {
      policy: 'string', socket: 'string', 'report-socket': 'string', events: 'string', collector: 'string', ca: 'string', cert: 'string', key: 'string', insecure: 'boolean', spool: 'string',
    });
    const { DEFAULT_SOCKET, connectControl } = await import('../../agent/control.js');
    const socket = (flags.socket as string | undefined) ?? DEFAULT_SOCKET;
    if (rest[0] === 'status' || rest[0] === 'reload') {
      const c = await connectControl(socket);
      if (!c) throw new Error(`no agent answers at ${socket}`);
      const r = await c.request(rest[0] === 'status' ? { op: 'status' } : { op: 'reload', ...(flags.policy ? { policyFile: flags.policy as string } : {}) });
      c.close();
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      return r.ok ? 0 : 1;
    }
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    if (!flags.policy) throw new UsageError('--policy FILE is required');
    const { Agent } = await import('../../agent/daemon.js');
    const { NdjsonSink } = await import('../../agent/ndjson.js');
    const { PolicyError } = await import('../../policy/yamlctx.js');
    const sinks = [];
    sinks.push(flags.events ? new NdjsonSink(flags.events as string) : { emit: (ev: unknown) => void process.stdout.write(JSON.stringify(ev) + '\n') });
    if (flags.collector) {
      const { createShipper } = await import('../../agent/shipper.js');
      if (flags.insecure) process.stderr.write('bridle agent: WARNING: --insecure: events go to the collector in PLAIN TEXT, unauthenticated\n');
      sinks.push(
        await createShipper({
          collector: flags.collector as string,
          spoolDir: (flags.spool as string | undefined) ?? DEFAULT_SPOOL,
          host: (await import('../../agent/ids.js')).HOST,
          ...(flags.insecure ? { insecure: true } : { tls: { ca: flags.ca as string, cert: flags.cert as string, key: flags.key as string } }),
        }),
      );
    }
    const log = (m: string) => process.stderr.write(`bridle agent: ${m}\n`);
    // bridle's own files, denied to every session whatever its policy (builtin.bridle_files): the
    // collector link's key, $BRIDLE_HOME (certificates and their keys, the default spool, a collector's
    // store and query tokens), the spool, the state beside the pins and the default sockets, the event log
    const { bridleHome } = await import('../../collector/defaults.js');
    const { STATE_DIR } = await import('../../kernel/failclosed.js');
    const { resolve } = await import('node:path');
    const bridleFiles = [
      bridleHome(),
      STATE_DIR,
      resolve((flags.spool as string | undefined) ?? DEFAULT_SPOOL),
      ...[flags.key, flags.events].filter((f): f is string => typeof f === 'string').map((f) => resolve(f)),
    ];
    let a;
    try {
      a = await Agent.start({ policyFile: flags.policy as string, socket, ...(flags['report-socket'] ? { reportSocket: flags['report-socket'] as string } : {}), sinks, log, bridleFiles });
    } catch (err) {
      if (err instanceof PolicyError) {
        process.stderr.write(`bridle agent: invalid policy:\n${err.message}\n`);
        return 2;
      }
      throw err;
    }
    log(`running (pid ${process.pid}), control socket ${socket}`);
    process.on('SIGHUP', () => a.reload());
    await new Promise<void>((res) => {
      process.once('SIGINT', res);
      process.once('SIGTERM', res);
    });
    await a.close();
    return 0;
  },
};
export default agent;
