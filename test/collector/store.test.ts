// The SQLite store's WAL checkpoint thread, and the agent spool handing cached payloads over when sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SqliteStore } from '../../src/collector/sqlite.js';
import { encodeEvent, isoToMs } from '../../src/events/proto.js';
import type { BridleEvent } from '../../src/events/types.js';
import { Spool } from '../../src/agent/spool.js';
import { defer, SyntheticHost, tempDir } from './helpers.js';

/** `n` events of one host (sessions of a few processes), numbered from seq 1, as the collector ingests them. */
function items(hostName: string, n: number) {
  const h = new SyntheticHost(hostName);
  const evs: BridleEvent[] = [];
  for (let s = 0; evs.length < n; s++) {
    const { root, events } = h.startSession(`sess-${s}`);
    evs.push(...events);
    for (let i = 0; i < 8; i++) {
      const child = h.spawn(root, '/usr/bin/git', ['git', 'status', String(i)]);
      evs.push(child.event, h.connect(child.proc, `140.82.${i}.${s % 250}`, 443), h.exit(child.proc, 0));
    }
    evs.push(h.endSession(root));
  }
  evs.length = n;
  return evs.map((ev, i) => {
    ev.seq = i + 1;
    return { ev, tsMs: isoToMs(ev.ts), raw: encodeEvent(ev) };
  });
}

/** Waits until `pred` holds (polling), or fails after `ms`. */
async function until(pred: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await sleep(20);
  }
}

test('the WAL is checkpointed by a thread beside the writer; close stops it and leaves no WAL', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'collector.db');
  const store = new SqliteStore(path);
  defer(t, () => store.close());
  const base = statSync(path).size;
  const all = items('ckpt-host', 3000);
  for (let i = 0; i < all.length; i += 1000) store.ingestNow('ckpt-host', all.slice(i, i + 1000));
  // A few MiB of WAL, far below the writer's own checkpoint bound: only the thread copies pages back.
  assert.ok(statSync(`${path}-wal`).size < 32 * 1024 * 1024);
  await until(() => statSync(path).size > base + 256 * 1024, 5000, 'the database file receives the checkpointed pages');
  const n = store.db.prepare('SELECT count(*) AS n FROM events').get() as { n: number };
  assert.equal(n.n, 3000);
  assert.equal(await store.lastSeq('ckpt-host'), 3000);
  const again = store.ingestNow('ckpt-host', all.slice(0, 500));
  assert.deepEqual([again.stored, again.duplicates], [0, 500], 'replayed events are still stored once');
  await store.close();
  assert.ok(!existsSync(`${path}-wal`) || statSync(`${path}-wal`).size === 0, 'no WAL left after close');
  // Reopened: everything is there.
  const reopened = new SqliteStore(path, { checkpointThread: false });
  try {
    assert.equal((reopened.db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 3000);
  } finally {
    await reopened.close();
  }
});

test('without the checkpoint thread the writer keeps SQLite’s own checkpoints', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'collector.db');
  const store = new SqliteStore(path, { checkpointThread: false });
  defer(t, () => store.close());
  assert.equal(store.db.pragma('wal_autocheckpoint', { simple: true }), 1000);
  const base = statSync(path).size;
  store.ingestNow('plain-host', items('plain-host', 1000));
  await sleep(600);
  assert.equal(statSync(path).size, base, 'nothing checkpointed below 1000 WAL pages');
});

test('the spool hands a cached payload over when sent and reads it back from disk after a rewind', (t) => {
  const dir = tempDir(t);
  const spool = Spool.open(join(dir, 'spool'), { memBytes: 64 * 1024 });
  defer(t, () => spool.close());
  // Two fit in the memory cache, the third does not.
  const payloads = [randomBytes(30_000), randomBytes(30_000), randomBytes(30_000)];
  payloads.forEach((p, i) => assert.ok(spool.append(i * 10 + 1, i * 10 + 10, 10, p)));
  const sent = [spool.next(), spool.next(), spool.next()];
  assert.equal(spool.next(), undefined);
  sent.forEach((e, i) => assert.ok(e && e.payload.equals(payloads[i]!), `record ${i} sent intact`));
  // The cache is free again: a new record is cached and sent as is.
  const fourth = randomBytes(30_000);
  assert.ok(spool.append(31, 40, 10, fourth));
  assert.equal(spool.next()!.payload, fourth);
  // A reconnect resends everything not acknowledged, from disk.
  spool.rewind();
  const resent = [spool.next(), spool.next(), spool.next(), spool.next()];
  [...payloads, fourth].forEach((p, i) => assert.ok(resent[i]?.payload.equals(p), `record ${i} resent intact`));
  assert.equal(spool.ack(20), 20);
  assert.equal(spool.unackedRecords, 2);
  assert.equal(spool.unackedEvents, 20);
});

test('ingestMany stores several batches in one transaction: per-batch results, all or nothing', async (t) => {
  const dir = tempDir(t);
  const store = new SqliteStore(join(dir, 'collector.db'));
  defer(t, () => store.close());
  const all = items('many-host', 3000);
  const [a, b, c] = [all.slice(0, 1000), all.slice(1000, 2000), all.slice(2000)];
  const res = await store.ingestMany('many-host', [a, b, a.slice(0, 10), []]);
  assert.deepEqual(
    res.map((r) => [r.stored, r.duplicates, r.fresh.length]),
    [[1000, 0, 1000], [1000, 0, 1000], [0, 10, 0], [0, 0, 0]],
  );
  assert.ok(res[1]!.fresh[0]!.id > res[0]!.fresh.at(-1)!.id, 'ids follow the order of the batches');
  // A batch that cannot be stored takes the whole group back.
  const broken = c.map((it, i) => (i === 500 ? { ...it, raw: null as unknown as Uint8Array } : it));
  await assert.rejects(store.ingestMany('many-host', [c.slice(0, 100), broken]));
  assert.equal((store.db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n, 2000);
  assert.equal(await store.lastSeq('many-host'), 2000);
  const again = await store.ingestMany('many-host', [c]);
  assert.deepEqual([again[0]!.stored, again[0]!.duplicates], [1000, 0]);
  // Nothing points at the rows the failed group had added (the store forgot the ids it had interned).
  const dangling = store.db
    .prepare('SELECT count(*) AS n FROM events e LEFT JOIN processes p ON p.id = e.proc_id WHERE e.proc_id IS NOT NULL AND p.id IS NULL')
    .get() as { n: number };
  assert.equal(dangling.n, 0);
  const wrong = store.db
    .prepare(
      `SELECT count(*) AS n FROM events e JOIN processes p ON p.id = e.proc_id JOIN sessions s ON s.id = e.session_id
       WHERE p.session_id IS NOT NULL AND p.session_id <> e.session_id`,
    )
    .get() as { n: number };
  assert.equal(wrong.n, 0, 'events belong to processes of their own session');
  const last = [...c].reverse().find((it) => it.ev.type === 'exec')!.ev;
  const lin = await store.lineage(last.exec_id, 100);
  assert.equal(lin?.processes.find((p) => p.relation === 'target')?.session, last.session);
});
