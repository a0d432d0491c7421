// The agent's local control socket: JSON lines over a unix socket (root only, mode 0600). Requests
// from processes inside a session are refused: the peer's pid (SO_PEERCRED) is looked up in the
// kernel's tag map before anything is read.
import { chmodSync, existsSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { peerCred } from '../kernel/binding.js';

export const DEFAULT_SOCKET = process.env.BRIDLE_SOCKET ?? '/run/bridle/agent.sock';

export type Request =
  | { op: 'status' }
  | { op: 'reload'; policyFile?: string }
  | { op: 'attach'; pid: number; policyFile?: string }
  /** `home`: the HOME the client gives the session (`~/` in credentials.files.deny stands for it too). */
  | { op: 'tag'; pid: number; policyFile: string; monitor?: boolean; follow?: boolean; home?: string };

export type Reply = Record<string, unknown> & { ok: boolean; error?: string };

export interface Handler {
  /** Returns the reply; `stream` may send further lines (events) until it is closed. */
  handle(req: Request, peer: { pid: number; uid: number }, stream: (line: unknown) => boolean, onClose: (f: () => void) => void): Promise<Reply>;
  isTagged(pid: number): boolean;
}

function fdOf(sock: Socket): number {
  return (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
}

/**
 * Is process `pid` running: there, and neither a zombie (Z: exited, not yet reaped, its tag already gone)
 * nor dead (X)? From /proc/<pid>/stat's state, the field after the command name.
 */
export function peerAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X' && state !== 'x';
}

export interface ControlServer {
  server: Server;
  /** Stops listening and ends every open connection (followers included) at once. */
  close(): Promise<void>;
}

export function serveControl(path: string, h: Handler): Promise<ControlServer> {
  const open = new Set<Socket>();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  if (existsSync(path)) {
    // a stale socket from a dead agent; a live one answers and we refuse to start twice
    unlinkSync(path);
  }
  const server = createServer((sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    // before anything is written: a peer that is already gone must not take the agent down with EPIPE
    sock.on('error', () => undefined);
    let peer: { pid: number; uid: number };
    try {
      peer = peerCred(fdOf(sock));
    } catch {
      sock.end(JSON.stringify({ ok: false, error: 'cannot identify the peer' }) + '\n');
      return;
    }
    // A peer that connected and exited before this check would look untagged (its tag went with it), so
    // a request whose sender is gone, or exited and not yet reaped (a zombie), is not served. (The kernel
    // kills a session process that connects here under any name before its connect returns, so one still
    // alive has had no chance to write.)
    const refusal = peer.uid !== 0 ? 'refused: root only' : !peerAlive(peer.pid) ? 'refused: the peer exited before it could be identified' : h.isTagged(peer.pid) ? 'refused: requests from inside an agent session are not accepted' : undefined;
    if (refusal) {
      sock.end(JSON.stringify({ ok: false, error: refusal }) + '\n');
      return;
    }
    let buf = '';
    const closers: (() => void)[] = [];
    sock.on('close', () => closers.forEach((f) => f()));
    sock.on('data', (d) => {
      buf += d;
      if (buf.length > 1 << 20) {
        sock.destroy();
        return;
      }
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let req: Request;
        try {
          req = JSON.parse(line) as Request;
        } catch {
          sock.write(JSON.stringify({ ok: false, error: 'malformed request: not JSON' }) + '\n');
          continue;
        }
        h.handle(req, peer, (l) => !sock.destroyed && sock.write(JSON.stringify(l) + '\n'), (f) => closers.push(f)).then(
          (reply) => void (!sock.destroyed && sock.write(JSON.stringify(reply) + '\n')),
          (err: Error) => void (!sock.destroyed && sock.write(JSON.stringify({ ok: false, error: err.message }) + '\n')),
        );
      }
    });
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      chmodSync(path, 0o600);
      res({
        server,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const s of open) s.destroy();
          }),
      });
    });
  });
}

/** A connection to a running agent, or undefined when none answers at `path`. */
export async function connectControl(path = DEFAULT_SOCKET): Promise<ControlClient | undefined> {
  if (!existsSync(path)) return undefined;
  return new Promise((res) => {
    const sock = createConnection(path);
    sock.once('connect', () => res(new ControlClient(sock)));
    sock.once('error', () => res(undefined));
  });
}

export class ControlClient {
  private buf = '';
  private waiters: ((line: Record<string, unknown>) => void)[] = [];
  private queue: Record<string, unknown>[] = [];
  constructor(private sock: Socket) {
    sock.on('data', (d) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(this.buf.slice(0, i)) as Record<string, unknown>;
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.queue.push(line);
      }
    });
    sock.on('close', () => {
      for (const w of this.waiters.splice(0)) w({ ok: false, error: 'agent closed the connection', closed: true });
    });
  }
  next(): Promise<Record<string, unknown>> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.sock.destroyed) return Promise.resolve({ ok: false, error: 'agent closed the connection', closed: true });
    return new Promise((r) => this.waiters.push(r));
  }
  async request(req: Request): Promise<Reply> {
    this.sock.write(JSON.stringify(req) + '\n');
    return (await this.next()) as Reply;
  }
  close(): void {
    this.sock.end();
  }
}
