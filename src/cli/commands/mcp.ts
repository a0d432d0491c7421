// `bridle mcp`: the MCP governance proxy, over stdio (wraps the server's command) or Streamable HTTP
// (listens in front of the server's URL). stdout is the MCP channel in stdio mode: logs go to stderr.
import { resolve } from 'node:path';
import pino from 'pino';
import type { EventSink } from '../../events/types.js';
import { loadPolicyFile } from '../../policy/load.js';
import { PolicyError } from '../../policy/yamlctx.js';
import {
  defaultPinPath, LogSink, loadSqlParser, NdjsonFileSink, needsSqlParser, PinStore, startHttpProxy, startStdioProxy,
  type Logger,
} from '../../mcp/index.js';
import { UsageError, type Command } from '../command.js';

const help = `usage: bridle mcp --policy FILE --server NAME [flags] -- CMD [ARGS...]
       bridle mcp --policy FILE --server NAME [flags] --listen HOST:PORT --upstream URL

Governs an MCP server: every tools/call is checked against the policy's mcp.servers.NAME section
before it reaches the server. The agent sees the same server, minus what the policy denies:
  - tools/list answers show only the tools the policy allows;
  - a denied tools/call never reaches the server; the agent gets a tool error naming the rule;
  - arguments are checked against rule conditions (CEL, structured, sql: read-only) and the tool's
    own inputSchema;
  - tool definitions are pinned the first time they are seen; a later change is reported and, with
    pin: block (the default), blocks the changed tool;
  - malformed JSON-RPC, batches, unknown methods, tool names in other letter cases and oversized
    messages are refused;
  - every call is a tool_call event (NDJSON with --events, else a log record on stderr).
With 'mode: monitor' in the policy, calls that would be denied are forwarded and logged as would_deny.

Modes:
  -- CMD [ARGS...]          stdio: run the server as CMD and speak MCP on this process's stdin/stdout.
                            The exit status is the server's.
  --listen HOST:PORT        Streamable HTTP: listen here (port 0 picks one; the URL is logged) and
  --upstream URL            forward to the server's endpoint URL. The proxy serves the same path.

Flags:
  --policy FILE             policy YAML (required); see docs/mcp.md for the mcp: section
  --server NAME             the server's name under mcp.servers (required)
  --events FILE             append tool_call and violation events to FILE as NDJSON
                            (default: log them on stderr)
  --pins FILE               tool-definition pin store (default: mcp.pins from the policy, else
                            $XDG_STATE_HOME/bridle/mcp-pins.json or ~/.local/state/bridle/mcp-pins.json)
  --repin                   accept the server's current tool definitions as the new pins
  --log-level LEVEL         debug | info | warn | error | silent (default: info); the log is on stderr
  --session ID              session id for events (default: $BRIDLE_SESSION, else '')
  --exec-id ID              exec id for events (default: $BRIDLE_EXEC_ID, else '')
                            (with a running \`bridle agent\`, events also go to its report socket,
                            $BRIDLE_REPORT_SOCKET or /run/bridle/report.sock, which stamps the session
                            and exec_id of this process from the kernel)

Example policy (docs/mcp.md has every key):
  version: 1
  mcp:
    servers:
      filesystem:
        tools:
          allow: [read_text_file, list_directory, "search_*"]
        rules:
          - tool: read_text_file
            args: { path: { under: /work } }

Example MCP client configuration (Claude Code .mcp.json, Claude Desktop, Cursor):
  {
    "mcpServers": {
      "filesystem": {
        "command": "bridle",
        "args": ["mcp", "--policy", "/etc/bridle/policy.yaml", "--server", "filesystem",
                 "--events", "/var/log/bridle/mcp.ndjson",
                 "--", "mcp-server-filesystem", "/work"]
      }
    }
  }

Streamable HTTP example:
  bridle mcp --policy policy.yaml --server github --listen 127.0.0.1:8931 \\
    --upstream http://127.0.0.1:3001/mcp
  then point the agent at http://127.0.0.1:8931/mcp
`;

interface Flags {
  policy?: string;
  server?: string;
  events?: string;
  pins?: string;
  repin: boolean;
  listen?: string;
  upstream?: string;
  logLevel: string;
  session?: string;
  execId?: string;
  command: string[];
}

const VALUE_FLAGS: Record<string, keyof Flags> = {
  '--policy': 'policy',
  '--server': 'server',
  '--events': 'events',
  '--pins': 'pins',
  '--listen': 'listen',
  '--upstream': 'upstream',
  '--log-level': 'logLevel',
  '--session': 'session',
  '--exec-id': 'execId',
};

export function parseFlags(argv: string[]): Flags {
  const f: Flags = { repin: false, logLevel: 'info', command: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      f.command = argv.slice(i + 1);
      break;
    }
    if (a === '--repin') {
      f.repin = true;
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(0, eq) : a;
    const key = VALUE_FLAGS[name];
    if (!key) {
      if (a.startsWith('-')) throw new UsageError(`unknown flag '${name}'`);
      throw new UsageError(`unexpected argument '${a}': put the server's command after '--' (bridle mcp ... -- CMD ARGS)`);
    }
    const value = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '') throw new UsageError(`${name} needs a value`);
    (f as unknown as Record<string, string>)[key] = value;
  }
  if (!f.policy) throw new UsageError('--policy FILE is required');
  if (!f.server) throw new UsageError('--server NAME is required (the name under mcp.servers in the policy)');
  const http = f.listen !== undefined || f.upstream !== undefined;
  if (http && f.command.length) throw new UsageError('give either -- CMD (stdio) or --listen/--upstream (HTTP), not both');
  if (http && (!f.listen || !f.upstream)) throw new UsageError('HTTP mode needs both --listen HOST:PORT and --upstream URL');
  if (!http && f.command.length === 0) throw new UsageError("give the server's command after '--' (stdio), or --listen and --upstream (HTTP)");
  if (!['debug', 'info', 'warn', 'error', 'silent'].includes(f.logLevel)) throw new UsageError(`--log-level must be debug, info, warn, error or silent, not '${f.logLevel}'`);
  return f;
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen must be HOST:PORT like 127.0.0.1:8931 or [::1]:0, not '${s}'`);
  return { host: m[1] ?? m[2]!, port };
}

async function run(argv: string[]): Promise<number> {
  const f = parseFlags(argv);
  const listen = f.listen ? parseListen(f.listen) : undefined;
  if (f.upstream) {
    try {
      const u = new URL(f.upstream);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      throw new UsageError(`--upstream must be an http:// or https:// URL, not '${f.upstream}'`);
    }
  }
  // Asynchronous: a client that does not drain our stderr must not stall the MCP channel.
  const dest = pino.destination({ dest: 2, sync: false });
  const log = pino({ level: f.logLevel, base: { component: 'bridle-mcp', server: f.server, pid: process.pid } }, dest) as unknown as Logger;
  const flushLog = (): void => {
    try {
      dest.flushSync();
    } catch {
      /* stderr gone */
    }
  };
  try {
    return await serve(f, listen, log);
  } finally {
    flushLog();
  }
}

async function serve(f: Flags, listen: { host: string; port: number } | undefined, log: Logger): Promise<number> {

  let policy;
  try {
    policy = loadPolicyFile(f.policy!);
  } catch (err) {
    if (err instanceof PolicyError) {
      process.stderr.write(`bridle mcp: the policy is invalid; nothing was started:\n${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (!policy.mcp.servers[f.server!]) {
    const known = Object.keys(policy.mcp.servers);
    process.stderr.write(
      `bridle mcp: server '${f.server}' is not in ${f.policy}'s mcp.servers (${known.length ? `known: ${known.join(', ')}` : 'it names no MCP server'}).\n` +
        'Add it under mcp.servers; a server the policy does not name is not proxied.\n',
    );
    return 2;
  }
  if (needsSqlParser(policy, f.server)) await loadSqlParser();

  const pinPath = resolve(f.pins ?? policy.mcp.pins?.replace(/^~(?=\/)/, process.env.HOME ?? '~') ?? defaultPinPath());
  let pins: PinStore | undefined;
  if (policy.mcp.servers[f.server!]!.pin !== 'off') {
    try {
      pins = new PinStore(pinPath, f.server!, { repin: f.repin });
    } catch (err) {
      process.stderr.write(`bridle mcp: ${(err as Error).message}\n`);
      return 1;
    }
  }

  let sink: EventSink;
  try {
    const local = f.events ? new NdjsonFileSink(resolve(f.events)) : new LogSink(log);
    // with a running `bridle agent`, tool calls also go to it: it stamps this process's session and
    // exec_id from the kernel and ships them with the rest of the session's events
    const { ReportSink } = await import('../../agent/report.js');
    const report = new ReportSink(local);
    sink = report.connected ? report : local;
  } catch (err) {
    process.stderr.write(`bridle mcp: cannot open --events ${f.events}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
    return 1;
  }
  const identity = {
    session: f.session ?? process.env.BRIDLE_SESSION ?? '',
    exec_id: f.execId ?? process.env.BRIDLE_EXEC_ID ?? '',
    pid: process.pid,
  };
  const common = { policy, server: f.server!, sink, identity, log, ...(pins ? { pins } : {}) };

  if (listen) {
    const proxy = await startHttpProxy({ ...common, listen, upstream: f.upstream! });
    log.info({ url: proxy.url, upstream: f.upstream, policy: policy.file, mode: policy.mode }, `MCP proxy listening at ${proxy.url}`);
    await new Promise<void>((done) => {
      const stop = (sig: NodeJS.Signals): void => {
        log.info({ signal: sig }, 'stopping');
        done();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await proxy.close();
    await sink.close?.();
    return 0;
  }

  const [cmd, ...args] = f.command;
  const proxy = startStdioProxy({
    ...common,
    command: cmd!,
    args,
    onSpawn: (child) => log.info({ server_pid: child.pid, command: f.command, policy: policy.file, mode: policy.mode }, 'MCP server started'),
  });
  const forward = (sig: NodeJS.Signals): void => proxy.kill(sig);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, forward);
  const status = await proxy.done;
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, forward);
  process.stdin.destroy();
  await sink.close?.();
  if (status === 127) process.stderr.write(`bridle mcp: cannot run '${cmd}': command not found\n`);
  return status;
}

const command: Command = {
  summary: 'govern an MCP server: filter tools, check every tool call against the policy',
  help,
  run,
};
export default command;
