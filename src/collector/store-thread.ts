// The embedded SQLite store on a thread of its own. The collector's event loop serves gRPC (TLS, HTTP/2,
// acknowledgements, subscribers); the store thread decodes and checks each batch and writes it, so the
// two run on separate cores. Measured on this 2-core machine by bench/collector.bench.ts: on one thread
// decoding and storing took about 8 µs of the 10 an event cost the collector.
//
// Calls are answered in the order they were made. Batches cross as one copied buffer each call; what
// comes back is the acknowledgements and the store ids of the fresh events, not the events (the collector
// still holds the messages, and decodes them again only for live subscribers).
import { Worker } from 'node:worker_threads';
import type { IngestLimits, MessageOutcome } from './ingest.js';
import type { SqliteStoreOptions } from './sqlite.js';
import type { EventStore, IngestItem, IngestResult } from './store.js';
import { encodeBatchRequest, LIMITS } from './wire.js';

type Queries = 'addRejected' | 'lastSeq' | 'queryEvents' | 'lineage' | 'sessions' | 'hosts' | 'findProcesses' | 'close';

export type StoreCall =
  | { id: number; op: 'ingest'; host: string; data: ArrayBuffer; ends: number[]; limits: IngestLimits }
  | { id: number; op: Queries; args: unknown[] };

export type StoreReply = { id: number; value: unknown; error?: undefined } | { id: number; error: { message: string; code?: number } };

/** The store a call goes to: ingestMessages there, or the EventStore methods. */
export interface MessageStore {
  ingestMessages(host: string, msgs: Uint8Array[], limits: IngestLimits): Promise<MessageOutcome[]>;
}

/** The worker's entry: the compiled module, or from the sources (tests, bin/bridle before a build) the
 * TypeScript one, through tsx's loader registered in the thread first (Node 20 does not carry a parent's
 * loader hooks into workers). */
function workerEntry(): { entry: string | URL; eval: boolean } {
  const url = new URL(import.meta.url.endsWith('.ts') ? './store-worker.ts' : './store-worker.js', import.meta.url);
  if (!import.meta.url.endsWith('.ts')) return { entry: url, eval: false };
  const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return { entry: `import(${api}).then(({ register }) => { register(); return import(${JSON.stringify(url.href)}); });`, eval: true };
}

/** Starts a store thread and waits until it has opened the store; rejects with the store's own error. */
async function startThread(path: string, options: SqliteStoreOptions): Promise<Worker> {
  const { entry, eval: isEval } = workerEntry();
  const worker = new Worker(entry, {
    eval: isEval,
    workerData: { path, options },
    execArgv: [],
    // The same young generation as the collector's own thread (bin/bridle gives it 32 MB semi-spaces):
    // each batch's objects live until it is stored.
    resourceLimits: { maxYoungGenerationSizeMb: 96 },
  });
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error): void => {
      worker.off('message', onMessage);
      worker.off('error', settle);
      worker.off('exit', onExit);
      if (!err) return resolve();
      void worker.terminate();
      reject(err);
    };
    const onMessage = (r: StoreReply): void => settle(r.error ? new Error(r.error.message) : undefined);
    const onExit = (code: number): void => settle(new Error(`the store thread ended while opening ${path} (exit code ${code})`));
    worker.on('message', onMessage);
    worker.on('error', settle);
    worker.on('exit', onExit);
  });
  return worker;
}

/** A gRPC status code (0 OK … 16 UNAUTHENTICATED): what an error's `code` must be to become a call's status. */
export function isGrpcStatus(code: unknown): code is number {
  return typeof code === 'number' && Number.isInteger(code) && code >= 0 && code <= 16;
}

/** What the collector hears of the store thread's life. */
export interface StoreThreadEvents {
  /** The thread ended on its own: the calls it held failed (a subscriber may have missed what they stored). */
  ended?(err: Error): void;
  /** A new thread has the store open again. */
  restarted?(restarts: number): void;
  /** A new thread could not open the store; calls fail at once until `retryInMs` has passed. */
  startFailed?(err: Error, retryInMs: number): void;
}

/** After a failed start, calls fail at once for this long, doubling up to the maximum. */
const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 30_000;
/** close() waits this long for the thread to finish what it has and close the store, then ends it. */
const CLOSE_WAIT_MS = 10_000;

export class ThreadedSqliteStore implements EventStore, MessageStore {
  private worker: Worker | undefined;
  private starting: Promise<Worker> | undefined;
  private calls = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private startError: { err: Error; until: number; delay: number } | undefined;
  /** Times the store thread ended on its own and was started again. */
  restarts = 0;

  private constructor(
    private path: string,
    private options: SqliteStoreOptions,
    worker: Worker,
    private events: StoreThreadEvents,
  ) {
    this.adopt(worker);
  }

  /** Starts the thread and opens the store there; rejects with the store's own error (a newer schema, …). */
  static async open(path: string, options: SqliteStoreOptions = {}, events: StoreThreadEvents = {}): Promise<ThreadedSqliteStore> {
    return new ThreadedSqliteStore(path, options, await startThread(path, options), events);
  }

  /** The thread, for diagnostics (and tests that end it). */
  get thread(): Worker | undefined {
    return this.worker;
  }

  private adopt(worker: Worker): void {
    this.worker = worker;
    worker.on('message', (r: StoreReply) => {
      const c = this.calls.get(r.id);
      if (!c) return;
      this.calls.delete(r.id);
      if (r.error) c.reject(Object.assign(new Error(r.error.message), r.error.code !== undefined ? { code: r.error.code } : {}));
      else c.resolve(r.value);
    });
    // A thread that ends on its own (a crash, out of memory) fails the calls it had; SQLite rolls back
    // the transaction it was in, so nothing was acknowledged that is not stored, and the next call starts
    // a new thread on the same file.
    let ended = false;
    const end = (err: Error): void => {
      if (ended) return;
      ended = true;
      if (this.worker === worker) this.worker = undefined;
      for (const c of this.calls.values()) c.reject(err);
      this.calls.clear();
      if (!this.closing) this.events.ended?.(err);
    };
    worker.on('error', (err) => end(new Error(`the store thread failed: ${err.message}`)));
    worker.on('exit', (code) => end(new Error(`the store thread ended (exit code ${code})`)));
  }

  private async live(): Promise<Worker> {
    if (this.worker) return this.worker;
    if (this.closing) throw new Error('the store is closed');
    const failed = this.startError;
    if (failed && performance.now() < failed.until) throw failed.err;
    this.starting ??= startThread(this.path, this.options).then(
      (w) => {
        this.starting = undefined;
        this.startError = undefined;
        if (this.closing) {
          void w.terminate();
          throw new Error('the store is closed');
        }
        this.restarts++;
        this.adopt(w);
        this.events.restarted?.(this.restarts);
        return w;
      },
      (err: Error) => {
        this.starting = undefined;
        const delay = failed ? Math.min(failed.delay * 2, RETRY_MAX_MS) : RETRY_FIRST_MS;
        this.startError = { err, until: performance.now() + delay, delay };
        this.events.startFailed?.(err, delay);
        throw err;
      },
    );
    return this.starting;
  }

  private async call<T>(msg: StoreCall extends infer C ? (C extends StoreCall ? Omit<C, 'id'> : never) : never, transfer: ArrayBuffer[] = []): Promise<T> {
    const worker = await this.live();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.calls.set(id, { resolve: resolve as (v: unknown) => void, reject });
      try {
        worker.postMessage({ ...msg, id }, transfer);
      } catch (err) {
        // Arguments that cannot cross threads: a plain error (its DOMException code is no gRPC status).
        this.calls.delete(id);
        reject(new Error(`cannot pass the call to the store thread: ${(err as Error).message}`));
      }
    });
  }

  private query<T>(op: Queries, ...args: unknown[]): Promise<T> {
    return this.call<T>({ op, args });
  }

  ingestMessages(host: string, msgs: Uint8Array[], limits: IngestLimits): Promise<MessageOutcome[]> {
    // One copy of the messages, handed over (not cloned again) to the store thread.
    let total = 0;
    for (const m of msgs) total += m.byteLength;
    const data = new ArrayBuffer(total);
    const bytes = new Uint8Array(data);
    const ends: number[] = [];
    let at = 0;
    for (const m of msgs) {
      bytes.set(m, at);
      ends.push((at += m.byteLength));
    }
    return this.call<MessageOutcome[]>({ op: 'ingest', host, data, ends, limits: { maxBatchBytes: limits.maxBatchBytes, maxEventBytes: limits.maxEventBytes } }, [data]);
  }

  /**
   * For callers holding decoded events: their bytes go over as one batch message (decoded again there).
   * Checked here first, so that the batch is stored whole or not at all.
   */
  async ingest(host: string, items: IngestItem[]): Promise<IngestResult> {
    for (const i of items) {
      if (i.ev.host !== host) throw new Error(`event for host '${i.ev.host}' in a batch of host '${host}'`);
      if (i.raw.byteLength > LIMITS.maxEventBytes) throw new Error(`event of ${i.raw.byteLength} bytes is over the limit of ${LIMITS.maxEventBytes}`);
    }
    const msg = encodeBatchRequest(0, 0, items.map((i) => i.raw));
    if (msg.byteLength > LIMITS.maxBatchBytes) throw new Error(`batch of ${msg.byteLength} bytes is over the limit of ${LIMITS.maxBatchBytes}`);
    const [o] = await this.ingestMessages(host, [msg], LIMITS);
    if (!o || !('ack' in o) || o.rejected) throw new Error(`the store thread refused the batch: ${o && 'ack' in o ? o.warn : 'no answer'}`);
    return { stored: o.stored, duplicates: o.duplicates, fresh: o.freshAt!.map((at, k) => ({ ...items[at]!, id: o.freshIds![k]! })) };
  }

  addRejected(host: string, n: number): Promise<void> {
    return this.query('addRejected', host, n);
  }
  lastSeq(host: string): Promise<number> {
    return this.query('lastSeq', host);
  }
  queryEvents(...a: Parameters<EventStore['queryEvents']>): ReturnType<EventStore['queryEvents']> {
    return this.query('queryEvents', ...a);
  }
  lineage(...a: Parameters<EventStore['lineage']>): ReturnType<EventStore['lineage']> {
    return this.query('lineage', ...a);
  }
  sessions(...a: Parameters<EventStore['sessions']>): ReturnType<EventStore['sessions']> {
    return this.query('sessions', ...a);
  }
  hosts(): ReturnType<EventStore['hosts']> {
    return this.query('hosts');
  }
  findProcesses(...a: Parameters<EventStore['findProcesses']>): ReturnType<EventStore['findProcesses']> {
    return this.query('findProcesses', ...a);
  }

  /** Closes the store on its thread (a final checkpoint) and lets the thread end; ends it if it takes too long. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.starting?.catch(() => undefined);
      const worker = this.worker;
      if (!worker) return;
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      // the thread is still there (live() hands it back while closing): the call goes after what it has
      const closed = this.query('close').then(() => exited, () => exited);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
      clearTimeout(timer);
      await worker.terminate();
    })();
    return this.closing;
  }
}
