import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle run --policy FILE [--events FILE] [--monitor] [--quiet] -- CMD [ARGS...]

Runs CMD as a new agent session: CMD and everything it starts carry the session's tag in the kernel,
and every exec is decided there by the policy. A denied program is killed before its first instruction
(monitor mode only reports it). The exit status is CMD's (128+N when a signal N ended it).

Only the environment variables that the policy's credentials.env.allow names reach the session.

When \`bridle agent\` is running, the session is started through it (its policy store and collector);
otherwise bridle loads the sensor itself for the length of the session.

Flags:
  --policy FILE   the policy (YAML, version: 1); errors are reported as FILE:LINE:COL and nothing runs
  --events FILE   append every event as NDJSON to FILE (default: events go to the log on stderr)
  --monitor       decide as the policy says but block nothing (verdict would_deny)
  --quiet         no live lines and no summary tree
  --summary       print the summary tree even when stderr is not a terminal

Example:
  bridle run --policy examples/ci-default.yaml --events /tmp/session.ndjson -- claude
`;

const run: Command = {
  summary: 'run a command as a governed agent session',
  help,
  async run(argv) {
    const { flags, rest } = parseFlags(argv, { policy: 'string', events: 'string', monitor: 'boolean', quiet: 'boolean', summary: 'boolean' });
    if (!flags.policy) throw new UsageError('--policy FILE is required');
    if (rest.length === 0) throw new UsageError('no command given: bridle run --policy FILE -- CMD [ARGS...]');
    const { runCommand } = await import('../../agent/run.js');
    return runCommand({
      policyFile: flags.policy as string,
      argv: rest,
      ...(flags.events ? { events: flags.events as string } : {}),
      monitor: !!flags.monitor,
      quiet: !!flags.quiet,
      summary: !!flags.summary,
    });
  },
};
export default run;
