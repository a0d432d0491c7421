// Backend selection: BPF-LSM where the kernel accepts it, SIGKILL at exec otherwise — decided by
// trying, and reported the same way by the sensor, session_start and doctor.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BpfObject } from '../../src/kernel/binding.js';
import { LSM_OBJ } from '../../src/kernel/sensor.js';
import { harness } from '../helpers/kernel.js';

function lsmLoadsHere(): boolean {
  const o = BpfObject.open(LSM_OBJ);
  try {
    o.load();
    return true;
  } catch {
    return false;
  } finally {
    o.close();
  }
}

test('the sensor uses BPF-LSM exactly when the kernel accepts the LSM program, and says so', async (t) => {
  const expected = lsmLoadsHere() ? 'bpf-lsm' : 'sigkill';
  const h = harness(t, 'version: 1\nname: t\nexec:\n  default: allow\n  deny: [{ path: /usr/bin/wget }]\n');
  assert.equal(h.sup.sensor.backend, expected);
  if (expected === 'sigkill') assert.match(h.sup.sensor.lsmUnavailable, /refused/);
  const r = await h.run(['sh', '-c', 'wget --version >/dev/null 2>&1; echo "wget=$?"']);
  const start = r.events.find((e) => e.type === 'session_start') as { backend?: string } | undefined;
  assert.equal(start?.backend, expected);
  // either way the denied program never runs: EPERM (126 from sh) or SIGKILL (137)
  assert.match(r.stdout, expected === 'bpf-lsm' ? /^wget=126\n$/ : /^wget=137\n$/);
});
