// Starting a command as a session: the child waits on fd 3 until it is tagged, then execs the command,
// so the command's own exec is already decided by the session's policy and nothing runs untagged.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { Writable } from 'node:stream';

export interface HeldChild {
  child: ChildProcess;
  pid: number;
  /** Lets the child exec the command. */
  release(): void;
  /** Resolves with the shell-style status: the exit code, or 128 + signal number. */
  exited: Promise<{ status: number; code: number | null; signal: NodeJS.Signals | null }>;
}

const SHIM = 'read -r _ <&3 || exit 125; exec 3<&-; exec "$@"';

export function spawnHeld(argv: string[], env: Record<string, string>, stdio: 'inherit' | 'pipe' = 'inherit'): HeldChild {
  const child = spawn('/bin/sh', ['-c', SHIM, 'bridle-session', ...argv], {
    stdio: [stdio, stdio, stdio, 'pipe'],
    env,
  });
  if (child.pid === undefined) throw new Error(`cannot start /bin/sh for ${argv[0]}`);
  const gate = child.stdio[3] as Writable;
  const exited = new Promise<{ status: number; code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.on('exit', (code, signal) => {
      const sig = signal ? (constants.signals[signal] ?? 0) : 0;
      res({ status: code ?? 128 + sig, code, signal });
    });
  });
  return {
    child,
    pid: child.pid,
    release: () => {
      gate.end('go\n');
    },
    exited,
  };
}
