// Real gRPC over loopback with mutual TLS: shipper → collector → queries, subscriptions and refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { createShipper, type Shipper } from '../../src/agent/shipper.js';
import { createQueryClient } from '../../src/collector/client.js';
import { CollectorClient, encodeBatchRequest, encodeHelloRequest, type WireIngestResponse } from '../../src/collector/wire.js';
import { channelCredentials, type TlsFiles } from '../../src/collector/tls.js';
import { encodeEvent, num } from '../../src/events/proto.js';
import { initPki, issueCert } from '../../src/collector/certs.js';
import type { BridleEvent } from '../../src/events/types.js';
import { defer, incidentSession, quietLog, startTestCollector, SyntheticHost, tempDir, waitFor, type TestCollector } from './helpers.js';

async function shipperFor(t: import('node:test').TestContext, tc: TestCollector, host: string, extra: Partial<Parameters<typeof createShipper>[0]> = {}): Promise<Shipper> {
  const s = await createShipper({
    collector: tc.address, spoolDir: join(tc.dir, `spool-${host}`), host, tls: await tc.pki.agent(host), log: quietLog(), ...extra,
  });
  defer(t, () => s.close());
  return s;
}

test('events shipped over mTLS are stored with their lineage', async (t) => {
  const tc = await startTestCollector(t);
  const shipper = await shipperFor(t, tc, 'host-a');
  const h = new SyntheticHost('host-a');
  const inc = incidentSession(h, 'sess-1');
  for (const ev of inc.events) shipper.emit(ev);
  await shipper.flush(10_000);
  assert.deepEqual({ ...shipper.stats(), connected: undefined, spoolBytes: undefined }, {
    sent: inc.events.length, acked: inc.events.length, spooled: 0, lost: 0, rejected: 0, connected: undefined, spoolBytes: undefined,
  });

  const lin = await tc.query.lineage(inc.curl.execId);
  assert.ok(lin, 'lineage found');
  const ids = lin.processes.map((p) => [p.relation, p.path]);
  // ancestors up to the session root, then the target; curl has no children.
  assert.deepEqual(ids, [['ancestor', '/usr/local/bin/claude'], ['ancestor', '/usr/bin/bash'], ['target', '/usr/bin/curl']]);
  const curl = lin.processes[2]!;
  assert.deepEqual(curl.events.map((e) => [e.type, e.verdict ?? '']), [['exec', 'allow'], ['connect', 'deny'], ['exit', '']]);
  assert.equal(lin.session?.agent, 'claude-code');
  assert.equal(lin.session?.denials, 2);
  assert.equal(lin.processes[0]!.session_root, true);

  // From the root: every descendant, parents before children.
  const all = await tc.query.lineage(inc.root.execId);
  assert.ok(all);
  assert.deepEqual(all.processes.map((p) => p.path).sort(), ['/usr/bin/bash', '/usr/bin/curl', '/usr/bin/git', '/usr/bin/nc', '/usr/bin/python3', '/usr/local/bin/claude']);
  const pos = new Map(all.processes.map((p, i) => [p.exec_id, i]));
  for (const p of all.processes) if (pos.has(p.parent_exec_id)) assert.ok(pos.get(p.parent_exec_id)! < pos.get(p.exec_id)!, 'parent first');
  const root = all.processes.find((p) => p.exec_id === inc.root.execId)!;
  assert.deepEqual(root.events.map((e) => e.type), ['session_start', 'exec', 'tool_call', 'exit', 'session_end']);
  // Fields survive the trip.
  const tool = root.events.find((e) => e.type === 'tool_call');
  assert.deepEqual(tool && tool.type === 'tool_call' && tool.arguments, { repo: 'acme/x', title: 't' });

  const [sess] = await tc.query.sessions();
  assert.equal(sess?.session, 'sess-1');
  assert.equal(sess?.host, 'host-a');
  assert.equal(sess?.events, inc.events.length);
  assert.equal(sess?.denials, 2);
  assert.ok(sess!.end > 0);

  const denies = await tc.query.events({ verdicts: ['deny'] });
  assert.deepEqual(denies.map((e) => e.type), ['connect', 'exec']);
  const byConn = await tc.query.findProcesses({ daddr: '169.254.169.254', since: Date.now() - 3_600_000 });
  assert.deepEqual(byConn.matches.map((m) => m.process.path), ['/usr/bin/curl']);
  assert.deepEqual(byConn.matches[0]!.ancestors.map((a) => a.path), ['/usr/bin/bash', '/usr/local/bin/claude']);
  const byPath = await tc.query.findProcesses({ path: 'nc' });
  assert.deepEqual(byPath.matches.map((m) => m.process.exec_id), [inc.nc.execId]);
});

test('a subscriber sees a denial within one second', async (t) => {
  const tc = await startTestCollector(t);
  const shipper = await shipperFor(t, tc, 'host-b');
  const h = new SyntheticHost('host-b');
  const { root, events } = h.startSession('s-live');
  for (const ev of events) shipper.emit(ev);
  await shipper.flush(5000);
  const sub = tc.query.subscribe({ verdicts: ['deny'] });
  defer(t, () => sub.close());
  const it = sub[Symbol.asyncIterator]();
  await new Promise((r) => setTimeout(r, 100)); // the subscription is registered
  const noise = h.spawn(root, '/usr/bin/ls', ['ls']);
  const bad = h.spawn(root, '/usr/bin/nc', ['nc'], 'deny');
  const t0 = Date.now();
  shipper.emit(noise.event);
  shipper.emit(bad.event);
  const got = await it.next();
  const latency = Date.now() - t0;
  assert.equal(got.done, false);
  assert.equal((got.value as BridleEvent).exec_id, bad.proc.execId);
  assert.ok(latency < 1000, `latency ${latency} ms`);
  sub.close();
  assert.equal((await it.next()).done, true, 'close ends the iteration');
});

test('subscribe with backfill: stored events first, then live, no gap', async (t) => {
  const tc = await startTestCollector(t);
  const shipper = await shipperFor(t, tc, 'host-c');
  const h = new SyntheticHost('host-c');
  const inc = incidentSession(h, 's-bf');
  for (const ev of inc.events) shipper.emit(ev);
  await shipper.flush(5000);
  const sub = tc.query.subscribe({ session: 's-bf' }, { backfill: 5 });
  defer(t, () => sub.close());
  const it = sub[Symbol.asyncIterator]();
  const got: BridleEvent[] = [];
  for (let i = 0; i < 5; i++) got.push((await it.next()).value as BridleEvent);
  assert.deepEqual(got.map((e) => e.seq), inc.events.slice(-5).map((e) => e.seq));
  const extra = h.exit(inc.root, 0);
  shipper.emit(extra);
  const live = (await it.next()).value as BridleEvent;
  assert.equal(live.seq, extra.seq);
});

test('query API: refused without a credential, with a bad token, and with an agent certificate', async (t) => {
  const tc = await startTestCollector(t);
  // An agent certificate gets through TLS but is no query credential by itself.
  const agentOnly = tc.client({ tls: await tc.pki.agent('host-q') });
  await assert.rejects(agentOnly.sessions(), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED && /credential/.test(e.details));
  await assert.rejects(agentOnly.events(), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
  await assert.rejects(agentOnly.findProcesses({ path: 'x' }), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
  // A query-role certificate is a credential on its own.
  assert.deepEqual(await tc.client().hosts(), []);
  const badToken = tc.client({ tls: await tc.pki.agent('host-q'), token: 'brdl_wrong' });
  await assert.rejects(badToken.lineage('x'), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED && /not valid/.test(e.details));
  const sub = badToken.subscribe({});
  await assert.rejects(sub[Symbol.asyncIterator]().next(), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
  const withToken = tc.client({ tls: await tc.pki.agent('host-q'), token: tc.token });
  assert.deepEqual(await withToken.sessions(), []);
});

test('a certificate from another CA cannot connect', async (t) => {
  const tc = await startTestCollector(t);
  const other = await initPki(join(tempDir(t), 'other'));
  const rogue = await issueCert(other.dir, { role: 'agent', name: 'host-a' });
  const c = createQueryClient({ collector: tc.address, tls: { ...rogue, ca: tc.pki.ca }, token: tc.token, timeoutMs: 3000 });
  defer(t, () => c.close());
  await assert.rejects(c.sessions(), (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE);
});

/** A raw Ingest stream for protocol-level tests. */
function rawIngest(t: import('node:test').TestContext, address: string, tls: TlsFiles) {
  const client = new CollectorClient(address, channelCredentials(tls, false), {});
  defer(t, () => client.close());
  const call = (client as any).Ingest() as grpc.ClientDuplexStream<Buffer, WireIngestResponse>;
  const responses: WireIngestResponse[] = [];
  let error: grpc.ServiceError | undefined;
  call.on('data', (r: WireIngestResponse) => responses.push(r));
  call.on('error', (e: grpc.ServiceError) => (error = e));
  defer(t, () => call.cancel());
  return { call, responses, error: () => error };
}

test('a host certificate cannot write as another host', async (t) => {
  const tc = await startTestCollector(t);
  // 1. Hello as another host: the stream is refused.
  const a = rawIngest(t, tc.address, await tc.pki.agent('host-a'));
  a.call.write(encodeHelloRequest({ host: 'host-b' }));
  const err = await waitFor(() => a.error(), 5000, 'refusal');
  assert.equal(err.code, grpc.status.PERMISSION_DENIED);
  assert.match(err.details, /cannot write events as host 'host-b'/);

  // 2. Hello as itself, then an event claiming another host inside a batch: that event is refused.
  const b = rawIngest(t, tc.address, await tc.pki.agent('host-a'));
  b.call.write(encodeHelloRequest({ host: 'host-a' }));
  const h = new SyntheticHost('host-b');
  const { events } = h.startSession('spoof');
  const mine = { ...new SyntheticHost('host-a').startSession('own').events[1]!, seq: 2 } as BridleEvent;
  const forged = { ...events[0]!, seq: 1 } as BridleEvent;
  b.call.write(encodeBatchRequest(1, 2, [encodeEvent(forged), encodeEvent(mine)]));
  await waitFor(() => b.responses.find((r) => r.ack), 5000, 'ack');
  const ack = b.responses.find((r) => r.ack)!.ack!;
  assert.equal(ack.rejected, 1);
  assert.equal(ack.stored, 1);
  assert.match(ack.error ?? '', /host 'host-b' on a stream of host 'host-a'/);
  const stored = await tc.query.events({});
  assert.deepEqual(stored.map((e) => e.host), ['host-a']);
  const [hostRow] = await tc.query.hosts();
  assert.equal(hostRow?.rejected, 1);

  // 3. A query-role certificate cannot ingest at all.
  const q = rawIngest(t, tc.address, tc.pki.queryTls);
  q.call.write(encodeHelloRequest({ host: 'admin' }));
  assert.equal((await waitFor(() => q.error(), 5000, 'refusal')).code, grpc.status.PERMISSION_DENIED);
});

test('malformed and oversized messages are refused without harming the stream', async (t) => {
  const tc = await startTestCollector(t, { collector: { limits: { maxBatchBytes: 512 * 1024, maxEventBytes: 16 * 1024 } } });
  const s = rawIngest(t, tc.address, await tc.pki.agent('host-m'));
  s.call.write(encodeHelloRequest({ host: 'host-m' }));
  await waitFor(() => s.responses.find((r) => r.welcome), 5000, 'welcome');
  const h = new SyntheticHost('host-m');
  const { events } = h.startSession('m');
  const ev = (seq: number, extra: Partial<BridleEvent> = {}) => encodeEvent({ ...events[1]!, seq, ...extra } as BridleEvent);
  // 1. not protobuf at all
  s.call.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
  // 2. a batch with one garbage event and one good one
  s.call.write(encodeBatchRequest(1, 2, [Buffer.from('not an event'), ev(2)]));
  // 3. a batch with an oversized event (argv of 40 KiB) and a good one
  s.call.write(encodeBatchRequest(3, 4, [ev(3, { argv: ['x'.repeat(40 * 1024)] } as Partial<BridleEvent>), ev(4)]));
  // 4. an oversized batch (over 512 KiB)
  s.call.write(encodeBatchRequest(5, 64, Array.from({ length: 60 }, (_, i) => ev(5 + i, { argv: ['y'.repeat(10 * 1024)] } as Partial<BridleEvent>))));
  // 5. a good batch after all that
  s.call.write(encodeBatchRequest(100, 100, [ev(100)]));
  await waitFor(() => s.responses.filter((r) => r.ack).length === 5, 5000, '5 acks');
  const acks = s.responses.filter((r) => r.ack).map((r) => r.ack!);
  assert.deepEqual(acks.map((a) => [num(a.last_seq), a.stored ?? 0, a.rejected ?? 0]), [[0, 0, 1], [2, 1, 1], [4, 1, 1], [64, 0, 60], [100, 1, 0]]);
  assert.match(acks[0]!.error!, /malformed/);
  assert.match(acks[2]!.error!, /over the limit/);
  assert.match(acks[3]!.error!, /batch of \d+ bytes is over the limit/);
  assert.equal(s.error(), undefined, 'stream still open');
  assert.deepEqual((await tc.query.events({})).map((e) => e.seq), [2, 4, 100]);
  assert.equal((await tc.query.hosts())[0]?.rejected, 63);
});

test('events that would corrupt a host\'s trail are refused: sequence numbers that are no count, another host\'s process ids', async (t) => {
  const tc = await startTestCollector(t);
  const s = rawIngest(t, tc.address, await tc.pki.agent('host-q'));
  s.call.write(encodeHelloRequest({ host: 'host-q' }));
  await waitFor(() => s.responses.find((r) => r.welcome), 5000, 'welcome');
  const h = new SyntheticHost('host-q');
  const { root, events } = h.startSession('q');
  const other = new SyntheticHost('host-o');
  const foreign = other.startSession('o').root.execId;
  const ev = (seq: number, extra: Partial<BridleEvent> = {}) => encodeEvent({ ...events[1]!, seq, ...extra } as BridleEvent);
  s.call.write(encodeBatchRequest(1, 8, [
    ev(1),
    ev(0), // no number: could never be found a duplicate
    ev(2 ** 53 - 3), // the host's counter would stop counting up there
    ev(9), // past the batch's last
    ev(3, { exec_id: foreign }), // would rewrite another host's process
    ev(4, { parent_exec_id: foreign }),
    encodeEvent({ ...h.spawn(root, '/usr/bin/true', ['true']).event, seq: 5 }),
  ]));
  const ack = (await waitFor(() => s.responses.find((r) => r.ack), 5000, 'ack')).ack!;
  assert.deepEqual([ack.stored, ack.rejected], [2, 5]);
  assert.match(ack.error ?? '', /sequence number 0 is not between 1 and/);
  assert.deepEqual((await tc.query.events({})).map((e) => e.seq).sort(), [1, 5]);
  const [row] = await tc.query.hosts();
  assert.deepEqual([row?.rejected, num(row?.last_seq ?? 0)], [5, 5], 'the host\'s last number is what it really sent');
  const lin = await tc.query.findProcesses({ path: 'true' });
  assert.equal(lin.matches.length, 1);
});

test('one Ingest stream per host: a newer one takes over, the older is ended', async (t) => {
  const tc = await startTestCollector(t);
  const a = rawIngest(t, tc.address, await tc.pki.agent('host-d'));
  a.call.write(encodeHelloRequest({ host: 'host-d' }));
  await waitFor(() => a.responses.find((r) => r.welcome), 5000, 'first welcome');
  const b = rawIngest(t, tc.address, await tc.pki.agent('host-d'));
  b.call.write(encodeHelloRequest({ host: 'host-d' }));
  await waitFor(() => b.responses.find((r) => r.welcome), 5000, 'second welcome');
  const err = await waitFor(() => a.error(), 5000, 'the first stream ended');
  assert.equal(err.code, grpc.status.ABORTED);
  assert.match(err.details, /a newer stream of host 'host-d' took over/);
  const h = new SyntheticHost('host-d');
  b.call.write(encodeBatchRequest(1, 2, h.startSession('d').events.map((e, i) => encodeEvent({ ...e, seq: i + 1 }))));
  assert.equal((await waitFor(() => b.responses.find((r) => r.ack), 5000, 'ack')).ack!.stored, 2);
  assert.equal(b.error(), undefined, 'the newer stream stays open');
  assert.equal(tc.collector.stats().streams, 1);
});

test('finding processes by name takes the name as written: _ and % are no wildcards', async (t) => {
  const tc = await startTestCollector(t);
  const s = rawIngest(t, tc.address, await tc.pki.agent('host-l'));
  s.call.write(encodeHelloRequest({ host: 'host-l' }));
  const h = new SyntheticHost('host-l');
  const { root, events } = h.startSession('l');
  const all = [...events, h.spawn(root, '/usr/bin/git_x', ['git_x']).event, h.spawn(root, '/usr/bin/gitax', ['gitax']).event];
  s.call.write(encodeBatchRequest(1, all.length, all.map((e, i) => encodeEvent({ ...e, seq: i + 1 }))));
  await waitFor(() => s.responses.find((r) => r.ack), 5000, 'ack');
  assert.equal((await tc.query.findProcesses({ path: 'git_x' })).matches.length, 1, '_ matches only itself');
  assert.equal((await tc.query.findProcesses({ path: 'git%' })).matches.length, 0, '% matches only itself');
});

test('replayed batches are stored once', async (t) => {
  const tc = await startTestCollector(t);
  const s = rawIngest(t, tc.address, await tc.pki.agent('host-r'));
  s.call.write(encodeHelloRequest({ host: 'host-r' }));
  const h = new SyntheticHost('host-r');
  const inc = incidentSession(h, 'r');
  const raws = inc.events.map((e, i) => encodeEvent({ ...e, seq: i + 1 }));
  const batch = encodeBatchRequest(1, raws.length, raws);
  s.call.write(batch);
  s.call.write(batch);
  await waitFor(() => s.responses.filter((r) => r.ack).length === 2, 5000, 'acks');
  const acks = s.responses.filter((r) => r.ack).map((r) => r.ack!);
  assert.deepEqual(acks.map((a) => [a.stored ?? 0, a.duplicates ?? 0]), [[raws.length, 0], [0, raws.length]]);
  // A second stream after a reconnect learns the last seq in Welcome.
  const s2 = rawIngest(t, tc.address, await tc.pki.agent('host-r'));
  s2.call.write(encodeHelloRequest({ host: 'host-r' }));
  const w = await waitFor(() => s2.responses.find((r) => r.welcome), 5000, 'welcome');
  assert.equal(num(w.welcome!.last_seq), raws.length);
  const [sess] = await tc.query.sessions();
  assert.equal(sess?.events, raws.length, 'session counters not doubled by the replay');
});

test('a full spool counts the loss, reports it to the collector, and sessions show it', async (t) => {
  const tc = await startTestCollector(t);
  const dir = tempDir(t);
  // Point the shipper at a port nobody listens on, with a tiny spool, so it fills.
  const s1 = await createShipper({
    collector: '127.0.0.1:1', spoolDir: join(dir, 'spool'), host: 'host-l', tls: await tc.pki.agent('host-l'), maxSpoolBytes: 64 * 1024,
    log: quietLog(), lingerMs: 1,
  });
  const h = new SyntheticHost('host-l');
  const { root, events } = h.startSession('s-loss');
  for (const ev of events) s1.emit(ev);
  let emitted = events.length;
  for (let i = 0; i < 3000; i++) {
    s1.emit(h.spawn(root, '/usr/bin/true', ['true', 'x'.repeat(64)]).event);
    emitted++;
    if (i % 100 === 0) await new Promise((r) => setTimeout(r, 3));
  }
  await s1.flush(50);
  const st = s1.stats();
  assert.ok(st.lost > 0, 'some events lost');
  // Spooled also counts the shipper's own `loss` reports once the spool had room for one.
  assert.ok(st.lost + st.spooled >= emitted, 'every event is either spooled or counted lost');
  await s1.close();
  // Restart against the real collector: the spool replays and the loss is reported as an event.
  const s2 = await createShipper({ collector: tc.address, spoolDir: join(dir, 'spool'), host: 'host-l', tls: await tc.pki.agent('host-l'), log: quietLog() });
  defer(t, () => s2.close());
  await waitFor(async () => (await tc.query.hosts())[0]?.lost === st.lost, 10_000, 'loss reported');
  await s2.flush(5000);
  const losses = await tc.query.events({ types: ['loss'] });
  assert.equal(losses.reduce((n, e) => n + (e.type === 'loss' ? e.count : 0), 0), st.lost);
  const stored = await tc.query.events({ types: ['exec', 'session_start'] }, 100_000);
  assert.equal(stored.length + st.lost, emitted, 'stored + counted lost = emitted: nothing vanished silently');
  const [sess] = await tc.query.sessions();
  assert.equal(sess?.session, 's-loss');
});

test('insecure mode works only when asked for', async (t) => {
  await assert.rejects(
    import('../../src/collector/server.js').then((m) => m.startCollector({ listen: '127.0.0.1:0', dbPath: join(tempDir(t), 'x.db') })),
    /TLS is required/,
  );
  const tc = await startTestCollector(t, { insecure: true });
  const shipper = await createShipper({ collector: tc.address, spoolDir: join(tc.dir, 'sp'), host: 'plain', insecure: true, log: quietLog() });
  defer(t, () => shipper.close());
  const h = new SyntheticHost('plain');
  for (const ev of h.startSession('p').events) shipper.emit(ev);
  await shipper.flush(5000);
  assert.equal((await tc.query.events({})).length, 2);
  await assert.rejects(tc.client({ tls: 'none' }).sessions(), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
});
