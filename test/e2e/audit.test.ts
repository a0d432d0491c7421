// The audit trail end to end: a real session in the real kernel, its events shipped over gRPC with
// mutual TLS to a real collector, and the incident responder's questions answered from the store.
import assert from 'node:assert/strict';
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createShipper } from '../../src/agent/shipper.js';
import { HOST } from '../../src/agent/ids.js';
import type { BridleEvent, ExecEvent } from '../../src/events/types.js';
import { harness } from '../helpers/kernel.js';
import { quietLog, startTestCollector, waitFor } from '../collector/helpers.js';

test('a real session lands in the collector with its lineage, and a denial reaches a subscriber', async (t) => {
  const col = await startTestCollector(t);
  const h = harness(t, `version: 1
name: audit
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`);
  const shipper = await createShipper({
    collector: col.address,
    spoolDir: join(col.dir, 'spool'),
    host: HOST,
    tls: await col.pki.agent(HOST),
    log: quietLog(),
  });
  t.after(() => shipper.close());
  h.sup.engine.addSink(shipper);

  // a subscriber for violations, as `bridle events --follow --verdict deny` would be
  const sub = col.query.subscribe({ verdicts: ['deny'] });
  t.after(() => sub.close());
  const firstDenial = (async () => {
    for await (const ev of sub) return { ev, at: Date.now() };
    return undefined;
  })();
  await new Promise((r) => setTimeout(r, 200)); // the subscription is in place

  const r = await h.run(['sh', '-c', 'sh -c "id -u >/dev/null; wget --version >/dev/null 2>&1"; echo done']);
  assert.equal(r.stdout, 'done\n');
  const wget = r.events.find((e): e is ExecEvent => e.type === 'exec' && e.path === '/usr/bin/wget')!;
  const deniedAt = Date.now();

  const got = await Promise.race([firstDenial, new Promise<undefined>((res) => setTimeout(() => res(undefined), 3000))]);
  assert.ok(got, 'the subscriber saw the denial');
  assert.equal(got.ev.exec_id, wget.exec_id);
  assert.ok(got.at - deniedAt < 1000, `seen within a second (${got.at - deniedAt} ms after the run returned)`);

  await shipper.flush(5000);
  assert.equal(shipper.stats().lost, 0);
  const lineage = await waitFor(() => col.query.lineage(wget.exec_id), 5000, 'lineage of the denied exec');
  const byRel = (rel: string) => lineage.processes.filter((p) => p.relation === rel).map((p) => p.path);
  assert.deepEqual(byRel('target'), ['/usr/bin/wget']);
  // ancestors up to the session's root: the inner sh, then the outer sh (the session's command)
  const sh = realpathSync('/bin/sh'); // the program that ran, as the kernel resolves it
  assert.deepEqual(byRel('ancestor'), [sh, sh]);
  const self = lineage.processes.find((p) => p.relation === 'target')!;
  assert.ok(self.events.some((e: BridleEvent) => e.type === 'exec' && e.verdict === 'deny' && e.rule === 'exec.deny[0]'));
  assert.ok(self.events.some((e: BridleEvent) => e.type === 'exit' && e.signal === 9));

  const sessions = await col.query.sessions({ session: wget.session });
  assert.equal(sessions.length, 1);
  assert.equal(sessions[0]!.policy, 'audit');
  assert.equal(sessions[0]!.origin, 'run');
  assert.equal(sessions[0]!.host, HOST);
  await shipper.close(); // before the collector's directory (the spool's parent) is removed
});
