// The embedded store runs on a thread of its own (store-thread.ts): its errors reach the collector, and a
// thread that ends mid-stream costs no event and stores none twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createShipper } from '../../src/agent/shipper.js';
import { startCollector } from '../../src/collector/server.js';
import { SqliteStore } from '../../src/collector/sqlite.js';
import { ThreadedSqliteStore } from '../../src/collector/store-thread.js';
import { decodeEventFast, encodeEvent, isoToMs } from '../../src/events/proto.js';
import { defer, quietLog, startTestCollector, SyntheticHost, tempDir, waitFor } from './helpers.js';

test('a store the collector cannot open fails its start with the store\'s own error', async (t) => {
  const dir = tempDir(t);
  const dbPath = join(dir, 'collector.db');
  const db = new Database(dbPath);
  db.pragma('user_version = 99');
  db.close();
  await assert.rejects(startCollector({ listen: '127.0.0.1:0', dbPath, insecure: true, log: quietLog() }), /schema version 99 is newer than this bridle/);
});

test('the store thread ending mid-stream: the stream fails, a new thread takes over, every event stored exactly once', { timeout: 60_000 }, async (t) => {
  const tc = await startTestCollector(t);
  const store = tc.collector.store as ThreadedSqliteStore;
  assert.ok(store instanceof ThreadedSqliteStore, 'the embedded store runs on its own thread');
  const first = store.thread!;
  assert.notEqual(first.threadId, 0);
  const shipper = await createShipper({
    collector: tc.address, spoolDir: join(tc.dir, 'spool'), host: 'host-t', tls: await tc.pki.agent('host-t'), log: quietLog(),
  });
  defer(t, () => shipper.close());
  const h = new SyntheticHost('host-t');
  const { root, events } = h.startSession('s');
  const COUNT = 20_000;
  let emitted = 0;
  const emit = (n: number): void => {
    for (const ev of events.splice(0)) shipper.emit(ev);
    for (let i = 0; i < n; i++, emitted++) shipper.emit(h.spawn(root, '/usr/bin/true', ['true', String(emitted)]).event);
  };
  // A live subscriber: what the thread stored but could not answer for never reaches it, so it is told to
  // resubscribe.
  const sub = tc.query.subscribe({ session: 's' });
  defer(t, () => sub.close());
  const live = sub[Symbol.asyncIterator]();
  await waitFor(() => tc.collector.stats().subscribers === 1, 5000, 'subscribed');
  emit(COUNT / 2);
  await waitFor(() => shipper.stats().acked >= 2000, 20_000, 'part of the stream acknowledged');
  // End the thread while batches are still coming (as a crash of it would), then send the rest.
  await first.terminate();
  emit(COUNT / 2);
  await shipper.flush(40_000);
  assert.equal(shipper.stats().spooled, 0, 'everything acknowledged');
  assert.equal(store.restarts, 1, 'one new thread');
  assert.equal(tc.collector.stats().storeRestarts, 1);
  assert.notEqual(store.thread, first);
  await assert.rejects(async () => {
    for (;;) if ((await live.next()).done) break;
  }, (err: { code?: number; details?: string }) => err.code === 14 && /resubscribe with a backfill/.test(err.details ?? ''));
  await tc.close();
  const copies = new Map<string, number>();
  for (const { raw } of SqliteStore.readEvents(tc.dbPath)) {
    const { ev } = decodeEventFast(raw);
    if (ev.type === 'exec' && ev.path === '/usr/bin/true') copies.set(ev.argv![1]!, (copies.get(ev.argv![1]!) ?? 0) + 1);
  }
  assert.equal(copies.size, COUNT, 'every event stored');
  assert.deepEqual([...copies].filter(([, c]) => c !== 1).slice(0, 5), [], 'none stored twice');
});

test('a store thread that cannot open the store again: calls fail at once for a while, then it is tried again', async (t) => {
  const dir = tempDir(t);
  const dbPath = join(dir, 'collector.db');
  const failures: Array<{ err: string; retryInMs: number }> = [];
  const store = await ThreadedSqliteStore.open(dbPath, {}, { startFailed: (err, retryInMs) => failures.push({ err: err.message, retryInMs }) });
  defer(t, () => store.close());
  const version = (v: number): void => {
    const db = new Database(dbPath);
    db.pragma(`user_version = ${v}`);
    db.close();
  };
  await store.thread!.terminate();
  version(99);
  await assert.rejects(store.lastSeq('h'), /schema version 99 is newer/);
  await assert.rejects(store.lastSeq('h'), /schema version 99 is newer/);
  assert.deepEqual(failures, [{ err: failures[0]!.err, retryInMs: 500 }], 'one attempt: the second call failed without starting a thread');
  version(3);
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(await store.lastSeq('h'), 0);
  assert.equal(store.restarts, 1);
});

test('live subscribers get what their filters match, type and verdict filters included', async (t) => {
  const tc = await startTestCollector(t);
  const shipper = await createShipper({
    collector: tc.address, spoolDir: join(tc.dir, 'spool'), host: 'host-f', tls: await tc.pki.agent('host-f'), log: quietLog(),
  });
  defer(t, () => shipper.close());
  const denials = tc.query.subscribe({ types: ['exec'], verdicts: ['deny'] });
  const everything = tc.query.subscribe({});
  defer(t, () => denials.close());
  defer(t, () => everything.close());
  await waitFor(() => tc.collector.stats().subscribers === 2, 5000, 'subscribed');
  const h = new SyntheticHost('host-f');
  const { root, events } = h.startSession('f');
  const all = [...events];
  for (let i = 0; i < 50; i++) all.push(h.spawn(root, i % 10 === 0 ? '/usr/bin/nc' : '/usr/bin/true', ['x', String(i)], i % 10 === 0 ? 'deny' : 'allow').event);
  for (const ev of all) shipper.emit(ev);
  await shipper.flush(10_000);
  const take = async (sub: typeof denials, n: number) => {
    const it = sub[Symbol.asyncIterator]();
    const got = [];
    for (let i = 0; i < n; i++) got.push((await it.next()).value!);
    return got;
  };
  const d = await take(denials, 5);
  assert.deepEqual(d.map((e) => [e.type, e.verdict, e.argv?.[1]]), [0, 10, 20, 30, 40].map((i) => ['exec', 'deny', String(i)]));
  const e = await take(everything, all.length);
  assert.equal(e.length, all.length);
  assert.deepEqual(e.map((x) => x.seq), all.map((x) => x.seq));
});

test('ingest() of decoded events on the store thread: stored whole with their ids, replays counted, a bad batch refused whole', async (t) => {
  const dir = tempDir(t);
  const dbPath = join(dir, 'collector.db');
  const store = await ThreadedSqliteStore.open(dbPath);
  defer(t, () => store.close());
  const h = new SyntheticHost('host-i');
  const { root, events } = h.startSession('i');
  const evs = [...events, ...Array.from({ length: 20 }, (_, i) => h.spawn(root, '/usr/bin/true', ['true', String(i)]).event)];
  evs.forEach((ev, i) => (ev.seq = i + 1)); // as the shipper numbers them
  const items = evs.map((ev) => ({ ev, tsMs: isoToMs(ev.ts), raw: encodeEvent(ev) }));
  const first = await store.ingest('host-i', items.slice(0, 10));
  assert.deepEqual([first.stored, first.duplicates], [10, 0]);
  assert.deepEqual(first.fresh.map((f) => f.ev.seq), evs.slice(0, 10).map((e) => e.seq), 'the fresh events, in order');
  assert.equal(new Set(first.fresh.map((f) => f.id)).size, 10, 'each with its own store id');
  const again = await store.ingest('host-i', items);
  assert.deepEqual([again.stored, again.duplicates], [items.length - 10, 10], 'the first ten are replays');
  assert.equal(await store.lastSeq('host-i'), evs.at(-1)!.seq);

  // Refused before anything is stored: an event of another host, and one over the size limit.
  const other = new SyntheticHost('host-x');
  const x = other.startSession('x').events[0]!;
  x.seq = evs.length + 1;
  await assert.rejects(store.ingest('host-i', [{ ev: x, tsMs: isoToMs(x.ts), raw: encodeEvent(x) }]), /event for host 'host-x' in a batch of host 'host-i'/);
  const big = h.spawn(root, '/usr/bin/true', ['true', 'x'.repeat(2 << 20)]).event;
  const later = h.spawn(root, '/usr/bin/true', ['true', 'after']).event;
  later.seq = evs.length + 1;
  big.seq = evs.length + 2;
  await assert.rejects(store.ingest('host-i', [{ ev: later, tsMs: isoToMs(later.ts), raw: encodeEvent(later) }, { ev: big, tsMs: isoToMs(big.ts), raw: encodeEvent(big) }]), /over the limit/);
  assert.equal(await store.lastSeq('host-i'), evs.at(-1)!.seq, 'nothing of the refused batches was stored');
  assert.equal((await store.queryEvents({ session: 'i' }, 1000)).length, evs.length);
});
