/**
 * The native addon against the real kernel, with the fixture programs in test/fixtures/bpf (built by
 * scripts/build-bpf.sh). Needs root. Every program only reacts to this test process or its own
 * children (pids written into the fixture's `cfg` map), and every test checks afterwards that none of
 * its programs (bfx_*) is still loaded and none of its pins or cgroups remains, even when it failed.
 *
 *   node --import tsx --test test/kernel/native.test.ts
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import {
  BpfError,
  BpfObject,
  RingBuffer,
  createMap,
  libbpfVersion,
  liveResources,
  nativePath,
  openPinnedMap,
  probe,
} from '../../src/kernel/binding.js';
import { bridlePinDir, ensureBpffs, ensureTracefs, mountsOfType, removeBridlePinDir } from '../../src/kernel/bpffs.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = join(root, 'test/fixtures/bpf/build/fixture.bpf.o');
const BAD = join(root, 'test/fixtures/bpf/build/bad.bpf.o');
const PROG_PREFIX = 'bfx_';
const BURST_MAGIC = 0x20000000;
const CGROUP_ROOT = '/sys/fs/cgroup/unified';
const PIN_INSTANCE = `test-native-${process.pid}`;
const CG_NAME = `bridle-test-native-${process.pid}`;

// ---------------------------------------------------------------------------------------------------
// helpers

/** Names of loaded programs that belong to these tests. */
function ourPrograms(): string[] {
  const out = execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  const progs = JSON.parse(out) as Array<{ name?: string }>;
  return progs.map((p) => p.name ?? '').filter((n) => n.startsWith(PROG_PREFIX));
}

async function waitFor(cond: () => boolean, ms = 3000, step = 20): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, step));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}
function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

interface Cfg {
  parentTgid?: number;
  burstTgid?: number;
  denyPort?: number;
  iterTgid?: number;
}
function cfgValue(c: Cfg): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(c.parentTgid ?? 0, 0);
  b.writeUInt32LE(c.burstTgid ?? 0, 4);
  b.writeUInt32LE(c.denyPort ?? 0, 8);
  b.writeUInt32LE(c.iterTgid ?? 0, 12);
  return b;
}

/** The fixture's stats array: [dropped, emitted, connects, next burst seq]. */
function stats(o: BpfObject): bigint[] {
  const m = o.map('stats');
  return [0, 1, 2, 3].map((i) => m.lookup(u32(i))!.readBigUInt64LE(0));
}

/** Ask the burst program for n records (kill(MAGIC + n, 0) fails with ESRCH: no such pid). */
function burst(n: number): void {
  try {
    process.kill(BURST_MAGIC + n, 0);
    assert.fail('kill of the magic pid succeeded?');
  } catch (e) {
    assert.equal((e as NodeJS.ErrnoException).code, 'ESRCH');
  }
}

/** Everything a test opened, closed in after-hooks whether or not the test passed. */
class Scope {
  objects: BpfObject[] = [];
  rings: RingBuffer[] = [];
  closers: Array<() => void | Promise<void>> = [];

  open(path = FIXTURE, opts: Parameters<typeof BpfObject.open>[1] = {}): BpfObject {
    const o = BpfObject.open(path, opts);
    this.objects.push(o);
    return o;
  }
  ring(...args: ConstructorParameters<typeof RingBuffer>): RingBuffer {
    const r = new RingBuffer(...args);
    this.rings.push(r);
    return r;
  }
  async close(): Promise<void> {
    for (const r of this.rings) await r.close();
    for (const c of this.closers.reverse()) await c();
    for (const o of this.objects) o.close();
  }
}

let scope: Scope;
/** Whether /sys/fs/bpf/bridle was there before (a running agent's pins): then it is not ours to remove. */
let hadBridleDir = false;

// ---------------------------------------------------------------------------------------------------

describe('native addon (libbpf, real kernel)', () => {
  before(() => {
    assert.equal(process.getuid?.(), 0, 'these tests need root');
    assert.ok(existsSync(nativePath), `addon not built: ${nativePath} (scripts/build-native.sh)`);
    assert.ok(existsSync(FIXTURE), `fixture not built: ${FIXTURE} (scripts/build-bpf.sh)`);
    assert.deepEqual(ourPrograms(), [], 'bfx_* programs already loaded before the tests');
    hadBridleDir = existsSync('/sys/fs/bpf/bridle');
  });

  // Fresh scope per test; its cleanup runs first, then the leak check.
  afterEach(async () => {
    await scope?.close();
    const gone = await waitFor(() => ourPrograms().length === 0);
    assert.ok(gone, `programs still loaded after the test: ${ourPrograms().join(', ')}`);
    assert.ok(!existsSync(`/sys/fs/bpf/bridle/${PIN_INSTANCE}`), 'pin dir left behind');
    if (!hadBridleDir) assert.ok(!existsSync('/sys/fs/bpf/bridle'), '/sys/fs/bpf/bridle left behind');
    assert.ok(!existsSync(join(CGROUP_ROOT, CG_NAME)), 'test cgroup left behind');
    assert.equal(liveResources(), 0, 'addon still holds resources');
  });

  after(() => {
    // Last resort if a test died between creating and registering a resource.
    removeBridlePinDir(PIN_INSTANCE);
  });

  test('libbpf version and feature probes', () => {
    scope = new Scope();
    assert.match(libbpfVersion(), /^v1\.\d+/);
    assert.equal(ensureTracefs(), '/sys/kernel/tracing');
    assert.ok(mountsOfType('tracefs').includes('/sys/kernel/tracing'));
    assert.equal(probe.mapType('ringbuf'), true);
    assert.equal(probe.mapType('hash'), true);
    assert.equal(probe.progType('tracepoint'), true);
    assert.equal(probe.progType('cgroup_sock_addr'), true);
    assert.equal(probe.helper('tracepoint', 'bpf_send_signal'), true);
    assert.equal(probe.helper('tracing', 'bpf_send_signal'), true); // tp_btf
    assert.equal(probe.helper('cgroup_sock_addr', 'override_return'), false);
    assert.equal(probe.helper('tracepoint', 'bpf_get_current_pid_tgid'), true);
    assert.throws(() => probe.progType('no_such_type'), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');
    assert.throws(() => probe.helper('tracepoint', 'bpf_nope'), BpfError);
  });

  test('open of a missing file is a BpfError with ENOENT', () => {
    scope = new Scope();
    assert.throws(
      () => scope.open('/nonexistent/x.bpf.o'),
      (e: unknown) =>
        e instanceof BpfError && e.code === 'ENOENT' && e.errno === 2 && e.op.includes('bpf_object__open_file'),
    );
  });

  test('tp_btf program sees our own child exec: hash map entry and ring buffer record', async () => {
    scope = new Scope();
    const o = scope.open();
    assert.deepEqual(o.programs().sort(), ['bfx_burst', 'bfx_conn4', 'bfx_exec', 'bfx_iter']);
    assert.ok(o.maps().includes('events') && o.maps().includes('seen'));
    o.load();
    assert.ok(o.program('bfx_exec').fd > 0);
    assert.equal(o.program('bfx_exec').section, 'tp_btf/sched_process_exec');
    const link = o.program('bfx_exec').attach();
    assert.ok(link.fd > 0);
    assert.ok(ourPrograms().includes('bfx_exec')); // (bpftool runs before cfg names us: not recorded)
    o.map('cfg').update(u32(0), cfgValue({ parentTgid: process.pid }));

    const pids: number[] = [];
    const rb = scope.ring(o.map('events'), (recs) => {
      for (const r of recs) if (r.readUInt32LE(0) === 1) pids.push(r.readUInt32LE(4));
    });
    const child = spawnSync('/bin/true');
    assert.equal(child.status, 0);
    const seen = o.map('seen').lookup(u32(child.pid!));
    assert.ok(seen, 'no seen[] entry for our child');
    assert.equal(seen.readUInt32LE(0), 7, 'tag is the default tag_base');
    assert.equal(seen.readUInt32LE(4), process.pid);
    assert.equal(seen.readBigUInt64LE(8), 1n);
    assert.ok(await waitFor(() => pids.includes(child.pid!)), 'no ring buffer record for our child');
    // Only our children: a process we did not start never shows up.
    assert.ok(pids.every((p) => p === child.pid));
    await rb.close();
    link.close();
    assert.equal(link.fd, -1);
  });

  test('setGlobal changes behaviour; bad names, sizes and late calls fail', () => {
    scope = new Scope();
    const tags: number[] = [];
    for (const tag of [0x1234, 0xbeef]) {
      const o = scope.open();
      o.setGlobalU32('tag_base', tag);
      assert.throws(() => o.setGlobal('no_such_var', u32(1)), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
      assert.throws(() => o.setGlobal('tag_base', u64(1)), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');
      o.setAutoload('bfx_burst', false);
      o.setAutoload('bfx_conn4', false);
      o.setAutoload('bfx_iter', false);
      o.load();
      assert.throws(() => o.setGlobalU32('tag_base', 1), (e: unknown) => e instanceof BpfError && e.code === 'EBUSY');
      assert.equal(o.program('bfx_burst').fd, -1, 'autoload off: not loaded');
      o.map('cfg').update(u32(0), cfgValue({ parentTgid: process.pid }));
      const link = o.program('bfx_exec').attach();
      const child = spawnSync('/bin/true');
      tags.push(o.map('seen').lookup(u32(child.pid!))?.readUInt32LE(0) ?? -1);
      link.close();
      o.close();
    }
    assert.deepEqual(tags, [0x1234, 0xbeef]);
  });

  test('map CRUD, flags, keys, batch update, per-object and standalone maps', () => {
    scope = new Scope();
    const o = scope.open();
    o.setMaxEntries('seen', 64);
    o.load();
    const seen = o.map('seen');
    assert.equal(seen.typeName, 'hash');
    assert.equal(seen.keySize, 4);
    assert.equal(seen.valueSize, 16);
    assert.equal(seen.maxEntries, 64);
    const val = (tag: number) => Buffer.concat([u32(tag), u32(0), u64(0)]);

    assert.equal(seen.lookup(u32(1)), null);
    seen.update(u32(1), val(10));
    assert.equal(seen.lookup(u32(1))!.readUInt32LE(0), 10);
    assert.throws(() => seen.update(u32(1), val(11), 'noexist'), (e: unknown) => e instanceof BpfError && e.code === 'EEXIST');
    assert.throws(() => seen.update(u32(2), val(11), 'exist'), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
    seen.update(u32(1), val(12), 'exist');
    assert.equal(seen.lookup(u32(1))!.readUInt32LE(0), 12);
    assert.throws(() => seen.update(u32(1), u32(1)), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');
    assert.throws(() => seen.lookup(Buffer.alloc(3)), BpfError);

    const n = 50;
    const keys = Buffer.concat(Array.from({ length: n }, (_, i) => u32(100 + i)));
    const vals = Buffer.concat(Array.from({ length: n }, (_, i) => val(1000 + i)));
    assert.equal(seen.updateBatch(keys, vals, n), n);
    assert.equal(seen.lookup(u32(149))!.readUInt32LE(0), 1049);
    const all = seen.keys().map((k) => k.readUInt32LE(0)).sort((a, b) => a - b);
    assert.deepEqual(all, [1, ...Array.from({ length: n }, (_, i) => 100 + i)]);
    assert.equal(seen.entries().length, n + 1);
    for (let k = 0; seen.keys().length < seen.maxEntries; k++) seen.update(u32(5000 + k), val(k));
    assert.throws(() => seen.update(u32(999), val(1)), (e: unknown) => e instanceof BpfError && e.code === 'E2BIG');
    for (const k of seen.keys()) if (k.readUInt32LE(0) >= 5000) seen.delete(k);

    assert.equal(seen.delete(u32(1)), true);
    assert.equal(seen.delete(u32(1)), false);
    assert.equal(seen.lookup(u32(1)), null);

    // Array map: keys are indices, batch update too.
    const st = o.map('stats');
    assert.equal(st.updateBatch(Buffer.concat([u32(0), u32(1)]), Buffer.concat([u64(5), u64(6)]), 2), 2);
    assert.deepEqual(stats(o).slice(0, 2), [5n, 6n]);

    // A standalone map, and a per-CPU one (value = one 8-byte slot per possible CPU).
    const h = createMap('hash', 8, 8, 16, 'bfx_standalone');
    scope.closers.push(() => h.close());
    h.update(u64(1), u64(2));
    assert.equal(h.lookup(u64(1))!.readBigUInt64LE(0), 2n);
    const pc = createMap('percpu_array', 4, 4, 1, 'bfx_percpu');
    scope.closers.push(() => pc.close());
    assert.equal(pc.lookup(u32(0))!.length, pc.valueBytes);
    assert.ok(pc.valueBytes >= 8 && pc.valueBytes % 8 === 0);
    assert.throws(() => createMap('no_such_map_type', 4, 4, 1), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');

    h.close();
    assert.throws(() => h.lookup(u64(1)), (e: unknown) => e instanceof BpfError && e.code === 'EBADF');
  });

  test('reuseMap shares one map between two objects', () => {
    scope = new Scope();
    const a = scope.open(FIXTURE, { name: 'bfx_a' });
    a.load();
    const b = scope.open(FIXTURE, { name: 'bfx_b' });
    b.reuseMap('seen', a.map('seen'));
    for (const p of b.programs()) b.setAutoload(p, false);
    b.load();
    assert.equal(b.map('seen').id, a.map('seen').id, 'same kernel map');
    assert.notEqual(b.map('cfg').id, a.map('cfg').id, 'other maps are separate');
    a.map('seen').update(u32(42), Buffer.alloc(16, 1));
    assert.deepEqual(b.map('seen').lookup(u32(42)), Buffer.alloc(16, 1));
    assert.throws(() => b.reuseMap('seen', a.map('seen')), (e: unknown) => e instanceof BpfError && e.code === 'EBUSY');
  });

  test('ring buffer: 100k records paced through a small ring arrive complete, in order, event loop live', async () => {
    scope = new Scope();
    const o = scope.open();
    o.setAutoload('bfx_conn4', false);
    o.setAutoload('bfx_iter', false);
    o.load();
    o.map('cfg').update(u32(0), cfgValue({ burstTgid: process.pid }));
    scope.closers.push(() => link.close());
    const link = o.program('bfx_burst').attach();

    const TOTAL = 100_000;
    const CHUNK = 2_000; // 2000 * 24 bytes = 48 KiB per trigger; the ring is 256 KiB
    let received = 0;
    let outOfOrder = 0;
    let next = 0;
    let batches = 0;
    const rb = scope.ring(o.map('events'), (recs) => {
      batches++;
      for (const r of recs) {
        if (r.readUInt32LE(0) !== 2) continue;
        if (Number(r.readBigUInt64LE(8)) !== next) outOfOrder++;
        next = Number(r.readBigUInt64LE(8)) + 1;
        received++;
      }
    });

    let ticks = 0;
    let maxGap = 0;
    let last = performance.now();
    const iv = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 1);
    try {
      let emitted = 0;
      const deadline = Date.now() + 20_000;
      while (emitted < TOTAL && Date.now() < deadline) {
        // Pace the producer on what JS has received: a slow consumer must not make the kernel drop.
        if (emitted - received <= 4 * CHUNK) {
          burst(CHUNK);
          emitted += CHUNK;
        }
        await new Promise((r) => setImmediate(r));
      }
      assert.ok(await waitFor(() => received >= TOTAL, 10_000), `received ${received} of ${TOTAL}`);
    } finally {
      clearInterval(iv);
    }
    await rb.close();
    const [dropped, emittedK, , seq] = stats(o);
    assert.equal(dropped, 0n, 'kernel side dropped records');
    assert.equal(emittedK, BigInt(TOTAL));
    assert.equal(seq, BigInt(TOTAL));
    assert.equal(received, TOTAL);
    assert.equal(outOfOrder, 0);
    assert.ok(batches > 1, `expected many batches, got ${batches}`);
    assert.ok(ticks > 20, `event loop ticked only ${ticks} times`);
    assert.ok(maxGap < 500, `event loop blocked for ${maxGap.toFixed(0)} ms`);
    const s = rb.stats();
    assert.equal(s.records, TOTAL);
    assert.equal(s.closed, true);
  });

  test('ring buffer: one 100k burst into a large ring (setMaxEntries); close() drains what is pending', async () => {
    scope = new Scope();
    const o = scope.open();
    o.setMaxEntries('events', 8 << 20);
    o.setAutoload('bfx_conn4', false);
    o.setAutoload('bfx_iter', false);
    o.setAutoload('bfx_exec', false);
    o.load();
    o.map('cfg').update(u32(0), cfgValue({ burstTgid: process.pid }));
    const link = o.program('bfx_burst').attach();
    scope.closers.push(() => link.close());
    const seqs: number[] = [];
    const sizes: number[] = [];
    const rb = scope.ring(
      o.map('events'),
      (recs) => {
        sizes.push(recs.length);
        for (const r of recs) seqs.push(Number(r.readBigUInt64LE(8)));
      },
      { maxBatchRecords: 10_000 },
    );
    burst(100_000);
    // No waiting: close() must deliver everything the kernel already committed before resolving.
    await rb.close();
    assert.equal(seqs.length, 100_000);
    assert.ok(seqs.every((s, i) => s === i), 'out of order');
    assert.equal(stats(o)[0], 0n);
    assert.ok(sizes.every((n) => n > 0 && n <= 10_000), `batch sizes ${sizes.join(',')}`);
    await rb.close(); // idempotent
  });

  test('ring buffer: raw batches; an onBatch exception goes to onError and delivery goes on', async () => {
    scope = new Scope();
    const o = scope.open();
    o.setMaxEntries('events', 4 << 20);
    for (const p of ['bfx_conn4', 'bfx_iter', 'bfx_exec']) o.setAutoload(p, false);
    o.load();
    o.map('cfg').update(u32(0), cfgValue({ burstTgid: process.pid }));
    const link = o.program('bfx_burst').attach();
    scope.closers.push(() => link.close());
    let next = 0;
    let bad = 0;
    let calls = 0;
    const errors: unknown[] = [];
    const rb = RingBuffer.raw(
      o.map('events'),
      (data, offsets) => {
        calls++;
        for (let i = 0; i + 1 < offsets.length; i++) {
          assert.equal(offsets[i + 1]! - offsets[i]!, 16);
          if (Number(data.readBigUInt64LE(offsets[i]! + 8)) !== next) bad++;
          next++;
        }
        if (calls <= 2) throw new Error(`boom ${calls}`);
      },
      { maxBatchRecords: 1000, onError: (e) => errors.push(e) },
    );
    scope.rings.push(rb);
    burst(20_000);
    await rb.close();
    assert.equal(next, 20_000);
    assert.equal(bad, 0);
    assert.ok(calls >= 20, `calls ${calls}`);
    assert.deepEqual(
      errors.map((e) => (e as Error).message),
      ['boom 1', 'boom 2'],
    );
  });

  test('a verifier rejection is a BpfError with the verifier log', () => {
    scope = new Scope();
    const o = scope.open(BAD);
    let err: unknown;
    try {
      o.load();
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof BpfError, `expected BpfError, got ${String(err)}`);
    assert.match(err.op, /bpf_object__load/);
    assert.ok(['EACCES', 'EINVAL'].includes(err.code), err.code);
    assert.match(err.log, /map_value_or_null/);
    assert.match(err.message, /map_value_or_null/, 'log tail is in the message');
    assert.throws(() => o.load(), (e: unknown) => e instanceof BpfError && e.code === 'EBUSY');
    assert.deepEqual(ourPrograms(), []);
  });

  test('attachCgroup: connect4 on a cgroup we create applies only to its members', async () => {
    scope = new Scope();
    const cg = join(CGROUP_ROOT, CG_NAME);
    mkdirSync(cg);
    scope.closers.push(async () => {
      // The child has exited; the cgroup empties asynchronously.
      await waitFor(() => {
        try {
          rmdirSync(cg);
          return true;
        } catch {
          return !existsSync(cg);
        }
      });
    });
    const o = scope.open();
    o.setAutoload('bfx_burst', false);
    o.setAutoload('bfx_iter', false);
    o.load();
    const DENY = 39_999;
    o.map('cfg').update(u32(0), cfgValue({ denyPort: DENY }));
    const link = o.program('bfx_conn4').attachCgroup(cg);
    scope.closers.push(() => link.close());
    assert.equal(link.info().type, 'cgroup');

    // A child joins the cgroup, then tries two TCP connects to closed local ports.
    const script = `
      const fs = require('fs'); const net = require('net');
      fs.writeFileSync(${JSON.stringify(join(cg, 'cgroup.procs'))}, String(process.pid));
      const tryc = (port) => new Promise((res) => {
        const s = net.connect(port, '127.0.0.1');
        s.on('connect', () => { s.destroy(); res('connected'); });
        s.on('error', (e) => res(e.code));
      });
      (async () => { console.log(JSON.stringify([await tryc(${DENY}), await tryc(${DENY + 1})])); })();`;
    const out = await new Promise<string>((res, rej) => {
      const c = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let buf = '';
      c.stdout.on('data', (d) => (buf += d));
      c.on('error', rej);
      c.on('exit', () => res(buf));
    });
    assert.deepEqual(JSON.parse(out), ['EPERM', 'ECONNREFUSED']);
    assert.equal(stats(o)[2], 2n, 'both connects went through the hook');

    // We are not in that cgroup: our own connect is not seen.
    await new Promise<void>((res) => {
      import('node:net').then(({ connect }) => {
        const s = connect(DENY, '127.0.0.1');
        s.on('error', (e: NodeJS.ErrnoException) => {
          assert.equal(e.code, 'ECONNREFUSED');
          res();
        });
        s.on('connect', () => {
          s.destroy();
          res();
        });
      });
    });
    assert.equal(stats(o)[2], 2n);
  });

  test('link pin keeps a program attached after close; removing the pin unloads it', async () => {
    scope = new Scope();
    ensureBpffs();
    assert.ok(mountsOfType('bpf').includes('/sys/fs/bpf'));
    const dir = bridlePinDir(PIN_INSTANCE);
    scope.closers.push(() => removeBridlePinDir(PIN_INSTANCE));
    const o = scope.open();
    o.setAutoload('bfx_burst', false);
    o.setAutoload('bfx_conn4', false);
    o.setAutoload('bfx_iter', false);
    o.load();
    o.map('cfg').update(u32(0), cfgValue({ parentTgid: process.pid }));
    const link = o.program('bfx_exec').attach();
    link.pin(join(dir, 'exec_link'));
    o.map('seen').pin(join(dir, 'seen'));
    assert.equal(link.info().pinned, true);
    o.close();
    assert.equal(link.closed, true);

    // Still attached, through the pin: our child's exec is still recorded, in the pinned map.
    assert.ok(ourPrograms().includes('bfx_exec'));
    const child = spawnSync('/bin/true');
    const seen = openPinnedMap(join(dir, 'seen'));
    scope.closers.push(() => seen.close());
    assert.ok(seen.lookup(u32(child.pid!)), 'pinned program did not run');
    seen.close();
    assert.throws(() => openPinnedMap(join(dir, 'exec_link')), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');

    removeBridlePinDir(PIN_INSTANCE);
    assert.ok(!existsSync(dir));
    assert.ok(await waitFor(() => !ourPrograms().includes('bfx_exec')), 'program still loaded after unpin');

    // Pin then unpin on a live link: the pin file comes and goes, the link stays ours.
    const o2 = scope.open();
    o2.setAutoload('bfx_burst', false);
    o2.setAutoload('bfx_conn4', false);
    o2.setAutoload('bfx_iter', false);
    o2.load();
    const dir2 = bridlePinDir(PIN_INSTANCE);
    const l2 = o2.program('bfx_exec').attach();
    l2.pin(join(dir2, 'l2'));
    assert.ok(existsSync(join(dir2, 'l2')));
    l2.unpin();
    assert.ok(!existsSync(join(dir2, 'l2')));
    assert.ok(l2.fd > 0);
    removeBridlePinDir(PIN_INSTANCE);
  });

  test('iterRead runs an iter/task program', () => {
    scope = new Scope();
    const o = scope.open();
    o.setAutoload('bfx_burst', false);
    o.setAutoload('bfx_conn4', false);
    o.setAutoload('bfx_exec', false);
    o.load();
    o.map('cfg').update(u32(0), cfgValue({ iterTgid: process.pid }));
    const text = o.program('bfx_iter').iterRead().toString();
    const lines = text.trim().split('\n');
    const tids = lines.map((l) => Number(l.split(' ')[0]));
    assert.ok(tids.includes(process.pid), `our main thread is not in: ${text}`);
    assert.ok(lines.length >= 2, 'node has more than one thread');
  });

  test('env teardown closes what a worker left open, even mid-delivery (links, objects, ring buffer)', async () => {
    scope = new Scope();
    // The worker attaches and streams a burst we trigger (same tgid as ours) through a slow consumer,
    // then is terminated while batches are still queued for it.
    const code = `
      const { parentPort, workerData } = require('worker_threads');
      const n = require(workerData.native);
      const o = n.Object.__open(workerData.fixture);
      o.__setMaxEntries('events', 8 << 20);
      o.__load();
      o.__attach('bfx_exec');
      o.__attach('bfx_burst');
      const cfg = Buffer.alloc(16);
      cfg.writeUInt32LE(process.pid, 4);
      n.Map.__fromFd(o.__mapFd('cfg')).__update(Buffer.alloc(4), cfg, 0);
      const m = n.Map.__fromFd(o.__mapFd('events'));
      let got = 0;
      const rb = new n.RingBuffer(m, (d, offs) => {
        if (!offs) return;
        got += offs.length - 1;
        const end = Date.now() + 2;
        while (Date.now() < end);
      }, { maxBatchRecords: 500 });
      parentPort.postMessage(n.liveCount());
      setInterval(() => {}, 1000);`;
    for (let round = 0; round < 5; round++) {
      const w = new Worker(code, { eval: true, workerData: { native: nativePath, fixture: FIXTURE } });
      const live = await new Promise<number>((res, rej) => {
        w.once('message', res);
        w.once('error', rej);
      });
      assert.equal(live, 6, 'object, 2 links, 2 maps, ring buffer');
      assert.ok(ourPrograms().includes('bfx_exec'));
      burst(50_000);
      await sleep(round * 3);
      await w.terminate();
      assert.ok(await waitFor(() => ourPrograms().length === 0), 'worker teardown left programs loaded');
    }
  });

  test('closing is idempotent and GC-safe', async () => {
    scope = new Scope();
    const o = scope.open();
    o.load();
    const l = o.program('bfx_exec').attach();
    const m = o.map('seen');
    o.close();
    o.close();
    l.close();
    m.close();
    assert.throws(() => o.program('bfx_exec').attach(), BpfError);
    assert.throws(() => m.lookup(u32(1)), BpfError);
    // Objects dropped without close are released by their finalizers (GC on the main thread).
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    (() => {
      for (let i = 0; i < 3; i++) BpfObject.open(FIXTURE).load();
    })();
    assert.equal(liveResources(), 3);
    for (let i = 0; i < 20 && liveResources() > 0; i++) {
      gc();
      await sleep(20);
    }
    assert.equal(liveResources(), 0, 'finalizers did not release dropped objects');
  });
});
