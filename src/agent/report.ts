// The report channel: processes inside a session (the MCP proxy) hand their tool_call events to the
// agent, which stamps who sent them from the kernel — the peer's pid (SO_PEERCRED), its session tag and
// its image key — so an event can never claim another process, session or host. It accepts reports
// only; the control socket stays closed to sessions.
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { peerCred } from '../kernel/binding.js';
import type { BridleEvent, EventSink } from '../events/types.js';

export const DEFAULT_REPORT_SOCKET = process.env.BRIDLE_REPORT_SOCKET ?? '/run/bridle/report.sock';
const MAX_LINE = 1 << 20;
/** Event types a session process may report; anything else is dropped (the kernel reports the rest). */
const REPORTABLE = new Set(['tool_call']);

export interface Stamp {
  host: string;
  session: string;
  exec_id: string;
  parent_exec_id: string;
  pid: number;
  ppid: number;
  uid: number;
}

/** Serves the report socket (mode 0666: any local process may report; identity comes from the kernel). */
export function serveReports(path: string, stampOf: (pid: number, uid: number) => Stamp, emit: (ev: BridleEvent) => void): Promise<{ close(): Promise<void> }> {
  mkdirSync(dirname(path), { recursive: true });
  if (existsSync(path)) unlinkSync(path);
  const open = new Set<Socket>();
  const server: Server = createServer((sock) => {
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    let stamp: Stamp;
    try {
      const cred = peerCred((sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1);
      stamp = stampOf(cred.pid, cred.uid);
    } catch {
      sock.destroy();
      return;
    }
    let buf = '';
    sock.on('data', (d) => {
      buf += d;
      if (buf.length > MAX_LINE) {
        sock.destroy();
        return;
      }
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let ev: Record<string, unknown>;
        try {
          ev = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (typeof ev !== 'object' || ev === null || !REPORTABLE.has(String(ev.type))) continue;
        // whatever the sender wrote, who it is comes from the kernel
        emit({ ...(ev as unknown as BridleEvent), ...stamp, ts: typeof ev.ts === 'string' ? ev.ts : new Date().toISOString() });
      }
    });
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      chmodSync(path, 0o666);
      res({
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const s of open) s.destroy();
          }),
      });
    });
  });
}

/** An EventSink that forwards to the agent's report socket; also writes to `local` (the proxy's own log). */
export class ReportSink implements EventSink {
  private sock: Socket | undefined;
  constructor(
    private local: EventSink,
    path = DEFAULT_REPORT_SOCKET,
  ) {
    if (!existsSync(path)) return;
    const s = createConnection(path);
    s.on('error', () => {
      this.sock = undefined;
    });
    s.unref();
    this.sock = s;
  }
  get connected(): boolean {
    return this.sock !== undefined;
  }
  emit(ev: BridleEvent): void {
    this.local.emit(ev);
    this.sock?.write(JSON.stringify(ev) + '\n');
  }
  async close(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    if (s) await new Promise<void>((r) => s.end(r));
    await this.local.close?.();
  }
}
