import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle attach --pid N [--policy FILE] [--socket PATH]

Makes a running process, and every process it has started, a session: they are tagged in the kernel
top-down (a child forked meanwhile inherits the tag), and from then on every exec they make is decided
by the policy. Needs a running \`bridle agent\` (the tag lives as long as the agent's sensor does).

Flags:
  --pid N        the process to attach
  --policy FILE  the session's policy (default: the agent's policy)
  --socket PATH  the agent's control socket (default /run/bridle/agent.sock)

Example:
  bridle attach --pid $(pgrep -o -f claude)
`;

const attach: Command = {
  summary: 'make a running process tree a session (through the agent)',
  help,
  async run(argv) {
    const { flags } = parseFlags(argv, { pid: 'string', policy: 'string', socket: 'string' });
    const pid = Number(flags.pid);
    if (!flags.pid || !Number.isInteger(pid) || pid <= 0) throw new UsageError('--pid N (a process id) is required');
    const { connectControl, DEFAULT_SOCKET } = await import('../../agent/control.js');
    const c = await connectControl((flags.socket as string | undefined) ?? DEFAULT_SOCKET);
    if (!c) throw new Error('no bridle agent is running: start one with `bridle agent --policy FILE`');
    const { resolve } = await import('node:path');
    const r = await c.request({ op: 'attach', pid, ...(flags.policy ? { policyFile: resolve(flags.policy as string) } : {}) });
    c.close();
    if (!r.ok) throw new Error(String(r.error));
    process.stdout.write(`session ${r.session}: tagged ${(r.pids as number[]).length} processes (${(r.pids as number[]).join(' ')})\n`);
    return 0;
  },
};
export default attach;
