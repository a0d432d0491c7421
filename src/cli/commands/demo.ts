import { join } from 'node:path';
import type { Command } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle demo [--events FILE]

Runs the demo: examples/demo-agent.sh, a scripted stand-in for an AI coding agent, as a session under
examples/demo-policy.yaml. Each exec is shown live with its verdict; denied programs are killed in the
kernel; at the end the session is printed as a tree (who ran what, which was killed and by which rule).
When the collector is available, the demo starts one in-process and ships the session's events to it.

Flags:
  --events FILE   also append every event as NDJSON to FILE
`;

const demo: Command = {
  summary: 'run the demo agent session under the example policy',
  help,
  async run(argv) {
    const { flags } = parseFlags(argv, { events: 'string' });
    const { ROOT } = await import('../../kernel/sensor.js');
    const { runCommand } = await import('../../agent/run.js');
    return runCommand({
      policyFile: join(ROOT, 'examples', 'demo-policy.yaml'),
      argv: [join(ROOT, 'examples', 'demo-agent.sh')],
      ...(flags.events ? { events: flags.events as string } : {}),
      summary: true,
      live: true,
    });
  },
};
export default demo;
