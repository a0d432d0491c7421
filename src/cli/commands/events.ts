import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';
import type { EventFilter } from '../../events/query.js';
import { CONNECT_HELP } from '../../collector/defaults.js';
import type { BridleEvent, Verdict } from '../../events/types.js';

const TYPES = ['session_start', 'session_end', 'exec', 'exit', 'connect', 'dns', 'tool_call', 'violation', 'loss', 'policy'];

const help = `usage: bridle events [--follow] [--session S] [--type T]... [--verdict V]... [--host H]... [--exec-id ID]
                    [--since T] [--until T] [--connected-to ADDR[:PORT]] [--limit N] [-o text|json]
                    [connection flags]

Searches the collector's events, newest N matches printed oldest first; with --follow, then keeps
printing new matches as agents ship them (within a second of the kernel seeing them) until Ctrl-C.
A follow that loses the collector reconnects and resumes without gaps or repeats.

Filters (all must hold; repeat a flag or use commas for "any of"):
  --session S              one session
  --type T                 ${TYPES.join(', ')}
  --verdict V              allow, deny, would_deny
  --host H                 events of host H
  --exec-id ID             events of one process image
  --connected-to A[:P]     connect events to address A (port P)
  --since T / --until T    a duration back from now (30m, 24h, 7d) or an ISO time
Output:
  --limit N                at most N stored events (default 100; with --follow: 20 before the live ones)
  -o text|json             text: one line per event; json: one BridleEvent per line (NDJSON)
  -f, --follow             live tail

CONNECT

Examples:
  bridle events --follow --verdict deny                 # real-time alerts, every host
  bridle events --session 8f1c2a-1b --type exec,connect -o json
  bridle events --connected-to 169.254.169.254 --since 24h
`;

function list(v: unknown): string[] {
  return ((v as string[] | undefined) ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
}

const events: Command = {
  summary: 'search and live-tail events stored by the collector',
  help: help.replace('CONNECT', CONNECT_HELP),
  async run(argv) {
    const cli = await import('../../collector/cli.js');
    const { parseTimeArg, parseAddrPort } = await import('../../events/query.js');
    const { flags, rest } = parseFlags(cli.normalizeArgv(argv), {
      ...cli.CONNECT_FLAGS, follow: 'boolean', session: 'string', type: 'list', verdict: 'list', host: 'list', 'exec-id': 'string',
      since: 'string', until: 'string', 'connected-to': 'string', limit: 'string',
    });
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    const mode = cli.outputMode(flags);
    const f: EventFilter = {};
    const types = list(flags.type);
    for (const t of types) if (!TYPES.includes(t)) throw new UsageError(`unknown --type '${t}' (one of ${TYPES.join(', ')})`);
    if (types.length) f.types = types;
    const verdicts = list(flags.verdict);
    for (const v of verdicts) if (!['allow', 'deny', 'would_deny'].includes(v)) throw new UsageError(`unknown --verdict '${v}' (allow, deny, would_deny)`);
    if (verdicts.length) f.verdicts = verdicts as Verdict[];
    const hosts = list(flags.host);
    if (hosts.length) f.hosts = hosts;
    if (flags.session) f.session = flags.session as string;
    if (flags['exec-id']) f.exec_id = flags['exec-id'] as string;
    try {
      if (flags.since) f.since = parseTimeArg(flags.since as string);
      if (flags.until) f.until = parseTimeArg(flags.until as string);
      if (flags['connected-to']) Object.assign(f, parseAddrPort(flags['connected-to'] as string));
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const limit = flags.limit !== undefined ? Number(flags.limit) : flags.follow ? 20 : 100;
    if (!Number.isInteger(limit) || limit < 0) throw new UsageError('--limit must be a whole number');

    const print = (ev: BridleEvent) => cli.out((mode === 'json' ? JSON.stringify(ev) : cli.eventLine(ev)) + '\n');
    const client = cli.queryClientFromFlags(flags);
    const address = cli.collectorAddress(flags);
    try {
      if (!flags.follow) {
        const evs = await client.events(f, limit);
        let text = '';
        for (const ev of evs) text += (mode === 'json' ? JSON.stringify(ev) : cli.eventLine(ev)) + '\n';
        await cli.out(text);
        if (mode === 'text' && evs.length === 0) process.stderr.write('(no matching events)\n');
        return 0;
      }
      return await follow(client, f, limit, print, address);
    } catch (err) {
      throw cli.describeError(err, address);
    } finally {
      client.close();
    }
  },
};

/** Live tail that survives collector restarts: resubscribes from the last event seen, skipping repeats. */
async function follow(
  client: import('../../collector/client.js').QueryClient,
  filter: EventFilter,
  backfill: number,
  print: (ev: BridleEvent) => Promise<void>,
  address: string,
): Promise<number> {
  const seen = new Set<string>();
  const order: string[] = [];
  let lastMs: number | undefined;
  let stopped = false;
  let sub: ReturnType<typeof client.subscribe> | undefined;
  const stop = () => {
    stopped = true;
    sub?.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let warned = false;
  while (!stopped) {
    const f = lastMs !== undefined ? { ...filter, since: Math.max(filter.since ?? 0, lastMs) } : filter;
    sub = client.subscribe(f, { backfill: lastMs !== undefined ? 10_000 : backfill });
    try {
      for await (const ev of sub) {
        const key = `${ev.host}\u0000${ev.seq}`;
        if (seen.has(key)) continue;
        seen.add(key);
        order.push(key);
        if (order.length > 50_000) seen.delete(order.shift()!);
        lastMs = Date.parse(ev.ts);
        warned = false;
        await print(ev);
      }
      if (!stopped) throw Object.assign(new Error('the collector ended the stream'), { code: 14 });
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (stopped) break;
      if (code !== 14 && code !== 8) throw err; // UNAVAILABLE / RESOURCE_EXHAUSTED (fell behind): resubscribe
      if (!warned) process.stderr.write(`bridle events: lost the collector at ${address} (${(err as Error).message}); retrying…\n`);
      warned = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  return 0;
}

export default events;
