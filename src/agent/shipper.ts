// Ships every event the agent emits to the collector, with no silent loss.
//
//   emit(ev) ─▶ seq, encode ─▶ pending batch ─(2000 events / 1 MiB / 20 ms)─▶ spool (disk) ─▶ Ingest stream
//                                                                     ack(last_seq) ◀──┘ drops the record
//
// emit() never blocks and never throws: it assigns `ev.seq`, encodes the event and appends it to the
// pending batch. Sealed batches go to the on-disk spool first, then onto the gRPC stream (many batches in
// flight); the collector acknowledges each batch, in order, once stored, and only then does the spool
// drop it. A reconnect resends everything un-acknowledged; the collector stores (host, seq) once.
// If the spool is full, the batch is counted lost (stats().lost) and, as soon as there is room again, a
// `loss` event tells the collector how many events were lost and where.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { num, WireWriter, writeEvent } from '../events/proto.js';
import type { BridleEvent, EventSink, LossEvent } from '../events/types.js';
import { batchRequestPrefix, CollectorClient, encodeHelloRequest, LIMITS, BATCH_EVENTS_FIELD, type WireAck, type WireIngestResponse } from '../collector/wire.js';
import { channelCredentials, type TlsFiles } from '../collector/tls.js';
import { Spool } from './spool.js';
import { MAX_SEQ } from '../collector/ingest.js';

export interface ShipperOptions {
  /** host:port of the collector. */
  collector: string;
  /** Directory of the on-disk spool (created if missing). */
  spoolDir: string;
  /** This host's identity: must match its certificate's CN/SAN. Events with an empty `host` get it. */
  host: string;
  /** Mutual TLS: PEM paths of the CA and this host's certificate and key. */
  tls?: TlsFiles;
  /** Plain text (no TLS). Only with an explicit --insecure. */
  insecure?: boolean;
  /** Bound on the spool's size on disk (default 1 GiB). */
  maxSpoolBytes?: number;
  log?: pino.Logger;
  /** Name to check in the collector's certificate when it differs from the host in `collector`. */
  serverName?: string;
  /** Batch limits: events, bytes, and how long the first event may wait (ms). */
  batchEvents?: number;
  batchBytes?: number;
  lingerMs?: number;
  /** Bytes of batches sent and not yet acknowledged (default 8 MiB). */
  windowBytes?: number;
  agentVersion?: string;
}

export interface ShipperStats {
  /** Events written to the stream (a resend after a reconnect counts again). */
  sent: number;
  /** Events the collector acknowledged (stored now or earlier). */
  acked: number;
  /** Events emitted and not yet acknowledged: pending in memory or in the spool on disk. */
  spooled: number;
  /** Events lost: spool full, oversized, refused by the collector, or corrupt on disk. */
  lost: number;
  /** Of `lost`: events the collector refused (malformed, oversized, other host). */
  rejected: number;
  connected: boolean;
  spoolBytes: number;
}

export interface Shipper extends EventSink {
  emit(ev: BridleEvent): void;
  /** Resolves once every event emitted so far is acknowledged, or when timeoutMs passes (the rest stays spooled). */
  flush(timeoutMs?: number): Promise<void>;
  stats(): ShipperStats;
  /** Writes pending events to the spool, waits briefly for acknowledgements, disconnects. */
  close(): Promise<void>;
}

const SEQ_BLOCK = 1_000_000;

/** Room kept in front of a batch for the IngestRequest{batch} prefix (two tags, a length, two seqs: < 32 bytes). */
const HEADROOM = 32;

/** A writer for a new batch, of `size` bytes, with the headroom reserved. */
function batchWriter(size: number): WireWriter {
  const w = new WireWriter(size);
  w.pos = HEADROOM;
  return w;
}

class SpoolShipper implements Shipper {
  private spool: Spool;
  private log: pino.Logger;
  /** The pending batch: events encoded back to back as `EventBatch.events` fields, after HEADROOM bytes. */
  private batch = batchWriter(256 * 1024);
  private pendingCount = 0;
  private pendingFirst = 0;
  private seq: number;
  private timer: NodeJS.Timeout | undefined;
  private saveTimer: NodeJS.Timeout;
  private client: grpc.Client;
  private call: grpc.ClientDuplexStream<Buffer, WireIngestResponse> | undefined;
  private streaming = false;
  private inflight: Array<{ lastSeq: number; count: number; bytes: number; at: number }> = [];
  private inflightBytes = 0;
  private blocked = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private backoff = 200;
  private closed = false;
  private counts = { sent: 0, acked: 0, lost: 0, rejected: 0 };
  private waiters: Array<() => void> = [];
  private lastWarn = new Map<string, number>();
  private maxEventBytes = LIMITS.maxEventBytes;
  private readonly batchEvents: number;
  private readonly batchBytes: number;
  private readonly lingerMs: number;
  private readonly windowBytes: number;

  constructor(private opts: ShipperOptions, spool: Spool, log: pino.Logger) {
    this.spool = spool;
    this.log = log;
    this.batchEvents = opts.batchEvents ?? 2000;
    this.batchBytes = Math.min(opts.batchBytes ?? 1024 * 1024, LIMITS.maxBatchBytes - 64 * 1024);
    this.lingerMs = opts.lingerMs ?? 20;
    this.windowBytes = opts.windowBytes ?? 8 * 1024 * 1024;
    this.seq = spool.highestSeq;
    spool.reserve(this.seq + SEQ_BLOCK);
    const creds = channelCredentials(opts.tls, opts.insecure);
    const channelOpts: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
      'grpc.max_send_message_length': LIMITS.maxMessageBytes,
      'grpc.max_receive_message_length': LIMITS.maxMessageBytes,
    };
    if (opts.serverName) channelOpts['grpc.ssl_target_name_override'] = opts.serverName;
    this.client = new CollectorClient(opts.collector, creds, channelOpts);
    this.saveTimer = setInterval(() => this.housekeeping(), 250);
    this.saveTimer.unref();
    if (!opts.tls) this.log.warn({ collector: opts.collector }, 'INSECURE: shipping events without TLS');
    this.connect();
  }

  // ---- producer side ----

  emit(ev: BridleEvent): void {
    try {
      if (this.closed) {
        this.loss('closed', 1);
        return;
      }
      if (!ev.host) ev.host = this.opts.host;
      ev.seq = this.nextSeq();
      if (!this.append(ev)) {
        const slim = shrink(ev);
        if (!slim || !this.append(slim)) {
          this.loss('oversize', 1);
          return;
        }
      }
      if (this.pendingCount >= this.batchEvents || this.batch.pos - HEADROOM >= this.batchBytes) this.seal();
      else if (!this.timer) this.timer = setTimeout(() => this.seal(), this.lingerMs);
    } catch (err) {
      this.loss('encode', 1);
      this.warn('emit', { err: (err as Error).message }, 'could not ship an event');
    }
  }

  /** Encodes `ev` onto the pending batch; false (and nothing added) if it is over the event size limit. */
  private append(ev: BridleEvent): boolean {
    const w = this.batch;
    const start = w.pos;
    try {
      const mark = w.begin(BATCH_EVENTS_FIELD);
      writeEvent(w, ev);
      if (w.pos - mark - 1 > this.maxEventBytes) {
        w.pos = start;
        return false;
      }
      w.end(mark);
    } catch (err) {
      w.pos = start;
      throw err;
    }
    if (this.pendingCount === 0) this.pendingFirst = ev.seq!;
    this.pendingCount++;
    return true;
  }

  private nextSeq(): number {
    const s = ++this.seq;
    if (s >= this.spool.state.reservedSeq) this.spool.reserve(s + SEQ_BLOCK);
    return s;
  }

  /** Counts a loss (reported to the collector later as a `loss` event). */
  private loss(where: string, n: number): void {
    this.counts.lost += n;
    this.spool.addLoss(where, n);
    this.warn(`loss:${where}`, { where, n, lost: this.counts.lost }, 'events lost');
  }

  private warn(key: string, obj: object, msg: string): void {
    const now = Date.now();
    if (now - (this.lastWarn.get(key) ?? 0) < 5000) return;
    this.lastWarn.set(key, now);
    this.log.warn(obj, msg);
  }

  /** Moves the pending batch to the spool (appending a `loss` report when losses are waiting). */
  private seal(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const report = this.lossReport();
    for (const r of report) this.append(r.ev);
    if (this.pendingCount === 0) return;
    const count = this.pendingCount;
    const first = this.pendingFirst;
    const last = this.seq;
    // The request prefix goes into the headroom: the payload is the writer's bytes, not a copy.
    const w = this.batch;
    const bodyLength = w.pos - HEADROOM;
    const prefix = batchRequestPrefix(first, last, bodyLength);
    const start = HEADROOM - prefix.length;
    prefix.copy(w.buf, start);
    let payload = w.buf.subarray(start, w.pos);
    this.pendingCount = 0;
    // A payload the spool keeps in memory (to send) takes the buffer along when it fills most of it; the
    // next batch gets a new one, sized after this one. A small one is copied instead: the spool counts
    // payload bytes against its memory bound, and a few hundred bytes must not hold a 64 KiB buffer. A
    // payload the spool does not keep is only written to disk, now, and the buffer is reused.
    const kept = this.spool.keeps(payload.length);
    if (kept && payload.length >= w.buf.length >> 1) {
      this.batch = batchWriter(Math.min(LIMITS.maxBatchBytes, Math.max(64 * 1024, HEADROOM + bodyLength + (bodyLength >> 2))));
    } else {
      if (kept) payload = Buffer.from(payload);
      w.pos = HEADROOM;
    }
    const real = count - report.length;
    let spooled = false;
    try {
      spooled = this.spool.append(first, last, count, payload);
    } catch (err) {
      // The disk refused the write (ENOSPC, EIO): these events cannot be kept.
      this.warn('spool-write', { err: (err as Error).message }, 'cannot write to the spool');
      if (real > 0) this.loss('spool-write', real);
      this.pump();
      return;
    }
    if (spooled) {
      for (const r of report) this.spool.lossReported(r.ev.where, r.ev.count);
    } else if (real > 0) {
      this.loss('spool', real);
    }
    this.pump();
  }

  /** `loss` events for unreported losses, when the spool has room for them. */
  private lossReport(): Array<{ ev: LossEvent & { seq: number } }> {
    const pending = this.spool.state.lossPending;
    const wheres = Object.keys(pending);
    if (wheres.length === 0 || !this.spool.fits(this.batch.pos - HEADROOM + 4096)) return [];
    const ts = new Date().toISOString();
    return wheres.map((where) => ({
      ev: {
        type: 'loss', ts, host: this.opts.host, session: '', exec_id: '', parent_exec_id: '', pid: process.pid, ppid: process.ppid,
        uid: process.getuid?.() ?? 0, where, count: pending[where]!, seq: this.nextSeq(),
      },
    }));
  }

  // ---- network side ----

  private connect(): void {
    if (this.closed) return;
    this.reconnectTimer = undefined;
    const call = (this.client as unknown as { Ingest(): grpc.ClientDuplexStream<Buffer, WireIngestResponse> }).Ingest();
    this.call = call;
    this.streaming = false;
    this.inflight = [];
    this.inflightBytes = 0;
    this.blocked = false;
    this.spool.rewind();
    call.on('data', (res: WireIngestResponse) => {
      if (call === this.call) this.onResponse(res);
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (call === this.call) this.onDown(err);
    });
    call.on('end', () => {
      if (call === this.call) this.onDown(Object.assign(new Error('collector ended the stream'), { code: grpc.status.UNAVAILABLE }) as grpc.ServiceError);
    });
    call.on('drain', () => {
      if (call === this.call && this.blocked) {
        this.blocked = false;
        this.pump();
      }
    });
    call.write(encodeHelloRequest({ host: this.opts.host, agent_version: this.opts.agentVersion ?? '', spool_id: this.spool.state.id }));
  }

  private onResponse(res: WireIngestResponse): void {
    if (res.welcome) {
      const w = res.welcome;
      if (w.host !== this.opts.host) {
        this.log.error({ host: this.opts.host, collector_says: w.host }, 'collector assigned another host name');
      }
      const last = num(w.last_seq);
      if (last > MAX_SEQ) {
        // not a count this agent could have reached: following it would stop the numbering (2^53)
        this.log.error({ ours: this.seq, collector: last }, 'the collector says this host sent more events than can be counted; keeping our own numbering');
      } else if (last > this.seq) {
        // Our counter is behind what the collector has for this host (the spool was lost): move past it.
        this.log.warn({ ours: this.seq, collector: last }, 'sequence counter behind the collector; moving past it');
        this.seq = last;
        this.spool.reserve(last + SEQ_BLOCK);
      }
      if (w.max_event_bytes) this.maxEventBytes = Math.min(LIMITS.maxEventBytes, w.max_event_bytes);
      this.streaming = true;
      this.backoff = 200;
      this.log.info({ collector: this.opts.collector, unacked: this.spool.unackedEvents }, 'connected to collector');
      this.pump();
      return;
    }
    if (res.ack) this.onAck(res.ack);
  }

  private onAck(ack: WireAck): void {
    const head = this.inflight.shift();
    if (!head) {
      this.log.error('collector acknowledged a batch that was not sent; reconnecting');
      this.call?.cancel();
      return;
    }
    const lastSeq = num(ack.last_seq);
    if (lastSeq && lastSeq !== head.lastSeq) {
      this.log.error({ expected: head.lastSeq, got: lastSeq }, 'acknowledgement out of order; reconnecting');
      this.call?.cancel();
      return;
    }
    this.inflightBytes -= head.bytes;
    const rejected = ack.rejected ?? 0;
    if (rejected) {
      this.counts.rejected += rejected;
      this.counts.lost += rejected;
      this.warn('rejected', { rejected, error: ack.error }, 'collector refused events');
    }
    this.counts.acked += this.spool.ack(head.lastSeq) - rejected;
    this.pump();
    this.wake();
  }

  private onDown(err: grpc.ServiceError): void {
    this.call = undefined;
    this.streaming = false;
    this.inflight = [];
    this.inflightBytes = 0;
    if (this.closed) return;
    const fatal = err.code === grpc.status.PERMISSION_DENIED || err.code === grpc.status.UNAUTHENTICATED || err.code === grpc.status.INVALID_ARGUMENT;
    const delay = fatal ? 30_000 : this.backoff;
    this.backoff = Math.min(this.backoff * 2, 5000);
    const log = fatal ? this.log.error.bind(this.log) : (obj: object, msg: string) => this.warn('down', obj, msg);
    log({ collector: this.opts.collector, code: err.code, error: err.details || err.message, retry_ms: delay, unacked: this.spool.unackedEvents }, 'collector stream down; events stay spooled');
    this.reconnectTimer = setTimeout(() => this.connect(), delay * (0.8 + Math.random() * 0.4));
  }

  /** Sends spooled records while the window has room. */
  private pump(): void {
    const call = this.call;
    if (!call || !this.streaming || this.blocked) return;
    while (this.inflightBytes < this.windowBytes) {
      const e = this.spool.next();
      if (!e) break;
      this.inflight.push({ lastSeq: e.lastSeq, count: e.count, bytes: e.len, at: Date.now() });
      this.inflightBytes += e.len;
      this.counts.sent += e.count;
      if (!call.write(e.payload)) {
        this.blocked = true;
        break;
      }
    }
  }

  private housekeeping(): void {
    try {
      this.spool.saveIfDirty();
    } catch (err) {
      this.warn('meta', { err: (err as Error).message }, 'cannot save spool state');
    }
    // A stream that stopped acknowledging (collector hung, network black hole) is replaced.
    const head = this.inflight[0];
    if (head && Date.now() - head.at > 30_000 && this.call) {
      this.log.warn('no acknowledgement for 30 s; reconnecting');
      this.call.cancel();
    }
    if (Object.keys(this.spool.state.lossPending).length && this.pendingCount === 0) this.seal();
  }

  private wake(): void {
    if (this.pendingCount || this.spool.unackedRecords) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // ---- public ----

  flush(timeoutMs = 10_000): Promise<void> {
    this.seal();
    if (this.pendingCount === 0 && this.spool.unackedRecords === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
      timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, timeoutMs);
    });
  }

  stats(): ShipperStats {
    return {
      sent: this.counts.sent,
      acked: this.counts.acked,
      spooled: this.pendingCount + this.spool.unackedEvents,
      lost: this.counts.lost,
      rejected: this.counts.rejected,
      connected: this.streaming,
      spoolBytes: this.spool.bytes,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.seal();
    if (this.streaming && this.spool.unackedRecords) await this.flush(1000);
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    clearInterval(this.saveTimer);
    const call = this.call;
    this.call = undefined;
    call?.end();
    call?.cancel();
    this.client.close();
    this.spool.close();
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** A smaller copy of an oversized event (long argv, big tool arguments), or undefined if nothing to cut. */
function shrink(ev: BridleEvent): BridleEvent | undefined {
  const cut = (s: string): string => (s.length > 4096 ? `${s.slice(0, 4096)}…[truncated ${s.length - 4096} chars]` : s);
  switch (ev.type) {
    case 'exec':
    case 'session_start': {
      const argv = ev.argv ?? [];
      const kept = argv.slice(0, 64).map(cut);
      if (argv.length > 64) kept.push(`…[${argv.length - 64} more arguments]`);
      return { ...ev, argv: kept };
    }
    case 'tool_call':
      return { ...ev, arguments: { truncated: true, bytes: JSON.stringify(ev.arguments ?? null).length } };
    case 'violation':
      return { ...ev, detail: cut(ev.detail ?? '') };
    case 'policy':
      return { ...ev, detail: cut(ev.detail ?? '') };
    default:
      return undefined;
  }
}

export async function createShipper(opts: ShipperOptions): Promise<Shipper> {
  if (!opts.host) throw new Error('shipper needs a host name');
  const log = opts.log ?? pino({ level: process.env.BRIDLE_LOG ?? 'warn', name: 'shipper' });
  const spool = Spool.open(opts.spoolDir, opts.maxSpoolBytes !== undefined ? { maxBytes: opts.maxSpoolBytes } : {});
  try {
    return new SpoolShipper(opts, spool, log);
  } catch (err) {
    spool.close();
    throw err;
  }
}
