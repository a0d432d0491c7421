// Checkpoints a SQLite database's WAL from a worker thread.
//
// With SQLite's automatic checkpoint, the commit that pushes the WAL past 1000 pages also copies those
// pages back into the database file and fsyncs both files, on the thread that committed: for the
// collector, its event loop, which then stops reading from agents for that long (about a third of the
// time spent storing a batch, measured by bench/collector.bench.ts). Here a second connection in a worker
// thread runs PASSIVE checkpoints every `intervalMs` (they never block the writer), and the writer keeps
// an automatic checkpoint only as a bound on the WAL (`safetyPages`) for when the worker falls behind or
// is gone. Durability does not change: a commit is in the WAL either way.
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';

// CommonJS source of the worker (run with eval, without the parent's loader flags).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.module);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 0');
db.pragma('synchronous = ' + workerData.sync);
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
let failures = 0;
const timer = setInterval(() => {
  try {
    checkpoint.get();
    failures = 0;
  } catch (err) {
    // SQLITE_BUSY (another checkpoint is running) is normal; anything else repeatedly is not.
    if (err && err.code !== 'SQLITE_BUSY' && ++failures >= 5) {
      parentPort.postMessage({ error: String(err.message || err) });
      stop();
    }
  }
}, workerData.intervalMs);
function stop() {
  clearInterval(timer);
  try { db.close(); } catch {}
  parentPort.close();
}
parentPort.on('message', (m) => { if (m === 'close') stop(); });
parentPort.postMessage({ ready: true });
`;

export interface CheckpointerOptions {
  /** Database file (in WAL mode, already created by the writer). */
  path: string;
  sync: 'NORMAL' | 'FULL';
  intervalMs?: number;
  /** Called once if the worker cannot start or stops on its own (the writer should checkpoint again). */
  onFailure(err: Error): void;
}

export class WalCheckpointer {
  private worker: Worker | undefined;
  private failed = false;
  private closing = false;

  constructor(private opts: CheckpointerOptions) {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: { path: opts.path, sync: opts.sync, intervalMs: opts.intervalMs ?? 200, module: createRequire(import.meta.url).resolve('better-sqlite3') },
    });
    this.worker = worker;
    worker.unref();
    worker.on('message', (m: { error?: string }) => {
      if (m.error) this.fail(new Error(m.error));
    });
    worker.on('error', (err) => this.fail(err));
    worker.on('exit', (code) => {
      this.worker = undefined;
      if (!this.closing) this.fail(new Error(`checkpoint thread exited (${code})`));
    });
  }

  private fail(err: Error): void {
    if (this.failed || this.closing) return;
    this.failed = true;
    this.opts.onFailure(err);
  }

  /** Stops the worker and closes its connection (before the writer's own final checkpoint). */
  async close(): Promise<void> {
    this.closing = true;
    const w = this.worker;
    if (!w) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => void w.terminate().then(() => resolve(), () => resolve()), 2000);
      w.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      w.postMessage('close');
    });
  }
}
