// The stdio proxy: bridle sits where the agent's MCP config names the server's command. It spawns the
// server with pipes, reads newline-delimited JSON-RPC from the client (our stdin) and the server (its
// stdout), and passes each message through the session. The server's stderr is inherited. Our stdout is
// the MCP channel: nothing else is ever written to it.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { LineSplitter } from './jsonrpc.js';
import { Governor, McpSession, type GovernorOptions } from './session.js';

export interface StdioProxyOptions extends GovernorOptions {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Client side; default process.stdin / process.stdout. */
  input?: Readable;
  output?: Writable;
  /** Called once the server process is running (tests use it to learn its pid). */
  onSpawn?: (child: ChildProcess) => void;
  /** Grace period after the client hangs up before the server is sent SIGTERM (ms). */
  shutdownGraceMs?: number;
}

export interface StdioProxy {
  /** Resolves with the server's exit status (128 + signal number when killed by a signal). */
  done: Promise<number>;
  /** Forwards a signal to the server. */
  kill(signal?: NodeJS.Signals): void;
  child: ChildProcess;
}

const SERVER_LINE_LIMIT_MIN = 64 * 1024 * 1024;

export function startStdioProxy(opts: StdioProxyOptions): StdioProxy {
  const gov = new Governor(opts);
  const log = gov.log;
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;
  const child = spawn(opts.command, opts.args, {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: opts.env ?? process.env,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  let childGone = false;
  let outputOpen = true;

  const toServer = (json: string): void => {
    if (childGone || !child.stdin?.writable) throw new Error('the server process is not running');
    child.stdin.write(json + '\n');
  };
  const toClient = (json: string): void => {
    if (outputOpen) output.write(json + '\n');
  };
  output.on?.('error', (err: NodeJS.ErrnoException) => {
    outputOpen = false;
    log.warn({ err: err.code ?? err.message }, 'client output closed');
  });
  child.stdin?.on('error', (err: NodeJS.ErrnoException) => log.debug({ err: err.code ?? err.message }, 'server stdin closed'));

  const session = new McpSession(gov, toServer);

  // Client → server, one message at a time and in order (a call may wait for the proxy's own tools/list).
  let queue: Promise<void> = Promise.resolve();
  const enqueue = (work: () => Promise<void> | void): void => {
    queue = queue.then(work).catch((err: Error) => log.error({ err: err.stack }, 'internal error in the client queue'));
  };
  const clientLines = new LineSplitter(
    gov.maxMessageBytes,
    (line) =>
      enqueue(async () => {
        const out = await session.fromClient(line);
        for (const r of out.replies) toClient(r);
        if (out.forward !== undefined) {
          try {
            toServer(out.forward);
          } catch (err) {
            log.warn({ err: (err as Error).message }, 'message for an exited server dropped');
          }
        }
      }),
    (bytes) =>
      enqueue(() => {
        for (const r of session.oversized(bytes).replies) toClient(r);
      }),
  );
  const onInput = (chunk: Buffer | string): void => clientLines.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  input.on('data', onInput);

  // Server → client.
  const serverLines = new LineSplitter(
    Math.max(SERVER_LINE_LIMIT_MIN, gov.maxMessageBytes * 4),
    (line) => {
      const out = session.fromServer(line);
      if (out !== null) toClient(out);
    },
    (bytes) => log.error({ bytes }, 'the server sent an oversized message; dropped'),
  );
  child.stdout!.on('data', (chunk: Buffer) => serverLines.push(chunk));

  let graceTimer: NodeJS.Timeout | undefined;
  const onInputEnd = (): void => {
    clientLines.end();
    enqueue(() => {
      child.stdin?.end();
      const grace = opts.shutdownGraceMs ?? 3000;
      graceTimer = setTimeout(() => {
        log.info({ pid: child.pid }, 'server still running after the client hung up; sending SIGTERM');
        child.kill('SIGTERM');
        graceTimer = setTimeout(() => child.kill('SIGKILL'), 2000);
        graceTimer.unref();
      }, grace);
      graceTimer.unref();
    });
  };
  input.on('end', onInputEnd);
  input.on('error', onInputEnd);

  const done = new Promise<number>((resolve) => {
    let settled = false;
    const finish = (code: number): void => {
      if (settled) return;
      settled = true;
      childGone = true;
      if (graceTimer) clearTimeout(graceTimer);
      input.off('data', onInput);
      input.off('end', onInputEnd);
      session.close('the server process exited');
      resolve(code);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      log.error({ command: opts.command, err: err.code ?? err.message }, `cannot start the MCP server '${opts.command}'`);
      finish(err.code === 'ENOENT' ? 127 : 126);
    });
    child.on('spawn', () => opts.onSpawn?.(child));
    // 'close' waits for stdout to end, so every server message is through before we finish.
    child.on('close', (code, signal) => {
      serverLines.end();
      const status = code ?? (signal ? 128 + (signalNumber(signal) ?? 0) : 1);
      log.debug({ code, signal }, 'MCP server exited');
      finish(status);
    });
  });

  return {
    done,
    child,
    kill: (signal = 'SIGTERM') => {
      if (!childGone) child.kill(signal);
    },
  };
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  return (constants.signals as Record<string, number>)[sig];
}
