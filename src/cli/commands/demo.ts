import type { Command } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle demo [--events FILE]

Runs the demo: examples/demo-agent.sh, a scripted stand-in for an AI coding agent, as a session under
examples/demo-policy.yaml. Each exec is shown live with its verdict; denied programs are killed in the
kernel; at the end the session is printed as a tree (who ran what, which was killed and by which rule).
The demo also starts a collector in-process (mutual TLS on 127.0.0.1, SQLite in a temporary directory),
ships every event of the session to it, and then answers from the collector's store what an incident
responder would ask: which sessions ran, and the lineage of a denied program.

Flags:
  --events FILE   also append every event as NDJSON to FILE
  --keep          keep the temporary directory (certificates, SQLite store) and print where it is
`;

const demo: Command = {
  summary: 'run the demo agent session under the example policy',
  help,
  async run(argv) {
    const { flags } = parseFlags(argv, { events: 'string', keep: 'boolean' });
    const { ROOT } = await import('../../kernel/sensor.js');
    const { runDemo } = await import('../../agent/demo.js');
    return runDemo(ROOT, { ...(flags.events ? { events: flags.events as string } : {}), keep: !!flags.keep });
  },
};
export default demo;
