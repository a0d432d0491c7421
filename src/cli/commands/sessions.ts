import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';
import { CONNECT_HELP } from '../../collector/defaults.js';

const help = `usage: bridle sessions [--host H]... [--since T] [--denials] [--session S] [--limit N] [-o text|json]
                      [connection flags]

Lists agent sessions the collector knows, newest first: who (uid), which agent, on which host, under
which policy and mode, when they started and ended, how many events, denials and would-denials they had,
and how many of their events were lost. Below the table, every host that lost events before they reached
the collector (spool full, kernel ring buffer overrun) or had events refused is named with its counts.

Flags:
  --host H         only sessions on host H (repeatable)
  --since T        sessions active since T: a duration back from now (24h, 7d) or an ISO time
  --denials        only sessions with at least one deny or would_deny
  --session S      one session
  --limit N        at most N sessions (default 100)
  -o text|json     text: a table; json: {"sessions": [...], "hosts": [...]}

${CONNECT_HELP}

Examples:
  bridle sessions --since 24h --denials
  bridle sessions --host ci-runner-7 -o json
`;

const sessions: Command = {
  summary: 'list agent sessions with their denials and lost-event counts',
  help,
  async run(argv) {
    const cli = await import('../../collector/cli.js');
    const { parseTimeArg } = await import('../../events/query.js');
    const { flags, rest } = parseFlags(cli.normalizeArgv(argv), {
      ...cli.CONNECT_FLAGS, host: 'list', since: 'string', denials: 'boolean', session: 'string', limit: 'string',
    });
    if (rest.length) throw new UsageError(`unexpected argument '${rest[0]}'`);
    const mode = cli.outputMode(flags);
    const limit = flags.limit === undefined ? 100 : Number(flags.limit);
    if (!Number.isInteger(limit) || limit <= 0) throw new UsageError('--limit must be a positive whole number');
    const q: import('../../collector/store.js').SessionQuery = { limit };
    const hosts = (flags.host as string[] | undefined) ?? [];
    if (hosts.length) q.hosts = hosts;
    if (flags.session) q.session = flags.session as string;
    if (flags.denials) q.withDenials = true;
    try {
      if (flags.since) q.since = parseTimeArg(flags.since as string);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    const client = cli.queryClientFromFlags(flags);
    const address = cli.collectorAddress(flags);
    try {
      const [list, hostRows] = await Promise.all([client.sessions(q), client.hosts()]);
      const shownHosts = hosts.length ? hostRows.filter((h) => hosts.includes(h.host)) : hostRows;
      if (mode === 'json') {
        await cli.out(JSON.stringify({ sessions: list, hosts: shownHosts }, null, 2) + '\n');
        return 0;
      }
      const rows = list.map((s) => [
        cli.fmtTime(s.start).slice(0, 19),
        s.end ? cli.fmtDuration(s.end - s.start) : 'running',
        s.host,
        s.session,
        s.agent || '-',
        String(s.uid),
        s.policy || '-',
        s.mode || '-',
        String(s.events),
        String(s.denials),
        String(s.would_deny),
        String(s.lost),
        s.signal ? `sig ${s.signal}` : s.exit_code !== undefined ? String(s.exit_code) : '-',
        s.root_exec_id || '-',
      ]);
      let text = list.length
        ? cli.table(['STARTED', 'DURATION', 'HOST', 'SESSION', 'AGENT', 'UID', 'POLICY', 'MODE', 'EVENTS', 'DENIED', 'WOULD', 'LOST', 'EXIT', 'ROOT EXEC_ID'], rows) + '\n'
        : '(no sessions)\n';
      const lossy = shownHosts.filter((h) => h.lost > 0 || h.rejected > 0);
      if (lossy.length) {
        text += '\nEvents that did not make it into the store:\n';
        for (const h of lossy) {
          text += `  ${h.host}: ${h.lost} lost before the collector (reported by the agent)${h.rejected ? `, ${h.rejected} refused by the collector (malformed, oversized or wrong host)` : ''}\n`;
        }
        text += "  (bridle events --type loss --host H shows where and when)\n";
      }
      await cli.out(text);
      return 0;
    } catch (err) {
      throw cli.describeError(err, address);
    } finally {
      client.close();
    }
  },
};
export default sessions;
