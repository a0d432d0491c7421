import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle collector [--listen HOST:PORT] [--db FILE] [--certs DIR | --ca F --cert F --key F | --insecure]
                        [--token-file F]... [--token T]... [--sync normal|full]

Runs the collector: agents stream their events to it over gRPC with mutual TLS (\`bridle agent
--collector HOST:PORT\`); it stores each event exactly once in an embedded SQLite database (no server to
install), indexes process lineage, and serves queries and live subscriptions to \`bridle events\`,
\`bridle lineage\` and \`bridle sessions\`.

Who may do what:
  - an agent writes events only as the host named in its certificate (CN / DNS SAN, role bridle-agent);
    a stream or an event claiming another host is refused
  - queries need a bearer token (metadata "authorization: Bearer T") or a client certificate with the
    query role (\`bridle certs client NAME\`)

Flags:
  --listen HOST:PORT   address to serve (default 127.0.0.1:7443; 0.0.0.0:7443 for every interface)
  --db FILE            SQLite store (default $BRIDLE_HOME/collector.db; BRIDLE_HOME is /var/lib/bridle
                       for root, ~/.bridle otherwise)
  --certs DIR          CA and collector certificate made by \`bridle certs init\` (default $BRIDLE_HOME/certs):
                       ca.crt, collector.crt, collector.key, and query.token when present
  --ca/--cert/--key F  PEM files instead of --certs
  --token-file F       accept the tokens in F (one per line; repeatable)
  --token T            accept token T (repeatable; also env BRIDLE_TOKEN)
  --sync MODE          normal (default): a crash of the collector loses no acknowledged event;
                       full: neither does a power cut (slower)
  --insecure           no TLS at all: anyone can write as any host. Tests and demos only.

Example:
  bridle certs init && bridle certs host "$(hostname)"
  bridle collector --listen 0.0.0.0:7443
`;

const collector: Command = {
  summary: 'run the event collector (gRPC ingest, SQLite store, lineage queries)',
  help,
  async run(argv) {
    const { flags, rest } = parseFlags(argv, {
      listen: 'string', db: 'string', certs: 'string', ca: 'string', cert: 'string', key: 'string', 'token-file': 'list', token: 'list',
      insecure: 'boolean', sync: 'string',
    });
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    const { join } = await import('node:path');
    const { existsSync } = await import('node:fs');
    const cli = await import('../../collector/cli.js');
    const { readTokenFile } = await import('../../collector/tls.js');
    const sync = (flags.sync as string | undefined) ?? 'normal';
    if (sync !== 'normal' && sync !== 'full') throw new UsageError(`--sync must be normal or full, not '${sync}'`);
    const listen = (flags.listen as string | undefined) ?? `127.0.0.1:${cli.DEFAULT_PORT}`;
    const dbPath = (flags.db as string | undefined) ?? join(cli.bridleHome(), 'collector.db');
    const certsDir = (flags.certs as string | undefined) ?? cli.defaultCertsDir();

    let tls;
    if (flags.insecure) {
      if (flags.ca || flags.cert || flags.key || flags.certs) throw new UsageError('--insecure cannot be combined with certificates');
      process.stderr.write(
        '\n  !!! bridle collector: --insecure: NO TLS. Any peer can write events as any host, and queries travel\n' +
          '  !!! in plain text. Use this only for tests and demos; run `bridle certs init` for real use.\n\n',
      );
    } else {
      tls = cli.tlsFromFlags(flags, { cert: 'collector.crt', key: 'collector.key' });
      if (!tls) throw new UsageError(`no certificates in ${certsDir}: run \`bridle certs init\` first, give --certs DIR or --ca/--cert/--key, or --insecure`);
    }

    const tokens = [...((flags.token as string[] | undefined) ?? [])];
    if (process.env.BRIDLE_TOKEN) tokens.push(process.env.BRIDLE_TOKEN);
    const files = (flags['token-file'] as string[] | undefined) ?? [];
    for (const f of files) tokens.push(...readTokenFile(f));
    const defaultTokens = join(certsDir, 'query.token');
    if (!files.length && existsSync(defaultTokens)) tokens.push(...readTokenFile(defaultTokens));
    if (tokens.length === 0 && !tls) {
      process.stderr.write('bridle collector: no query tokens (--token, --token-file, BRIDLE_TOKEN): nothing can query this collector\n');
    }

    const { default: pino } = await import('pino');
    const log = pino({ level: process.env.BRIDLE_LOG ?? 'info', name: 'collector' });
    const { startCollector } = await import('../../collector/server.js');
    const c = await startCollector({ listen, dbPath, ...(tls ? { tls } : { insecure: true }), queryTokens: tokens, sync, log });
    process.stderr.write(
      `bridle collector: listening on ${c.address} (${tls ? 'mutual TLS' : 'INSECURE, plain text'}), store ${dbPath}, ${tokens.length} query token(s)\n`,
    );
    await new Promise<void>((resolve) => {
      const stop = (sig: string) => {
        process.stderr.write(`bridle collector: ${sig}, shutting down\n`);
        resolve();
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
    await c.close();
    return 0;
  },
};
export default collector;
