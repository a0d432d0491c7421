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

/**
 * How many reports one sender (a session, or an untagged process) may make: a sustained rate and a burst.
 * A tool call is one report; a sender past this is flooding the spool every session's events share.
 */
export const REPORT_RATE = { perSecond: 1000, burst: 10_000 };

/** Token buckets per sender; what a bucket refuses is counted and said once a second. */
class Limiter {
  private readonly buckets = new Map<string, { tokens: number; at: number; dropped: number; stamp: Stamp }>();
  constructor(private readonly rate: typeof REPORT_RATE) {}
  take(key: string, stamp: Stamp, now: number): boolean {
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { tokens: this.rate.burst, at: now, dropped: 0, stamp }));
    b.tokens = Math.min(this.rate.burst, b.tokens + ((now - b.at) / 1000) * this.rate.perSecond);
    b.at = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return true;
    }
    b.dropped++;
    return false;
  }
  /** The senders whose reports were dropped since the last call, and how many; full buckets are forgotten. */
  drain(now: number): Array<{ stamp: Stamp; dropped: number }> {
    const out = [];
    for (const [k, b] of this.buckets) {
      if (b.dropped) out.push({ stamp: b.stamp, dropped: b.dropped });
      b.dropped = 0;
      if (b.tokens + ((now - b.at) / 1000) * this.rate.perSecond >= this.rate.burst) this.buckets.delete(k);
    }
    return out;
  }
}

/**
 * Serves the report socket (mode 0666: any local process may report; identity and time come from the
 * agent). A sender over REPORT_RATE has the rest of its reports dropped, and a violation event says how many.
 */
export function serveReports(path: string, stampOf: (pid: number, uid: number) => Stamp, emit: (ev: BridleEvent) => void, rate = REPORT_RATE): Promise<{ close(): Promise<void> }> {
  mkdirSync(dirname(path), { recursive: true });
  if (existsSync(path)) unlinkSync(path);
  const open = new Set<Socket>();
  const limiter = new Limiter(rate);
  const flush = (): void => {
    for (const { stamp, dropped } of limiter.drain(performance.now())) {
      const who = stamp.session ? `session ${stamp.session}` : `untagged process ${stamp.pid}`;
      emit({ type: 'violation', ...stamp, ts: new Date().toISOString(), what: 'report_flood', detail: `${dropped} report(s) from ${who} dropped: over ${rate.perSecond} a second (burst ${rate.burst})` } as BridleEvent);
    }
  };
  let timer: NodeJS.Timeout | undefined; // started once listening: a failed listen leaves none behind
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
        if (!limiter.take(stamp.session || `pid:${stamp.pid}`, stamp, performance.now())) continue;
        // whatever the sender wrote, who it is comes from the kernel, and when from the agent's clock (a
        // report dated in the future would sort ahead of every real event in queries for the newest)
        emit({ ...(ev as unknown as BridleEvent), ...stamp, ts: new Date().toISOString() });
      }
    });
  });
  return new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(path, () => {
      try {
        chmodSync(path, 0o666); // (a path too long for a socket address is listened on cut short)
      } catch (err) {
        server.close();
        rej(err);
        return;
      }
      timer = setInterval(flush, 1000);
      timer.unref();
      res({
        close: () =>
          new Promise<void>((done) => {
            clearInterval(timer);
            flush(); // what was dropped is said before the agent stops
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
