// Event filters shared by the collector's store, its live fan-out and the query CLI: one meaning of
// "matches" everywhere, so `bridle events --follow` and `bridle events` agree.
import type { BridleEvent, Verdict } from './types.js';

export interface EventFilter {
  hosts?: string[];
  session?: string;
  types?: string[];
  verdicts?: Verdict[];
  exec_id?: string;
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, inclusive. */
  until?: number;
  /** Connect events to this destination address (and port when set). */
  daddr?: string;
  dport?: number;
}

/** Does `ev` (with its time in ms, already parsed) pass `f`? */
export function matchEvent(f: EventFilter, ev: BridleEvent, tsMs: number): boolean {
  if (f.hosts?.length && !f.hosts.includes(ev.host)) return false;
  if (f.session && ev.session !== f.session) return false;
  if (f.types?.length && !f.types.includes(ev.type)) return false;
  if (f.verdicts?.length && !(ev.verdict && f.verdicts.includes(ev.verdict))) return false;
  if (f.exec_id && ev.exec_id !== f.exec_id) return false;
  if (f.since !== undefined && tsMs < f.since) return false;
  if (f.until !== undefined && tsMs > f.until) return false;
  if (f.daddr) {
    if (ev.type !== 'connect' || ev.daddr !== f.daddr) return false;
    if (f.dport && ev.dport !== f.dport) return false;
  }
  return true;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * A point in time from the command line: a duration back from now ("90s", "30m", "24h", "7d", "1h30m")
 * or an ISO-8601 time ("2025-01-31T12:00:00Z"). Returns epoch ms; throws with a readable message.
 */
export function parseTimeArg(s: string, now = Date.now()): number {
  const text = s.trim();
  if (/^(\d+(?:\.\d+)?(ms|s|m|h|d|w))+$/.test(text)) {
    let total = 0;
    for (const m of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) total += Number(m[1]) * UNITS[m[2]!]!;
    return now - total;
  }
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const ms = Date.parse(text);
    if (Number.isFinite(ms)) return ms;
  }
  throw new Error(`'${s}' is not a time: use a duration back from now (30m, 24h, 7d) or an ISO time (2025-01-31T12:00:00Z)`);
}

/** "127.0.0.1:443", "[::1]:443", "10.0.0.1", "::1" → address and optional port. */
export function parseAddrPort(s: string): { daddr: string; dport?: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return v6[2] ? { daddr: v6[1]!, dport: Number(v6[2]) } : { daddr: v6[1]! };
  const colons = s.split(':').length - 1;
  if (colons === 1) {
    const [a, p] = s.split(':') as [string, string];
    if (!/^\d+$/.test(p) || Number(p) > 65535) throw new Error(`'${s}': port must be a number 0-65535`);
    return { daddr: a, dport: Number(p) };
  }
  return { daddr: s };
}
