// The embedded store's thread (started by store-thread.ts): it owns the SQLite connection that writes, and
// answers the collector's calls in the order they come, one at a time.
import { parentPort, workerData } from 'node:worker_threads';
import { ingestMessages } from './ingest.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
import { isGrpcStatus, type StoreCall, type StoreReply } from './store-thread.js';

const port = parentPort!;
const { path, options } = workerData as { path: string; options: SqliteStoreOptions };

let store: SqliteStore;
try {
  store = new SqliteStore(path, options);
} catch (err) {
  port.postMessage({ id: 0, error: { message: (err as Error).message } } satisfies StoreReply);
  process.exit(0);
}
port.postMessage({ id: 0, value: 'ready' } satisfies StoreReply);

/** Calls run strictly one after another (a query never sees half of an ingest call). */
let chain = Promise.resolve();
port.on('message', (call: StoreCall) => {
  chain = chain.then(async () => {
    let reply: StoreReply;
    try {
      let value: unknown;
      if (call.op === 'ingest') {
        const { data, ends } = call;
        const msgs: Uint8Array[] = [];
        for (let i = 0, start = 0; i < ends.length; start = ends[i++]!) msgs.push(new Uint8Array(data, start, ends[i]! - start));
        value = await ingestMessages(store, call.host, msgs, call.limits, false);
      } else {
        value = await (store[call.op] as (...a: unknown[]) => Promise<unknown>).apply(store, call.args);
      }
      reply = { id: call.id, value };
    } catch (err) {
      const e = err as Error & { code?: unknown };
      reply = { id: call.id, error: { message: e.message, ...(isGrpcStatus(e.code) ? { code: e.code } : {}) } };
    }
    try {
      port.postMessage(reply);
    } catch (err) {
      // A value that cannot cross threads: the call fails, the thread goes on.
      port.postMessage({ id: call.id, error: { message: `the store's answer could not be passed on: ${(err as Error).message}` } } satisfies StoreReply);
    }
    if (call.op === 'close') port.close();
  }).catch(() => undefined);
});
