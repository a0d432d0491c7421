// Crash tests: kill -9 the collector in the middle of a stream, kill -9 the shipper, and check that every
// event is stored exactly once. Collector and shipper run in child processes (fixtures/) so they can be
// SIGKILLed; each child is killed by pid when the test ends, pass or fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startCollector } from '../../src/collector/server.js';
import { decodeEventFast } from '../../src/events/proto.js';
import { SqliteStore } from '../../src/collector/sqlite.js';
import { defer, makePki, quietLog, spawnFixture, tempDir } from './helpers.js';

/** exec_id → copies stored, for the fixture's numbered events of `host`. */
function storedCopies(dbPath: string, host: string): Map<number, number> {
  const copies = new Map<number, number>();
  for (const { raw } of SqliteStore.readEvents(dbPath)) {
    const { ev } = decodeEventFast(raw);
    if (ev.type !== 'exec' || !ev.exec_id.startsWith(`${host}:fix:`)) continue;
    const n = Number(ev.exec_id.split(':').pop());
    copies.set(n, (copies.get(n) ?? 0) + 1);
  }
  return copies;
}

function assertExactlyOnce(copies: Map<number, number>, from: number, to: number, what: string): void {
  const missing: number[] = [];
  for (let n = from; n < to; n++) if (!copies.has(n)) missing.push(n);
  assert.deepEqual(missing.slice(0, 10), [], `${what}: ${missing.length} events missing`);
  const dups = [...copies].filter(([, c]) => c !== 1);
  assert.deepEqual(dups.slice(0, 10), [], `${what}: events stored more than once`);
}

test('kill -9 the collector mid-stream, restart it: every event stored exactly once', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const pki = await makePki(join(dir, 'certs'));
  await pki.agent('crash-a');
  const dbPath = join(dir, 'collector.db');
  const collectorEnv = { FIX_DB: dbPath, FIX_CERTS: pki.dir, FIX_TOKEN: pki.token };
  const c1 = spawnFixture(t, 'collector', { ...collectorEnv, FIX_LISTEN: '127.0.0.1:0' });
  const { address, port } = await c1.line<{ address: string; port: number }>((l) => l.address);
  const COUNT = 30_000;
  const shipper = spawnFixture(t, 'shipper', {
    FIX_COLLECTOR: address, FIX_SPOOL: join(dir, 'spool'), FIX_HOST: 'crash-a', FIX_CERTS: pki.dir,
    FIX_COUNT: String(COUNT), FIX_CHUNK: '300', FIX_PAUSE_MS: '8',
  });
  // Kill the collector once a good part of the stream is acknowledged and more is still coming.
  await shipper.line((l) => l.stats?.acked >= 6000);
  c1.kill('SIGKILL');
  assert.equal((await c1.exited).signal, 'SIGKILL');
  const atKill = (await shipper.line((l) => l.spooled >= 9000)).spooled as number;
  assert.ok(atKill < COUNT, 'the shipper was still emitting while the collector was down');
  // Restart on the same port with the same store.
  const c2 = spawnFixture(t, 'collector', { ...collectorEnv, FIX_LISTEN: `127.0.0.1:${port}` });
  await c2.line((l) => l.address);
  const done = await shipper.line((l) => l.done, 60_000);
  assert.equal(done.stats.spooled, 0, 'everything acknowledged');
  assert.equal(done.stats.lost, 0);
  c2.kill('SIGTERM');
  await c2.exited;
  assertExactlyOnce(storedCopies(dbPath, 'crash-a'), 0, COUNT, 'after collector crash');
});

test('kill -9 the shipper mid-stream, restart it: the spool replays, nothing lost or doubled', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const pki = await makePki(join(dir, 'certs'));
  await pki.agent('crash-b');
  const dbPath = join(dir, 'collector.db');
  const collector = await startCollector({ listen: '127.0.0.1:0', dbPath, tls: pki.collector, queryTokens: [pki.token], log: quietLog() });
  defer(t, () => collector.close());
  const env = { FIX_COLLECTOR: collector.address, FIX_SPOOL: join(dir, 'spool'), FIX_HOST: 'crash-b', FIX_CERTS: pki.dir };
  const s1 = spawnFixture(t, 'shipper', { ...env, FIX_COUNT: '40000', FIX_CHUNK: '1000', FIX_PAUSE_MS: '2' });
  const seen = await s1.line((l) => l.spooled >= 15_000);
  s1.kill('SIGKILL');
  await s1.exited;
  const n1 = s1.lines.filter((l) => l.spooled).at(-1).spooled as number;
  assert.ok(n1 >= seen.spooled);
  // The second run numbers its events from 1e6 so the two runs' events never share an exec_id.
  const s2 = spawnFixture(t, 'shipper', { ...env, FIX_FROM: '1000000', FIX_COUNT: '5000', FIX_EXIT: '1' });
  const done = await s2.line((l) => l.done, 60_000);
  assert.equal(done.stats.spooled, 0);
  assert.equal(done.stats.lost, 0);
  await collector.close();
  const copies = storedCopies(dbPath, 'crash-b');
  assertExactlyOnce(copies, 0, n1, 'first run (spooled before the kill)');
  assertExactlyOnce(copies, 1_000_000, 1_005_000, 'second run');
});

test('a shipper killed while the collector is unreachable replays its spool later', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const pki = await makePki(join(dir, 'certs'));
  await pki.agent('crash-c');
  const dbPath = join(dir, 'collector.db');
  // Learn a free port, then stop listening on it: the first shipper cannot connect.
  const probe = await startCollector({ listen: '127.0.0.1:0', dbPath, tls: pki.collector, log: quietLog() });
  const port = probe.port;
  await probe.close();
  const env = { FIX_COLLECTOR: `127.0.0.1:${port}`, FIX_SPOOL: join(dir, 'spool'), FIX_HOST: 'crash-c', FIX_CERTS: pki.dir };
  const s1 = spawnFixture(t, 'shipper', { ...env, FIX_COUNT: '10000', FIX_CHUNK: '1000', FIX_PAUSE_MS: '1' });
  const last = await s1.line((l) => l.spooled === 10_000);
  assert.equal(last.stats.acked, 0, 'nothing could be acknowledged');
  s1.kill('SIGKILL');
  await s1.exited;
  const collector = await startCollector({ listen: `127.0.0.1:${port}`, dbPath, tls: pki.collector, log: quietLog() });
  defer(t, () => collector.close());
  const s2 = spawnFixture(t, 'shipper', { ...env, FIX_EXIT: '1' });
  const done = await s2.line((l) => l.done, 60_000);
  assert.equal(done.stats.spooled, 0);
  assert.equal(done.stats.acked, 10_000);
  await collector.close();
  assertExactlyOnce(storedCopies(dbPath, 'crash-c'), 0, 10_000, 'replayed spool');
});
