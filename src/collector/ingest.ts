// What the collector does with the messages of an Ingest stream once the stream's host is known (after
// Hello): decode each IngestRequest, check it (sizes, one host per stream, well-formed events), store the
// batches in one transaction when the store can, and say what to answer. It runs on the collector's event
// loop for a store given to startCollector, and on the store's own thread for the embedded SQLite store
// (store-thread.ts), which then does the decoding too, off the thread that serves gRPC.
import { decodeForStore, num, typeCode, VERDICTS } from '../events/proto.js';
import type { EventStore, IngestItem, IngestResult } from './store.js';
import { decodeIngestRequest, type LIMITS, type WireAck } from './wire.js';

export type IngestLimits = Pick<typeof LIMITS, 'maxBatchBytes' | 'maxEventBytes'>;

/**
 * The largest sequence number an event may carry. A host's counter counts one per event (a century at a
 * million a second stays far below); a number near 2^53 would stop counting up in the agent (the collector
 * tells a reconnecting agent to continue from the host's last number), so every later event of the host
 * would be taken for a duplicate.
 */
export const MAX_SEQ = 2 ** 50;

/**
 * Why an event cannot be stored for `host` in a batch that ends at `lastSeq` (0: not said), or '' when it
 * can: its sequence number must be a count (1 up to MAX_SEQ, within the batch: duplicates are found by it),
 * and its process ids must be of the host (an exec_id names its host first): another host's would rewrite
 * that host's processes.
 */
export function eventProblem(ev: { host: string; seq?: number; exec_id?: string; parent_exec_id?: string }, host: string, lastSeq: number): string {
  if (ev.host !== host) return `event for host '${ev.host}' on a stream of host '${host}'`;
  const seq = ev.seq ?? 0;
  if (!Number.isSafeInteger(seq) || seq < 1 || seq > MAX_SEQ) return `event sequence number ${seq} is not between 1 and ${MAX_SEQ}`;
  if (lastSeq && seq > lastSeq) return `event sequence number ${seq} is past the batch's last (${lastSeq})`;
  for (const id of [ev.exec_id, ev.parent_exec_id]) {
    if (id && !id.startsWith(`${host}:`)) return `process id '${id.slice(0, 200)}' is not of host '${host}'`;
  }
  return '';
}

/** What became of one message, in the order of the messages. */
export type MessageOutcome =
  | {
      ack: WireAck;
      stored: number;
      duplicates: number;
      /** Events refused (counted by the collector); a message refused whole counts 1 when it held none. */
      rejected: number;
      /** Why, for the collector's log (the first reason of the message). */
      warn?: string;
      /**
       * The freshly stored events, for live fan-out: their positions in the batch's `events` and their
       * store ids. The events themselves (`fresh`) only when the caller asked for them.
       */
      freshAt?: number[];
      freshIds?: number[];
      /** Each fresh event's eventKind(): subscribers' filters pick by it before anything is decoded again. */
      freshKinds?: number[];
      /** Where each fresh event's bytes are in the message (offset, length, …), so that none is looked for again. */
      freshSpans?: number[];
      fresh?: IngestResult['fresh'];
    }
  | { fatal: 'hello_twice' };

interface Batch {
  out: number;
  msg: Uint8Array;
  lastSeq: number;
  items: IngestItem[];
  /** Position of each item in the message's events. */
  at: number[];
  rejected: number;
  firstError: string;
}

/**
 * Stores the batches among `msgs` (sent by `host`) and returns one outcome per message, stopping after a
 * fatal one. `withEvents`: outcomes carry the fresh events themselves (false across threads: the caller
 * still has the messages, and decodes them again only when a subscriber wants them).
 */
export async function ingestMessages(
  store: EventStore,
  host: string,
  msgs: Uint8Array[],
  limits: IngestLimits,
  withEvents: boolean,
): Promise<MessageOutcome[]> {
  const out: MessageOutcome[] = [];
  const batches: Batch[] = [];
  let refused = 0;
  for (const msg of msgs) {
    let req;
    try {
      req = decodeIngestRequest(Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength));
    } catch (err) {
      const error = `malformed message: ${(err as Error).message}`;
      refused++;
      out.push({ ack: { last_seq: 0, rejected: 1, error }, stored: 0, duplicates: 0, rejected: 1, warn: error });
      continue;
    }
    if (req.kind === 'hello') {
      out.push({ fatal: 'hello_twice' });
      break;
    }
    if (req.kind !== 'batch' || !req.batch) {
      out.push({ ack: { last_seq: 0, rejected: 0, error: 'empty ingest message' }, stored: 0, duplicates: 0, rejected: 1 });
      continue;
    }
    const lastSeq = num(req.batch.last_seq);
    const events = req.batch.events ?? [];
    if (msg.byteLength > limits.maxBatchBytes) {
      const error = `batch of ${msg.byteLength} bytes is over the limit of ${limits.maxBatchBytes}`;
      refused += events.length;
      out.push({ ack: { last_seq: lastSeq, rejected: events.length, error }, stored: 0, duplicates: 0, rejected: events.length, warn: error });
      continue;
    }
    const b: Batch = { out: out.length, msg, lastSeq, items: [], at: [], rejected: 0, firstError: '' };
    for (let i = 0; i < events.length; i++) {
      const raw = events[i]!;
      let why = '';
      if (raw.length > limits.maxEventBytes) why = `event of ${raw.length} bytes is over the limit of ${limits.maxEventBytes}`;
      else {
        try {
          const { ev, tsMs } = decodeForStore(raw);
          why = eventProblem(ev, host, lastSeq);
          if (!why) {
            b.items.push({ ev, tsMs, raw });
            b.at.push(i);
          }
        } catch (err) {
          why = `malformed event: ${(err as Error).message}`;
        }
      }
      if (why) {
        b.rejected++;
        if (!b.firstError) b.firstError = why;
      }
    }
    refused += b.rejected;
    batches.push(b);
    out.push(undefined as never); // filled below, once stored
  }
  if (batches.length) {
    const groups = batches.map((b) => b.items);
    const results = store.ingestMany
      ? await store.ingestMany(host, groups)
      : await (async () => {
          const res: IngestResult[] = [];
          for (const g of groups) res.push(await store.ingest(host, g));
          return res;
        })();
    for (let k = 0; k < batches.length; k++) {
      const b = batches[k]!;
      const res = results[k]!;
      const o: MessageOutcome = {
        ack: { last_seq: b.lastSeq, stored: res.stored, duplicates: res.duplicates, rejected: b.rejected, error: b.firstError },
        stored: res.stored,
        duplicates: res.duplicates,
        rejected: b.rejected,
        ...(b.firstError ? { warn: b.firstError } : {}),
      };
      if (withEvents) o.fresh = res.fresh;
      else {
        // The fresh events are the batch's items in order, less the duplicates (SqliteStore hands back
        // the items' own event objects).
        o.freshAt = [];
        o.freshIds = [];
        o.freshKinds = [];
        o.freshSpans = [];
        let j = 0;
        for (const f of res.fresh) {
          while (j < b.items.length && b.items[j]!.ev !== f.ev) j++;
          if (j === b.items.length) throw new Error('the store returned events it was not given');
          const raw = b.items[j]!.raw; // a view into the message
          o.freshAt.push(b.at[j]!);
          o.freshIds.push(f.id);
          o.freshKinds.push(eventKind(f.ev.type, f.ev.verdict));
          o.freshSpans.push(raw.byteOffset - b.msg.byteOffset, raw.byteLength);
        }
      }
      out[b.out] = o;
    }
  }
  // The batches are stored: a failure to count the refused events must not fail their acknowledgements.
  if (refused) {
    try {
      await store.addRejected(host, refused);
    } catch (err) {
      const first = out.find((o): o is Extract<MessageOutcome, { ack: WireAck }> => 'ack' in o);
      if (first) first.warn = `${first.warn ?? ''} (and the count of ${refused} refused events was not saved: ${(err as Error).message})`.trim();
    }
  }
  return out;
}

/** An event's type and verdict as one number (type's field number × 4 + verdict), for cheap filtering. */
export function eventKind(type: string, verdict: string | undefined): number {
  return typeCode(type) * 4 + (verdict ? VERDICTS[verdict as keyof typeof VERDICTS] ?? 0 : 0);
}

/**
 * The fresh events of a batch outcome, decoded again from the message for subscribers; with `wanted`,
 * only those of a kind (eventKind) some subscriber's filter can match.
 */
export function freshEvents(msg: Uint8Array, o: Extract<MessageOutcome, { ack: WireAck }>, wanted?: (kind: number) => boolean): IngestResult['fresh'] {
  if (o.fresh) return o.fresh;
  if (!o.freshAt?.length) return [];
  const pick: number[] = [];
  for (let k = 0; k < o.freshAt.length; k++) if (!wanted || !o.freshKinds || wanted(o.freshKinds[k]!)) pick.push(k);
  if (!pick.length) return [];
  const bytes = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength);
  return pick.map((k) => {
    const raw = bytes.subarray(o.freshSpans![2 * k]!, o.freshSpans![2 * k]! + o.freshSpans![2 * k + 1]!);
    const { ev, tsMs } = decodeForStore(raw);
    return { ev, tsMs, raw, id: o.freshIds![k]! };
  });
}
