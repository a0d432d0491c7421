// The SQLite store (chunks, sequence ranges, queries, migration, its WAL checkpoint thread), and the agent spool handing cached payloads over when sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SqliteStore } from '../../src/collector/sqlite.js';
import { decodeEventFast, encodeEvent, isoToMs } from '../../src/events/proto.js';
import type { BridleEvent } from '../../src/events/types.js';
import { Spool } from '../../src/agent/spool.js';
import { defer, FIXTURES, SyntheticHost, tempDir } from './helpers.js';

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
  assert.equal(store.countEvents(), 3000);
  assert.equal(await store.lastSeq('ckpt-host'), 3000);
  const again = store.ingestNow('ckpt-host', all.slice(0, 500));
  assert.deepEqual([again.stored, again.duplicates], [0, 500], 'replayed events are still stored once');
  await store.close();
  assert.ok(!existsSync(`${path}-wal`) || statSync(`${path}-wal`).size === 0, 'no WAL left after close');
  // Reopened: everything is there.
  const reopened = new SqliteStore(path, { checkpointThread: false });
  try {
    assert.equal(reopened.countEvents(), 3000);
    assert.equal([...reopened.allEvents()].length, 3000);
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
  // every session's argv waits in there: the agent's user alone may read it
  spool.close();
  assert.equal(statSync(join(dir, 'spool')).mode & 0o777, 0o700);
  for (const f of readdirSync(join(dir, 'spool')).filter((f) => f !== 'lock')) assert.equal(statSync(join(dir, 'spool', f)).mode & 0o077, 0, `${f} is the agent's alone`);
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
  assert.equal(store.countEvents(), 2000);
  assert.equal(await store.lastSeq('many-host'), 2000);
  const again = await store.ingestMany('many-host', [c]);
  assert.deepEqual([again[0]!.stored, again[0]!.duplicates], [1000, 0]);
  // Nothing points at the rows the failed group had added (the store forgot the ids it had interned).
  const procs = new Map((store.db.prepare('SELECT id, session_id FROM processes').all() as Array<{ id: number; session_id: number | null }>).map((r) => [r.id, r.session_id]));
  const stored = [...store.allEvents()];
  assert.equal(stored.filter((e) => e.procId && !procs.has(e.procId)).length, 0);
  const wrong = stored.filter((e) => e.procId && e.sessionId && procs.get(e.procId) != null && procs.get(e.procId) !== e.sessionId);
  assert.equal(wrong.length, 0, 'events belong to processes of their own session');
  const last = [...c].reverse().find((it) => it.ev.type === 'exec')!.ev;
  const lin = await store.lineage(last.exec_id, 100);
  assert.equal(lin?.processes.find((p) => p.relation === 'target')?.session, last.session);
});

test('each (host, seq) is stored once: batches out of order, overlapping, repeated inside one batch, after a reopen', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'collector.db');
  let store = new SqliteStore(path, { checkpointThread: false });
  defer(t, () => store.close());
  const all = items('seq-host', 600);
  const pick = (seqs: number[]) => seqs.map((s) => all[s - 1]!);
  const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
  // Gaps first, then what fills them, with repeats of stored and of not-yet-stored sequence numbers.
  const steps: Array<[number[], number, number]> = [
    [range(101, 200), 100, 0],
    [range(301, 350), 50, 0],
    [[...range(1, 50), 5, 5, 120], 50, 3], // 5 twice in the batch, 120 stored before
    [range(40, 320), 281 - 11 - 100 - 20, 11 + 100 + 20], // 40..50 stored, 101..200 stored, 301..320 stored
    [range(351, 600).reverse(), 250, 0],
  ];
  for (const [seqs, stored, dups] of steps) {
    const r = store.ingestNow('seq-host', pick(seqs));
    assert.deepEqual([r.stored, r.duplicates], [stored, dups], `batch of ${seqs.length} starting at ${seqs[0]}`);
  }
  assert.equal(store.countEvents(), 600);
  assert.equal(await store.lastSeq('seq-host'), 600);
  await store.close();
  // What the store remembers of the ranges survives a reopen.
  store = new SqliteStore(path, { checkpointThread: false });
  const again = store.ingestNow('seq-host', pick([...range(1, 600), 17]));
  assert.deepEqual([again.stored, again.duplicates], [0, 601]);
  const seqs = [...store.allEvents()].map((e) => decodeEventFast(e.raw).ev.seq!).sort((a, b) => a - b);
  assert.deepEqual(seqs, range(1, 600));
  // Another host's sequence numbers are its own.
  const other = store.ingestNow('seq-other', items('seq-other', 10));
  assert.equal(other.stored, 10);
});

test('queries over chunks: newest by event time across chunks stored out of time order, filters, lineage', async (t) => {
  const dir = tempDir(t);
  const store = new SqliteStore(join(dir, 'collector.db'), { checkpointThread: false });
  defer(t, () => store.close());
  const h = new SyntheticHost('order-host');
  const { root, events: start } = h.startSession('s-order');
  const mk = (tsMs: number, i: number): BridleEvent => {
    const child = h.spawn(root, '/usr/bin/curl', ['curl', String(i)]).event;
    child.ts = new Date(tsMs).toISOString();
    return child;
  };
  const base = Date.parse('2026-01-01T00:00:00Z');
  // Chunk 1 holds the newest events, chunk 2 (stored later, as a replayed spool would be) older ones,
  // chunk 3 a mix: the newest ten by time come from chunks 1 and 3.
  const c1 = [...start, ...Array.from({ length: 50 }, (_, i) => mk(base + 100_000 + i, i))];
  const c2 = Array.from({ length: 50 }, (_, i) => mk(base + i, 100 + i));
  const c3 = Array.from({ length: 50 }, (_, i) => mk(base + (i % 2 ? 200_000 + i : 50 + i), 200 + i));
  let seq = 0;
  const asItems = (evs: BridleEvent[]) =>
    evs.map((ev) => {
      ev.seq = ++seq;
      return { ev, tsMs: isoToMs(ev.ts), raw: encodeEvent(ev) };
    });
  for (const c of [c1, c2, c3]) store.ingestNow('order-host', asItems(c));
  const times = (evs: Array<{ raw: Uint8Array }>) => evs.map((e) => decodeEventFast(e.raw).tsMs);
  const newest = await store.queryEvents({}, 10);
  const want = [...c1, ...c2, ...c3].map((e) => isoToMs(e.ts)).sort((a, b) => a - b).slice(-10);
  assert.deepEqual(times(newest), want, 'the ten newest by time, oldest first');
  const since = await store.queryEvents({ since: base + 100_000, until: base + 100_049 }, 1000);
  assert.equal(since.length, 50);
  assert.deepEqual(times(since), c1.slice(-50).map((e) => isoToMs(e.ts)));
  // One process: exactly its own events, by exec_id, across chunks.
  const target = c2[7] as BridleEvent & { exec_id: string };
  const own = await store.queryEvents({ exec_id: target.exec_id }, 100);
  assert.deepEqual(own.map((e) => decodeEventFast(e.raw).ev.exec_id), [target.exec_id]);
  assert.deepEqual(await store.queryEvents({ exec_id: 'nobody:0:0' }, 100), []);
  assert.deepEqual(await store.queryEvents({ session: 'no-such-session' }, 100), []);
  assert.deepEqual(await store.queryEvents({ hosts: ['no-such-host'] }, 100), []);
  const execs = [...c1, ...c2, ...c3].filter((e) => e.type === 'exec').length;
  assert.equal((await store.queryEvents({ session: 's-order', types: ['exec'] }, 1000)).length, execs);
  assert.equal((await store.queryEvents({ session: 's-order', types: ['exec'] }, 7)).length, 7);
  assert.equal((await store.queryEvents({ types: ['session_start'] }, 1000)).length, 1);
  const lin = await store.lineage(root.execId, 1000);
  assert.equal(lin?.processes.filter((p) => p.relation === 'descendant').length, [...c1, ...c2, ...c3].filter((e) => e.type === 'exec' && e.parent_exec_id === root.execId).length);
  assert.ok(lin?.processes.every((p) => p.events.length >= 1), 'every process has its exec event');
});

test('a store of schema 1 (one row per event) is migrated on open: every event, lineage, and duplicates still refused', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'collector.db');
  const all = items('v1-host', 700);
  // Written the way schema 1 stored events.
  const v1 = new Database(path);
  v1.pragma('journal_mode = WAL');
  v1.exec(readFileSync(join(FIXTURES, 'schema-v1.sql'), 'utf8'));
  v1.pragma('user_version = 1');
  const hostId = Number(v1.prepare('INSERT INTO hosts(name, first_seen, last_seen, last_seq, events) VALUES (?, 0, 0, ?, ?)').run('v1-host', 700, 700).lastInsertRowid);
  const sess = new Map<string, number>();
  const procs = new Map<string, number>();
  const proc = (execId: string, sid: number, ev?: BridleEvent) => {
    let id = procs.get(execId);
    if (id === undefined) {
      const parent = ev && 'parent_exec_id' in ev && ev.parent_exec_id ? procs.get(ev.parent_exec_id) ?? null : null;
      const path = ev && (ev.type === 'exec' || ev.type === 'session_start') ? ev.path : null;
      id = Number(v1.prepare('INSERT INTO processes(exec_id, parent_id, host_id, session_id, pid, path, start_ts, session_root) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(execId, parent, hostId, sid, ev?.pid ?? 0, path, ev ? isoToMs(ev.ts) : 0, ev?.type === 'session_start' ? 1 : 0).lastInsertRowid);
      procs.set(execId, id);
    }
    return id;
  };
  const VERDICT: Record<string, number> = { allow: 1, deny: 2, would_deny: 3 };
  const TYPE: Record<string, number> = { session_start: 10, session_end: 11, exec: 12, exit: 13, connect: 14, tool_call: 16 };
  const put = (hid: number, { ev, tsMs, raw }: (typeof all)[number]) => {
    let sid = sess.get(ev.session);
    if (sid === undefined) sess.set(ev.session, (sid = Number(v1.prepare('INSERT INTO sessions(host_id, session) VALUES (?, ?)').run(hid, ev.session).lastInsertRowid)));
    const pid = ev.exec_id ? proc(ev.exec_id, sid, ev) : null;
    v1.prepare('INSERT INTO events(host_id, seq, ts, type, session_id, proc_id, verdict, daddr, dport, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').run(
      hid, ev.seq, tsMs, TYPE[ev.type] ?? 99, sid, pid, ev.verdict ? VERDICT[ev.verdict] : null,
      ev.type === 'connect' ? ev.daddr : null, ev.type === 'connect' ? ev.dport : null, raw,
    );
  };
  // A second host's events in the middle, and more rows than one chunk holds: chunks are written while
  // the old table is still being read.
  const otherId = Number(v1.prepare("INSERT INTO hosts(name, first_seen, last_seen) VALUES ('v1-other', 0, 0)").run().lastInsertRowid);
  const others = items('v1-other', 4200);
  all.slice(0, 300).forEach((it) => put(hostId, it));
  others.forEach((it) => put(otherId, it));
  all.slice(300).forEach((it) => put(hostId, it));
  v1.close();

  const store = new SqliteStore(path, { checkpointThread: false });
  defer(t, () => store.close());
  assert.equal(store.db.pragma('user_version', { simple: true }), 3);
  assert.equal((store.db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'events'").get() as { n: number }).n, 0, 'the old table is gone');
  const stored = [...store.allEvents()];
  const inOrder = [...all.slice(0, 300), ...others, ...all.slice(300)];
  assert.equal(stored.length, inOrder.length);
  assert.ok(stored.every((e, i) => e.raw.equals(inOrder[i]!.raw)), 'every event, byte for byte, in its order');
  assert.equal(store.ingestNow('v1-other', others.slice(4000)).duplicates, 200);
  const again = store.ingestNow('v1-host', all.slice(600));
  assert.deepEqual([again.stored, again.duplicates], [0, 100], 'sequence numbers of migrated events are known');
  const exec = all.find((it) => it.ev.type === 'exec')!.ev;
  const lin = await store.lineage(exec.exec_id, 100);
  const target = lin?.processes.find((p) => p.relation === 'target');
  assert.ok(target && target.events.length >= 2, 'its exec and its connect and exit');
  assert.deepEqual(target.events.map((e) => decodeEventFast(e.raw).ev.exec_id), target.events.map(() => exec.exec_id));
  const denied = await store.queryEvents({ daddr: '140.82.3.0' }, 100);
  assert.ok(denied.length >= 1 && denied.every((e) => (decodeEventFast(e.raw).ev as { daddr?: string }).daddr === '140.82.3.0'));
  // New events go on after the migrated ones.
  const more = store.ingestNow('v1-host', items('v1-host', 800).slice(700));
  assert.equal(more.stored, 100);
  assert.ok(more.fresh[0]!.id > Math.max(...stored.map((e) => e.id)));
  // A migrated process (indexed the schema-2 way, without a first chunk) with a new event: both are found.
  const h = new SyntheticHost('v1-host');
  const late = { ...h.exit({ execId: exec.exec_id, pid: exec.pid, session: exec.session, parentExecId: exec.parent_exec_id, ppid: exec.ppid }, 3), seq: 900 } as BridleEvent;
  store.ingestNow('v1-host', [{ ev: late, tsMs: isoToMs(late.ts), raw: encodeEvent(late) }]);
  const after = (await store.lineage(exec.exec_id, 100))!.processes.find((p) => p.relation === 'target')!;
  assert.equal(after.events.length, target.events.length + 1, 'the migrated events and the new one');
  assert.equal((await store.queryEvents({ exec_id: exec.exec_id }, 100)).length, target.events.length + 1);
});

test('a process whose events span batches is found in every chunk, and one known first by its child', async (t) => {
  const store = new SqliteStore(join(tempDir(t), 'collector.db'), { checkpointThread: false });
  defer(t, () => store.close());
  const h = new SyntheticHost('span-host');
  let seq = 0;
  const put = (evs: BridleEvent[]) =>
    store.ingestNow('span-host', evs.map((ev) => ({ ev: { ...ev, seq: ++seq } as BridleEvent, tsMs: isoToMs(ev.ts), raw: encodeEvent({ ...ev, seq } as BridleEvent) })));
  const { root, events } = h.startSession('span');
  const parent = h.spawn(root, '/usr/bin/make', ['make']);
  put([...events, parent.event]);
  // A child whose events come first; its parent's own exec event only in a later batch (a stub until then).
  const uncle = h.spawn(root, '/bin/sh', ['sh']);
  const cousin = h.spawn(uncle.proc, '/usr/bin/cc', ['cc']);
  put([cousin.event, h.connect(parent.proc, '127.0.0.9', 80)]);
  put([h.connect(parent.proc, '127.0.0.10', 80), uncle.event]);
  put([h.exit(cousin.proc, 0), h.exit(uncle.proc, 0), h.exit(parent.proc, 0)]);
  const types = async (execId: string) => {
    const lin = (await store.lineage(execId, 100))!;
    return lin.processes.find((p) => p.relation === 'target')!.events.map((e) => decodeEventFast(e.raw).ev.type);
  };
  assert.deepEqual(await types(parent.event.exec_id), ['exec', 'connect', 'connect', 'exit'], 'events in four batches');
  assert.deepEqual(await types(uncle.event.exec_id), ['exec', 'exit'], 'a stub first, its exec later');
  assert.deepEqual(await types(cousin.event.exec_id), ['exec', 'exit']);
  assert.equal((await store.queryEvents({ exec_id: parent.event.exec_id }, 100)).length, 4);
  const lin = (await store.lineage(cousin.event.exec_id, 100))!;
  assert.ok(lin.processes.some((p) => p.relation === 'ancestor' && p.exec_id === uncle.event.exec_id), 'the stub parent is its ancestor');
  // Processes whose events all come in one batch need no chunk_procs entry (their first chunk holds them).
  const listed = () => (store.db.prepare('SELECT count(*) AS n FROM chunk_procs').get() as { n: number }).n;
  const before = listed();
  const s2 = h.startSession('short');
  const kids = [1, 2, 3].map((i) => h.spawn(s2.root, '/bin/true', ['true', String(i)]));
  put([...s2.events, ...kids.flatMap((k) => [k.event, h.exit(k.proc, 0)]), h.endSession(s2.root)]);
  assert.equal(listed(), before);
  assert.deepEqual(await types(kids[2]!.event.exec_id), ['exec', 'exit']);
});

test('a process the store knows from before a reopen is the same row after it', async (t) => {
  const path = join(tempDir(t), 'collector.db');
  let store = new SqliteStore(path, { checkpointThread: false });
  const h = new SyntheticHost('reopen-host');
  let seq = 0;
  const put = (evs: BridleEvent[]) =>
    store.ingestNow('reopen-host', evs.map((ev) => ({ ev: { ...ev, seq: ++seq } as BridleEvent, tsMs: isoToMs(ev.ts), raw: encodeEvent({ ...ev, seq } as BridleEvent) })));
  const { root, events } = h.startSession('reopen');
  const parent = h.spawn(root, '/bin/sh', ['sh']);
  const child = h.spawn(parent.proc, '/usr/bin/cc', ['cc']);
  put([...events, child.event]); // the parent is a stub, known by its child
  await store.close();
  store = new SqliteStore(path, { checkpointThread: false });
  defer(t, () => store.close());
  put([parent.event, h.exit(parent.proc, 0)]);
  const rows = store.db.prepare('SELECT count(*) AS n FROM processes WHERE exec_id = ?').get(parent.event.exec_id) as { n: number };
  assert.equal(rows.n, 1, 'one row: the stub got its exec');
  const lin = (await store.lineage(child.event.exec_id, 100))!;
  const p = lin.processes.find((x) => x.exec_id === parent.event.exec_id)!;
  assert.equal(p.relation, 'ancestor');
  assert.equal(p.path, '/bin/sh');
});

