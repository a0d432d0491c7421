import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';
import { CONNECT_HELP } from '../../collector/defaults.js';
import type { Lineage, LineageProcess, ProcessMatch } from '../../collector/client.js';

const help = `usage: bridle lineage EXEC_ID [--max N] [-o text|json] [connection flags]
       bridle lineage --connected-to ADDR[:PORT] [--since T] [--until T] [--host H]... [-o text|json]
       bridle lineage --ran PATH [--since T] [--until T] [--host H]... [-o text|json]

With EXEC_ID: the process tree around one process image, as the collector stored it: its ancestors up
to the session's root (the process the session started with), the process itself, and every
descendant; under each process its execs, exits, connections, tool calls and verdicts, in time order.
EXEC_ID is the exec_id field of any event (\`bridle events\` prints them with -o json).

With --connected-to or --ran: which processes, on any host, connected to ADDR (optionally only to
PORT) or ran PATH (a full path, or a program name like curl) within the time window; each with the
chain of processes that started it and the session it belongs to.

Flags:
  --max N                  at most N descendants (default 10000); the output says when it was cut
  --connected-to A[:P]     processes that connected to address A ([v6]:P for IPv6 with a port)
  --ran PATH               processes that executed PATH
  --since T / --until T    window: a duration back from now (24h, 7d) or an ISO time (default: 24h)
  --host H                 only on host H (repeatable)
  --limit N                at most N processes for --connected-to / --ran (default 100)
  -o text|json             text: a tree; json: the raw lineage object

${CONNECT_HELP}

Examples:
  bridle lineage 'ci-7:3b1f0c9a2d4e:48121:91283746501'
  bridle lineage --connected-to 169.254.169.254 --since 48h
  bridle lineage --ran /usr/bin/nc
`;

const lineage: Command = {
  summary: 'show the process tree around a process, or which processes connected to / ran something',
  help,
  async run(argv) {
    const cli = await import('../../collector/cli.js');
    const { parseTimeArg, parseAddrPort } = await import('../../events/query.js');
    const { flags, rest } = parseFlags(cli.normalizeArgv(argv), {
      ...cli.CONNECT_FLAGS, max: 'string', 'connected-to': 'string', ran: 'string', since: 'string', until: 'string', host: 'list', limit: 'string',
    });
    const mode = cli.outputMode(flags);
    const search = flags['connected-to'] || flags.ran;
    if (search && rest.length) throw new UsageError('give either EXEC_ID or --connected-to / --ran, not both');
    if (!search && rest.length !== 1) throw new UsageError(rest.length ? `one EXEC_ID at a time (got ${rest.length})` : 'give an EXEC_ID, --connected-to ADDR or --ran PATH');
    const num = (name: string, dflt: number) => {
      const v = flags[name] === undefined ? dflt : Number(flags[name]);
      if (!Number.isInteger(v) || v <= 0) throw new UsageError(`--${name} must be a positive whole number`);
      return v;
    };
    const max = num('max', 10_000);
    const limit = num('limit', 100);
    let q: import('../../collector/store.js').ProcessQuery | undefined;
    if (search) {
      q = { limit };
      try {
        q.since = parseTimeArg((flags.since as string | undefined) ?? '24h');
        if (flags.until) q.until = parseTimeArg(flags.until as string);
        if (flags['connected-to']) Object.assign(q, parseAddrPort(flags['connected-to'] as string));
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      if (flags.ran) q.path = flags.ran as string;
      const hosts = (flags.host as string[] | undefined) ?? [];
      if (hosts.length) q.hosts = hosts;
    } else if (flags.since || flags.until || flags.host || flags.limit) {
      throw new UsageError('--since, --until, --host and --limit go with --connected-to or --ran');
    }
    const client = cli.queryClientFromFlags(flags);
    const address = cli.collectorAddress(flags);
    try {
      if (q) {
        const res = await client.findProcesses(q);
        if (mode === 'json') await cli.out(JSON.stringify(res, null, 2) + '\n');
        else await cli.out(renderMatches(cli, res.matches, res.truncated, q));
        return 0;
      }
      const execId = rest[0]!;
      const res = await client.lineage(execId, max);
      if (!res) {
        process.stderr.write(`bridle lineage: the collector has no process or event with exec_id '${execId}'\n`);
        return 1;
      }
      await cli.out(mode === 'json' ? JSON.stringify(res, null, 2) + '\n' : renderTree(cli, res, execId));
      return 0;
    } catch (err) {
      throw cli.describeError(err, address);
    } finally {
      client.close();
    }
  },
};

type Cli = typeof import('../../collector/cli.js');

const hms = (ts: string) => new Date(Date.parse(ts)).toISOString().slice(11, 23);

/** The lineage as a tree: ancestors' chain, the target marked, its subtree; events under each process. */
export function renderTree(cli: Cli, lin: Lineage, target: string): string {
  const lines: string[] = [];
  if (lin.session) lines.push(cli.sessionHeadline(lin.session), '');
  const ids = new Set(lin.processes.map((p) => p.exec_id));
  const children = new Map<string, LineageProcess[]>();
  const roots: LineageProcess[] = [];
  for (const p of lin.processes) {
    if (p.parent_exec_id && ids.has(p.parent_exec_id) && p.exec_id !== p.parent_exec_id) {
      const list = children.get(p.parent_exec_id) ?? [];
      list.push(p);
      children.set(p.parent_exec_id, list);
    } else roots.push(p);
  }
  const walk = (p: LineageProcess, prefix: string, last: boolean, top: boolean): void => {
    const branch = top ? '' : last ? '└─ ' : '├─ ';
    const marks = [p.session_root ? 'session root' : '', p.exec_id === target ? '◀ this process' : ''].filter(Boolean).join(', ');
    lines.push(`${prefix}${branch}${cli.processLabel(p)}${marks ? `   ◀── ${marks.replace('◀ ', '')}` : ''}`);
    const inner = prefix + (top ? '' : last ? '   ' : '│  ');
    const kids = children.get(p.exec_id) ?? [];
    const bar = kids.length ? '│  ' : '   ';
    lines.push(`${inner}${bar}  exec_id ${p.exec_id}${p.host ? `  host ${p.host}` : ''}`);
    for (const ev of p.events) {
      const v = cli.verdictTag(ev);
      lines.push(`${inner}${bar}  ${hms(ev.ts)}  ${ev.type.padEnd(13)}${v ? ` ${v.padEnd(10)}` : ''}  ${cli.eventDetail(ev)}`);
    }
    kids.forEach((k, i) => walk(k, inner, i === kids.length - 1, false));
  };
  roots.forEach((r, i) => {
    if (i) lines.push('');
    walk(r, '', true, true);
  });
  if (lin.truncated) lines.push('', '(cut: more descendants or events than --max allows)');
  return lines.join('\n') + '\n';
}

function renderMatches(cli: Cli, matches: ProcessMatch[], truncated: boolean, q: { daddr?: string; dport?: number; path?: string }): string {
  const what = q.daddr ? `connected to ${q.daddr}${q.dport ? `:${q.dport}` : ''}` : `ran ${q.path}`;
  if (matches.length === 0) return `no process ${what} in that window\n`;
  const lines = [`${matches.length} process${matches.length === 1 ? '' : 'es'} ${what}${truncated ? ' (more exist; raise --limit)' : ''}:`, ''];
  for (const m of matches) {
    const p = m.process;
    lines.push(`${p.host || '?'}  session ${p.session || '-'}  ${cli.processLabel(p)}`);
    lines.push(`    exec_id ${p.exec_id}`);
    for (const ev of m.evidence) lines.push(`    ${cli.fmtTime(Date.parse(ev.ts))}  ${ev.type}  ${cli.verdictTag(ev)}  ${cli.eventDetail(ev)}`);
    if (m.ancestors.length) lines.push(`    started by: ${m.ancestors.map((a) => `${a.path || '?'}[${a.pid}]`).join(' ← ')}`);
    lines.push('');
  }
  return lines.join('\n');
}

export default lineage;
