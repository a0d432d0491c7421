// A policy replaced in the kernel: the old generation's rules stay a moment after the switch (a decision
// that read the old policy entry just before it looks them up after), then go; close() removes them all.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { waitFor } from '../../src/agent/run.js';
import { loadState } from '../../src/kernel/failclosed.js';
import { DROP_DELAY_MS } from '../../src/kernel/sensor.js';
import { parsePolicy } from '../../src/policy/load.js';
import { harness } from '../helpers/kernel.js';

const policy = (name: string) => `version: 1
name: ${name}
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }, { dir: /usr/games }, { argv: [git, push, --force] }]
`;

test('a replaced generation keeps its rules for a moment after the switch, then they go; reloads in a row keep one timer; close() removes what is left', async (t) => {
  const h = harness(t, policy('a'));
  const sensor = h.sup.sensor;
  // the generations that have entries in the rule tables now (the key's first field is the generation)
  const gensInMaps = () => {
    const out = new Set<number>();
    for (const name of ['exec_ident', 'exec_dir', 'exec_argv']) for (const k of sensor.map(name).keys()) out.add(k.readUInt32LE(0));
    return out;
  };
  const [first] = [...gensInMaps()];
  assert.ok(first !== undefined && gensInMaps().size === 1, 'one generation');

  h.sup.setPolicy(parsePolicy(policy('b'), 'b.yaml'));
  const second = Math.max(...gensInMaps());
  assert.notEqual(second, first);
  assert.deepEqual([...gensInMaps()].sort(), [first, second], "right after the switch the old generation's rules are still there");
  // the state a successor would read names both generations: records of either may be in the ring buffer
  assert.ok(h.sup.pins, `the supervisor pinned its links: ${h.sup.warnings.join('; ')}`);
  assert.deepEqual(loadState(h.sup.pins)?.exec.map((g) => g.gen).sort(), [first, second]);
  assert.ok(await waitFor(() => !gensInMaps().has(first), DROP_DELAY_MS + 2000), 'gone after the delay');
  assert.deepEqual([...gensInMaps()], [second]);

  // reloads in quick succession: one timer for all of them, every replaced generation goes, the one in force stays
  const timers = new Set<unknown>();
  for (let i = 0; i < 20; i++) {
    h.sup.setPolicy(parsePolicy(policy(`c${i}`), 'c.yaml'));
    timers.add(sensor['retireTimer']);
  }
  assert.equal(timers.size, 1, 'one timer, however many reloads');
  assert.equal(sensor.retiringGenerations().length, 20);
  const last = Math.max(...gensInMaps());
  assert.ok(await waitFor(() => gensInMaps().size === 1, DROP_DELAY_MS + 3000));
  assert.deepEqual([...gensInMaps()], [last]);
  assert.equal(sensor['retireTimer'], undefined, 'no timer left once nothing waits');

  // replaced just before close: close drops it with the rest (a pinned program could keep the maps)
  h.sup.setPolicy(parsePolicy(policy('d'), 'd.yaml'));
  assert.deepEqual(sensor.retiringGenerations(), [last]);
  const dropped: number[] = [];
  const drop = sensor['dropGeneration'].bind(sensor);
  sensor['dropGeneration'] = (gen, compiled) => {
    const before = gensInMaps().has(gen);
    drop(gen, compiled);
    if (before && !gensInMaps().has(gen)) dropped.push(gen);
  };
  await h.sup.close();
  assert.deepEqual(dropped, [last], 'its entries deleted from the maps before they closed');
  assert.deepEqual(sensor.retiringGenerations(), []);
  assert.equal(sensor['retireTimer'], undefined);
});

test('network rules of a replaced policy stay a moment after the switch too, then go', async (t) => {
  const net = (name: string, cidr: string) => `version: 1
name: ${name}
network:
  default: deny
  allow: [{ cidr: ${cidr} }]
`;
  const h = harness(t, net('n1', '127.0.0.1/32'));
  const ns = h.sup.net?.net;
  assert.ok(ns, 'the network sensor is open');
  const gens = () => new Set([...ns.map('net_allow').keys()].map((k) => k.readUInt32LE(4))); // prefixlen, then gen
  const [first] = [...gens()];
  assert.equal(gens().size, 1);
  h.sup.setPolicy(parsePolicy(net('n2', '127.0.0.2/32'), 'n2.yaml'));
  assert.equal(gens().size, 2, "right after the switch the old generation's rules are still there");
  assert.ok(await waitFor(() => !gens().has(first!), DROP_DELAY_MS + 2000), 'gone after the delay');
  assert.equal(gens().size, 1);

  // replaced just before close: close drops it with the rest (a pinned program could keep the maps), and
  // its timer does not fire later against closed maps
  const [second] = [...gens()];
  h.sup.setPolicy(parsePolicy(net('n3', '127.0.0.3/32'), 'n3.yaml'));
  assert.deepEqual(ns.retiringGenerations(), [second]);
  const dropped: number[] = [];
  let drops = 0;
  const drop = ns['drop'].bind(ns);
  ns['drop'] = (w) => {
    drops++;
    const before = gens().has(w.gen);
    drop(w);
    if (before && !gens().has(w.gen)) dropped.push(w.gen);
  };
  await h.sup.close();
  assert.deepEqual(dropped, [second], 'its entries deleted from the maps before they closed');
  assert.deepEqual(ns.retiringGenerations(), []);
  const after = drops;
  await new Promise((res) => setTimeout(res, DROP_DELAY_MS + 300));
  assert.equal(drops, after, 'no timer fired after close');
});
