// Live fan-out: every freshly stored event goes to each subscriber whose filter matches, right after the
// batch's transaction commits (so a subscriber never sees an event the store does not have).
//
// A subscriber that cannot keep up is not silently skipped: once its unsent backlog passes
// `maxBacklogBytes` its stream ends with RESOURCE_EXHAUSTED ("fell behind"), and it can resubscribe with
// a backfill.
import * as grpc from '@grpc/grpc-js';
import { matchEvent, type EventFilter } from '../events/query.js';
import { typeCode, VERDICTS } from '../events/proto.js';
import type { IngestResult } from './store.js';

export interface Subscriber {
  filter: EventFilter;
  call: grpc.ServerWritableStream<unknown, Buffer>;
  /** While backfilling: live events wait here; `minId` drops those the backfill already sent. */
  pending?: Array<{ id: number; raw: Buffer }>;
  minId: number;
  closed: boolean;
  /** The event kinds (ingest.ts eventKind) its filter's types and verdicts allow; unset: any. Set by Hub.add. */
  kinds?: (kind: number) => boolean;
}

export class Hub {
  private subs = new Set<Subscriber>();

  /** Can some subscriber's filter match an event of this kind (type and verdict)? */
  wants(kind: number): boolean {
    for (const sub of this.subs) if (!sub.kinds || sub.kinds(kind)) return true;
    return false;
  }

  constructor(private maxBacklogBytes = 32 * 1024 * 1024) {}

  get size(): number {
    return this.subs.size;
  }

  add(sub: Subscriber): void {
    this.subs.add(sub);
    const { types, verdicts } = sub.filter;
    if (types?.length || verdicts?.length) {
      const t = types?.length ? new Set(types.map(typeCode)) : undefined;
      const v = verdicts?.length ? new Set(verdicts.map((x) => VERDICTS[x])) : undefined;
      sub.kinds = (kind) => (!t || t.has(kind >> 2)) && (!v || v.has(kind & 3));
    }
    const drop = (): void => {
      sub.closed = true;
      this.subs.delete(sub);
    };
    sub.call.on('cancelled', drop);
    sub.call.on('close', drop);
    sub.call.on('error', drop);
    sub.call.on('finish', drop);
  }

  /** Ends backfill mode: sends the live events that arrived meanwhile and are newer than the backfill. */
  goLive(sub: Subscriber, lastBackfillId: number): void {
    sub.minId = lastBackfillId;
    const pending = sub.pending ?? [];
    delete sub.pending;
    for (const p of pending) if (p.id > sub.minId) this.write(sub, p.raw);
  }

  publish(fresh: IngestResult['fresh']): void {
    if (this.subs.size === 0) return;
    for (const sub of this.subs) {
      if (sub.closed) continue;
      for (const item of fresh) {
        if (!matchEvent(sub.filter, item.ev, item.tsMs)) continue;
        const raw = Buffer.isBuffer(item.raw) ? item.raw : Buffer.from(item.raw.buffer, item.raw.byteOffset, item.raw.byteLength);
        if (sub.pending) sub.pending.push({ id: item.id, raw });
        else if (item.id > sub.minId) this.write(sub, raw);
        if (sub.closed) break;
      }
    }
  }

  write(sub: Subscriber, raw: Buffer): void {
    if (sub.closed) return;
    sub.call.write(raw);
    if (sub.call.writableLength > this.maxBacklogBytes) {
      sub.closed = true;
      this.subs.delete(sub);
      // grpc-js turns an 'error' on a server stream into the call's final status.
      sub.call.emit('error', {
        code: grpc.status.RESOURCE_EXHAUSTED,
        details: `subscriber fell behind by more than ${this.maxBacklogBytes} bytes; resubscribe with a backfill`,
      });
    }
  }

  /** Ends every subscriber with UNAVAILABLE (`why`): they may have missed events, and resubscribe. */
  failAll(why: string): void {
    for (const sub of this.subs) {
      sub.closed = true;
      sub.call.emit('error', { code: grpc.status.UNAVAILABLE, details: why });
    }
    this.subs.clear();
  }

  closeAll(): void {
    for (const sub of this.subs) {
      sub.closed = true;
      sub.call.end();
    }
    this.subs.clear();
  }
}
