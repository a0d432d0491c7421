// Nothing is lost silently: when the ring buffer overflows, every record the kernel could not reserve
// is counted per hook, and the supervisor turns the count into a `loss` event.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Supervisor } from '../../src/agent/supervisor.js';
import { waitFor } from '../../src/agent/run.js';
import { parsePolicy } from '../../src/policy/load.js';
import type { BridleEvent } from '../../src/events/types.js';

test('ring-buffer overflow is counted per hook and reported as a loss event; counts add up', async (t) => {
  // a tiny ring (8 KiB) and a consumer that stops reading after 4 KiB pending
  const sup = Supervisor.open({ ringBytes: 8192, maxPendingBytes: 4096 });
  t.after(() => sup.close());
  sup.setPolicy(parsePolicy('version: 1\nname: loss\nexec: { default: allow }\n', 'loss.yaml'));
  const events: BridleEvent[] = [];
  sup.engine.addSink({ emit: (e) => events.push(e) });

  const N = 300;
  const { held, session } = sup.run(['sh', '-c', `for i in $(seq ${N}); do /bin/true; done`], { stdio: 'pipe', env: { PATH: '/usr/bin:/bin' } });
  // hold the event loop while the session runs: records pile up in the kernel ring
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
  const { status } = await held.exited;
  assert.equal(status, 0);
  await waitFor(() => false, 300); // let the backlog drain

  const lost = sup.reportLoss();
  assert.ok((lost.exec ?? 0) > 0, `exec records were lost under pressure (${JSON.stringify(lost)})`);
  const name = [...sup.engine.sessions.values()].find((s) => s.session === session)?.name;
  const seen = events.filter((e) => e.type === 'exec' && e.session === name).length;
  // sh (the command) + seq + N × true: every exec is either delivered or counted
  assert.equal(seen + lost.exec!, N + 2, `delivered ${seen} + lost ${lost.exec} = every exec`);
  const loss = events.filter((e) => e.type === 'loss');
  assert.ok(loss.some((e) => e.type === 'loss' && e.where === 'kernel:exec' && e.count === lost.exec));
  // a second report only reports what is new
  assert.deepEqual(sup.reportLoss(), {});
});
