// Fail closed: a session that kills its supervisor (here, root killing `bridle run`) stays governed by the
// pinned programs; a dead supervisor's pins are reaped only once nothing it tagged is alive.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../../src/agent/run.js';
import { Supervisor } from '../../src/agent/supervisor.js';
import { openPinnedMap } from '../../src/kernel/binding.js';
import { BPFFS } from '../../src/kernel/bpffs.js';
import { reapOrphans, STATE_DIR, taggedByDeadSupervisor } from '../../src/kernel/failclosed.js';
import { Adopter } from '../../src/agent/adopt.js';
import type { BridleEvent, ConnectEvent, ExecEvent } from '../../src/events/types.js';
import { alive, BIN, endThenReap, loadedProgramIds, tempDir } from '../helpers/kernel.js';
import { tcpServer } from '../net/helpers.js';

const pinDirOf = (pid: number): string | undefined => {
  try {
    return readdirSync(join(BPFFS, 'bridle')).find((n) => n.startsWith(`sup-${pid}-`));
  } catch {
    return undefined;
  }
};


test('a supervisor pins its links while it runs and removes the pins when it closes', async () => {
  const sup = Supervisor.open();
  try {
    const dir = pinDirOf(process.pid);
    assert.ok(dir, 'pin directory of this supervisor');
    const pins = readdirSync(join(BPFFS, 'bridle', dir));
    assert.ok(pins.includes('tags'), 'tag table pinned');
    assert.ok(pins.some((p) => p.endsWith('-bridle_exec')), `exec hook pinned (${pins.join(', ')})`);
    if (sup.net) assert.ok(pins.some((p) => p.includes('connect4')), 'network hooks pinned');
    assert.deepEqual(reapOrphans().removed.filter((n) => n === dir), [], 'a live supervisor is never reaped');
  } finally {
    await sup.close();
  }
  assert.equal(pinDirOf(process.pid), undefined, 'no pins left after close');
});

test('a session that kills bridle stays governed in the kernel; the pins go once the session is over', async (t) => {
  const dir = tempDir(t);
  const allowed = await tcpServer(t, '127.0.0.1');
  const denied = await tcpServer(t, '127.0.0.2');
  const before = loadedProgramIds();
  const policy = join(dir, 'p.yaml');
  writeFileSync(
    policy,
    `version: 1
name: failclosed
agents: [{ name: fake-agent, match: { exe: [bridle-test-fake-agent] } }]
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
network:
  default: deny
  allow: [{ cidr: 127.0.0.1/32 }]
`,
  );
  const out = join(dir, 'out');
  // The session kills the supervisor ($PPID is `bridle run`), then tries a denied program and a denied
  // connect, records what happened, and waits to be ended by the test.
  const script = `echo $$ > ${dir}/pid; kill -9 $PPID; while kill -0 $PPID 2>/dev/null; do sleep 0.05; done
wget --version >/dev/null 2>&1; echo "wget=$?" >> ${out}
(exec 3<>/dev/tcp/127.0.0.1/${allowed}) 2>/dev/null; echo "allowed=$?" >> ${out}
(exec 3<>/dev/tcp/127.0.0.2/${denied}) 2>> ${dir}/err; echo "denied=$?" >> ${out}
echo done >> ${out}; exec sleep 60`;
  const bridle = spawn(BIN, ['run', '--policy', policy, '--', '/bin/bash', '-c', script], { stdio: 'ignore' });
  let session = 0;
  t.after(() => endThenReap([bridle], session, bridle.pid));
  const died = new Promise<NodeJS.Signals | null>((res) => bridle.on('exit', (_c, s) => res(s)));
  assert.equal(await died, 'SIGKILL', 'the session killed bridle');
  assert.ok(await waitFor(() => existsSync(out) && readFileSync(out, 'utf8').includes('done'), 10_000), 'the session ran its script');
  session = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  const lines = readFileSync(out, 'utf8').trim().split('\n');
  assert.deepEqual(lines, ['wget=137', 'allowed=0', 'denied=1', 'done'], 'exec and network rules still hold after bridle died');
  assert.match(readFileSync(join(dir, 'err'), 'utf8'), /not permitted/, 'the denied connect failed with EPERM');

  // While the session lives, its dead supervisor's pins are kept, and it starts no new sessions.
  const instance = pinDirOf(bridle.pid!);
  assert.ok(instance, 'the dead supervisor left its pins');
  const agentNames = (): number => {
    const m = openPinnedMap(join(BPFFS, 'bridle', instance, 'agent_names'));
    try {
      return m.keys().length;
    } finally {
      m.close();
    }
  };
  assert.equal(agentNames(), 0, 'a standalone bridle run installs no agents: entries');
  // as a dead `bridle agent` would have left: an entry (nargv 0, a hash no name has: it matches nothing)
  const names = openPinnedMap(join(BPFFS, 'bridle', instance, 'agent_names'));
  try {
    names.update(randomBytes(names.keySize), Buffer.alloc(names.valueSize));
  } finally {
    names.close();
  }
  assert.equal(agentNames(), 1);
  const kept = reapOrphans();
  assert.deepEqual(kept.removed, []);
  const orphan = kept.kept.find((o) => o.instance === instance);
  assert.equal(orphan?.pid, bridle.pid);
  assert.ok((orphan?.live ?? 0) >= 1, 'the session process is counted as governed');
  assert.ok(existsSync(join(BPFFS, 'bridle', instance)));
  assert.equal(agentNames(), 0, 'a dead supervisor starts no new sessions');

  // What the session did with nobody reading is in the pinned ring buffer: a successor reads it, with
  // the rules named from the tables the dead supervisor saved.
  const seen: BridleEvent[] = [];
  const adopter = new Adopter([{ emit: (e) => seen.push(e) }]);
  t.after(() => adopter.close());
  assert.ok(adopter.adopt().includes(instance), 'the successor reads the dead supervisor\'s ring buffer');
  const wgetEv = (): ExecEvent | undefined => seen.find((e): e is ExecEvent => e.type === 'exec' && e.path === '/usr/bin/wget');
  const deniedEv = (): ConnectEvent | undefined => seen.find((e): e is ConnectEvent => e.type === 'connect' && e.daddr === '127.0.0.2');
  assert.ok(await waitFor(() => !!wgetEv() && !!deniedEv(), 5000), `events recovered: ${seen.map((e) => e.type).join(', ')}`);
  assert.equal(wgetEv()?.verdict, 'deny');
  assert.equal(wgetEv()?.rule, 'exec.deny[0]');
  assert.equal(wgetEv()?.policy, 'failclosed');
  assert.equal(deniedEv()?.verdict, 'deny');
  assert.equal(deniedEv()?.rule, 'network.default');
  assert.equal(wgetEv()?.session, deniedEv()?.session);

  // Records the kernel could not put in the dead supervisor's full ring buffer are counted in its pinned
  // counters; the successor reports them, once. (Drops are made here by adding to the counters, as the
  // kernel does: filling 16 MiB of ring buffer would take the test seconds of connects.)
  const bump = (name: string, slot: number, n: number): void => {
    const m = openPinnedMap(join(BPFFS, 'bridle', instance, name));
    try {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(slot);
      const v = m.lookup(k)!;
      v.writeBigUInt64LE(v.readBigUInt64LE(0) + BigInt(n), 0);
      m.update(k, v);
    } finally {
      m.close();
    }
  };
  bump('lost', 0, 5); // exec
  bump('net_lost', 1, 7);
  await adopter.sweep();
  const losses = (): string[] => seen.filter((e) => e.type === 'loss').map((e) => `${(e as { where: string }).where}=${(e as { count: number }).count}`);
  assert.deepEqual(losses().sort(), ['kernel:exec=5', 'kernel:network=7']);
  bump('lost', 0, 2);
  await adopter.sweep();
  assert.deepEqual(losses().sort(), ['kernel:exec=2', 'kernel:exec=5', 'kernel:network=7'], 'each drop reported once');

  // Once the session is over, the next reap delivers the rest, removes the pins, and the programs leave
  // the kernel.
  process.kill(session, 'SIGKILL');
  assert.ok(await waitFor(() => !alive(session), 5000), 'the session process ended');
  assert.ok(await waitFor(() => seen.some((e) => e.type === 'exit' && e.pid === session), 5000), 'its exit is read too');
  const gone = (await adopter.sweep()).removed;
  assert.ok(gone.includes(instance), 'pins of the finished orphan removed');
  assert.deepEqual(adopter.instances, []);
  assert.ok(!existsSync(join(STATE_DIR, `${instance}.json`)), 'its saved rule tables go with the pins');
  assert.equal(pinDirOf(bridle.pid!), undefined);
  // Programs are freed after an RCU grace period: give the kernel a moment.
  await waitFor(() => [...loadedProgramIds()].every((id) => before.has(id)), 5000);
  const left = [...loadedProgramIds()].filter((id) => !before.has(id));
  assert.deepEqual(left, [], 'no program of the dead supervisor is still loaded');
});

test('processes a session leaves running when `bridle run` returns stay governed until they exit', async (t) => {
  const dir = tempDir(t);
  const policy = join(dir, 'p.yaml');
  writeFileSync(policy, `version: 1
name: leftover
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`);
  const out = join(dir, 'out');
  // The command starts a background process in a new session and exits at once.
  const bg = `echo $$ > ${dir}/pid; while [ ! -e ${dir}/go ]; do sleep 0.05; done; wget --version >/dev/null 2>&1; echo "wget=$?" > ${out}; exec sleep 60`;
  const bridle = spawn(BIN, ['run', '--policy', policy, '--events', join(dir, 'events.ndjson'), '--', '/bin/sh', '-c', `setsid /bin/sh -c '${bg}' </dev/null >/dev/null 2>&1 & exit 0`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  bridle.stderr!.on('data', (d) => (stderr += d));
  let leftover = 0;
  t.after(() => endThenReap([bridle], leftover, bridle.pid));
  const code = await new Promise<number | null>((res) => bridle.on('exit', (c) => res(c)));
  assert.equal(code, 0, stderr);
  // the background shell may not have written its pid yet when bridle run returns
  assert.ok(await waitFor(() => existsSync(join(dir, 'pid')), 5000), 'the background process started');
  leftover = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  assert.ok(alive(leftover), 'the background process outlived bridle run');
  assert.match(stderr, /bridle: \d+ process\(es\) of the session are still running/);
  const instance = pinDirOf(bridle.pid!);
  assert.ok(instance, 'bridle run kept its pins');
  // the leftover is in a session of a dead supervisor (what a restarted agent's control socket refuses)
  assert.equal(taggedByDeadSupervisor(leftover), true);
  assert.equal(taggedByDeadSupervisor(process.pid), false);
  // Only now, with bridle gone, does the leftover try the denied program.
  writeFileSync(join(dir, 'go'), '');
  assert.ok(await waitFor(() => existsSync(out), 5000));
  assert.equal(readFileSync(out, 'utf8').trim(), 'wget=137', 'still denied after bridle run returned');
  process.kill(leftover, 'SIGKILL');
  assert.ok(await waitFor(() => !alive(leftover), 5000));
  assert.equal(taggedByDeadSupervisor(leftover), false, 'an exited process is in no session');
  assert.ok(reapOrphans().removed.includes(instance));
});
