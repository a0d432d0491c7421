// The process sensor: loads bpf/build/process.bpf.o, attaches its hooks, writes policies and tags into
// its maps and hands decoded ring-buffer records to one callback. Everything it holds is released by
// close(), which is idempotent; a process that dies without close() loses its links with its fds.
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../root.js';
import { LoadedObject } from './loaded.js';
import { tagIsLive } from './failclosed.js';
import { BpfObject, RingBuffer, type BpfMap } from './binding.js';
import { decode, decodeSeeds, HOOKS, LAYOUT, type RawRecord, type SeedRecord } from './layout.js';
import { cfgValue, type CompiledExec, type FileIdent } from '../policy/compile.js';

export const ROOT = REPO_ROOT;
export const PROCESS_OBJ = join(ROOT, 'bpf', 'build', 'process.bpf.o');
export const LSM_OBJ = join(ROOT, 'bpf', 'build', 'lsm.bpf.o');

export type Backend = 'bpf-lsm' | 'sigkill';

/** Every way to get a new descriptor for a named file: credentials.files.deny, and /proc peeks at other processes. */
const OPENED_PROGRAMS = [
  'bridle_opened_openat', 'bridle_opened_openat2', 'bridle_opened_open', 'bridle_opened_creat', 'bridle_opened_by_handle', 'bridle_opened_uring',
  // io_uring completions the hook above does not see: skipped (refused at submission) and overflowed
  'bridle_uring_submit', 'bridle_uring_overflow',
];
const PROGRAMS = [
  'bridle_fork', 'bridle_exec', 'bridle_exit', 'bridle_mmap', 'bridle_mprotect', 'bridle_pkey_mprotect', 'bridle_bpf_guard', 'bridle_ptrace_guard', 'bridle_vm_write_guard', 'bridle_vm_read_guard', 'bridle_pidfd_getfd_guard', 'bridle_ioctl_guard',
  // core dumps and perf events of processes outside the session, fanotify's descriptors
  'bridle_perf_guard', 'bridle_fanotify_guard', 'bridle_prlimit_guard', 'bridle_kill_guard', 'bridle_tkill_guard', 'bridle_tgkill_guard', 'bridle_sigqueue_guard', 'bridle_tgsigqueue_guard', 'bridle_pidfd_signal_guard',
  ...OPENED_PROGRAMS,
] as const;
/**
 * Tells an object (bpf/include/sensor.h: host_mnt_ns) the mount namespace bridle runs in (the host's,
 * where sessions start), whose mounts dir: walks take allow rules across.
 */
function setHostMountNs(obj: BpfObject): void {
  const m = /^mnt:\[(\d+)\]$/.exec(readlinkSync('/proc/self/ns/mnt'));
  if (!m) throw new Error('cannot read the mount namespace from /proc/self/ns/mnt');
  const b = Buffer.alloc(4);
  b.writeUInt32LE(Number(m[1]));
  obj.setGlobal('host_mnt_ns', b);
}

/** open(2)'s O_PATH (the same on x86-64 and arm64; node's constants leave it out). */
const O_PATH = 0o10000000;
/** Why a path has no identity (Sensor.identify): it leads nowhere, or nowhere bridle may look. */
const NO_FILE = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'EACCES', 'ENAMETOOLONG']);
/** Paths Sensor.identify holds open at once. */
const IDENTIFY_BATCH = 256;
/** bridle_fd_ident.fd of a record for a file beneath an overlay file (BRIDLE_FD_BENEATH in bridle.h). */
const FD_BENEATH = 0x80000000;
/** Without these there is no sensor; any other hook that will not attach is a warning. */
const REQUIRED = new Set<string>(['bridle_fork', 'bridle_exec', 'bridle_exit']);

export interface SensorOptions {
  obj?: string;
  /** Size of the event ring buffer in bytes (a power of two; default 16 MiB). */
  ringBytes?: number;
  /** Processes the tag table holds (default 65,536; tests make it small to fill it). */
  tagsMax?: number;
  /** How far JS may fall behind before the poller stops reading (then the kernel counts losses). */
  maxPendingBytes?: number;
  /** Called on the event loop with every decoded record, in ring-buffer order. */
  onRecord: (r: RawRecord) => void;
  /**
   * Records of other objects that write into this ring buffer (the net sensor reuses it, so a session's
   * connects and its session_end arrive in the order they happened), in the same order.
   */
  onOther?: (buf: Buffer) => void;
  /** Called when an optional hook could not attach. */
  onWarning?: (msg: string) => void;
}

export interface TagTarget {
  pid: number;
  start: bigint;
}

/**
 * How long a replaced generation's rules stay in the maps after the switch. A decision that read the old
 * policy entry a moment before the switch looks its rules up afterwards; BPF programs run for micro-
 * seconds (a preempted one for longer), so a second leaves a wide margin.
 */
export const DROP_DELAY_MS = 1000;

export class Sensor extends LoadedObject {
  private gens = new Map<number, { gen: number; compiled: CompiledExec }>();
  private nextGen = 1;
  /** Replaced generations whose rules go at `due` (ms, Date.now()), oldest first; one timer for all of them. */
  private retiring: Array<{ gen: number; compiled: CompiledExec; due: number }> = [];
  private retireTimer: NodeJS.Timeout | undefined;
  /** How denied execs are stopped: EPERM from BPF-LSM where the kernel allows it, else SIGKILL at exec. */
  backend: Backend = 'sigkill';
  /** Why BPF-LSM is not in use (when it is not). */
  lsmUnavailable = '';
  private lsm: BpfObject | undefined;

  private constructor(
    obj: BpfObject,
    private readonly opts: SensorOptions,
  ) {
    super(obj);
  }

  static open(opts: SensorOptions): Sensor {
    const path = opts.obj ?? PROCESS_OBJ;
    if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/build.sh (or npm run build)`);
    const obj = BpfObject.open(path);
    const s = new Sensor(obj, opts);
    try {
      if (opts.ringBytes) obj.setMaxEntries('events', opts.ringBytes);
      if (opts.tagsMax) obj.setMaxEntries('tags', opts.tagsMax);
      // the key of the path hash that ends a #! script wait (bpf/include/sensor.h): unknown to sessions
      obj.setGlobal('path_key', randomBytes(8));
      setHostMountNs(obj);
      obj.load();
      for (const name of PROGRAMS) {
        try {
          s.links.push(obj.program(name).attach());
          s.attached.push(name);
        } catch (err) {
          if (REQUIRED.has(name)) throw err;
          opts.onWarning?.(`optional hook ${name} not attached: ${(err as Error).message}`);
        }
      }
      if (process.env.BRIDLE_BACKEND !== 'sigkill') s.tryLsm();
      else s.lsmUnavailable = 'BRIDLE_BACKEND=sigkill';
      // never let bridle itself become a session through an agents: match
      s.exempt(process.pid);
      s.rb = new RingBuffer(
        obj.map('events'),
        (batch) => {
          for (const buf of batch) {
            const r = decode(buf);
            if (r) opts.onRecord(r);
            else opts.onOther?.(buf);
          }
        },
        opts.maxPendingBytes ? { maxPendingBytes: opts.maxPendingBytes } : {},
      );
    } catch (err) {
      s.closeSync();
      throw err;
    }
    return s;
  }

  /** Loads the BPF-LSM exec hook over the same maps; on a kernel that refuses it, stays with SIGKILL. */
  private tryLsm(): void {
    if (!existsSync(LSM_OBJ)) {
      this.lsmUnavailable = `${LSM_OBJ} missing`;
      return;
    }
    const lsm = BpfObject.open(LSM_OBJ);
    try {
      const mine = new Set(this.obj.maps());
      for (const m of lsm.maps()) if (!m.includes('.') && mine.has(m)) lsm.reuseMap(m, this.obj.map(m));
      setHostMountNs(lsm); // the exec decision there walks directories too
      lsm.load();
      this.links.push(lsm.program('bridle_lsm_exec').attach());
      this.lsm = lsm;
      this.backend = 'bpf-lsm';
      this.attached.push('bridle_lsm_exec');
    } catch (err) {
      const e = err as { code?: string; message: string };
      this.lsmUnavailable = `lsm/bprm_check_security refused: ${e.code ?? e.message.split('\n')[0]}`;
      lsm.close();
    }
  }

  exempt(pid: number): void {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(pid);
    this.map('exempt').update(k, Buffer.alloc(4));
  }

  /**
   * Installs `compiled` as policy `policyId` (stagePolicy, then commit). Returns the generation the
   * policy was installed under (records decided by it carry it).
   */
  applyPolicy(policyId: number, compiled: CompiledExec): number {
    const staged = this.stagePolicy(policyId, compiled);
    staged.commit();
    return staged.gen;
  }

  /**
   * Writes everything of `compiled` that can fail, without switching to it: its rules under a new
   * generation, and its agents: entries (new and changed keys only, so an agent's key is never absent
   * in between: an exec of it in that moment would start no session). On an error, what was written is
   * undone and the policy in force stays whole. `commit()` switches every session of the policy to it
   * in one map update and removes what the old one had alone; `abort()` undoes the staging (so does a
   * failure of the switch itself).
   */
  stagePolicy(policyId: number, compiled: CompiledExec): { gen: number; commit(): void; abort(): void } {
    const gen = this.nextGen++;
    const rekey = (key: Buffer) => {
      const k = Buffer.from(key);
      k.writeUInt32LE(gen, 0);
      return k;
    };
    const written: [BpfMap, Buffer][] = [];
    // agents: keys this staging wrote, with what they held before (null: absent)
    const replaced: [BpfMap, Buffer, Buffer | null][] = [];
    const undo = () => {
      for (const [m, k, old] of replaced.reverse()) {
        if (old) m.update(k, old);
        else m.delete(k);
      }
      for (const [m, k] of written) m.delete(k);
    };
    const prev = this.gens.get(policyId);
    const agentMaps = [
      [this.map('agent_names'), compiled.agents.names, prev?.compiled.agents.names ?? []],
      [this.map('agent_idents'), compiled.agents.idents, prev?.compiled.agents.idents ?? []],
    ] as const;
    const writeRules = () => {
      for (const [mapName, entries] of [
        ['exec_ident', compiled.ident],
        ['exec_dir', compiled.dirs],
        ['exec_argv', compiled.argv],
      ] as const) {
        const m = this.map(mapName);
        for (const e of entries) {
          const k = rekey(e.key);
          m.update(k, e.value);
          written.push([m, k]);
        }
      }
    };
    try {
      try {
        writeRules();
      } catch (err) {
        // The tables full of generations replaced moments ago (reloads in quick succession): those go
        // now, rather than fail the new policy, and the rules are written once more.
        const code = (err as { code?: string }).code;
        if (!this.retiring.length || (code !== 'E2BIG' && code !== 'ENOSPC' && code !== 'ENOMEM')) throw err;
        for (const [m, k] of written.splice(0)) m.delete(k);
        this.retireDue(Infinity);
        writeRules();
      }
      // agents: written over in place (keys carry no generation)
      for (const [m, entries] of agentMaps) {
        for (const e of entries) {
          const old = m.lookup(e.key);
          if (old?.equals(e.value)) continue;
          m.update(e.key, e.value);
          replaced.push([m, e.key, old]);
        }
      }
    } catch (err) {
      // nothing half applied: remove what this generation wrote, the old policy stays in force
      undo();
      throw err;
    }
    let done = false;
    return {
      gen,
      commit: () => {
        if (done) throw new Error('policy staging already committed or aborted');
        done = true;
        const idKey = Buffer.alloc(4);
        idKey.writeUInt32LE(policyId);
        try {
          this.map('policies').update(idKey, cfgValue(gen, compiled.cfg)); // the switch
        } catch (err) {
          undo();
          throw err;
        }
        this.gens.set(policyId, { gen, compiled });
        // agents: the keys the new policy no longer has go only now
        for (const [m, entries, before] of agentMaps) {
          const keep = new Set(entries.map((e) => e.key.toString('hex')));
          for (const e of before) if (!keep.has(e.key.toString('hex'))) m.delete(e.key);
        }
        // The old generation's rules stay a moment: a decision that read the old policy entry just
        // before the switch looks them up after it (dropped at once, it would fall to the default).
        if (prev) this.retire(prev.gen, prev.compiled);
      },
      abort: () => {
        if (done) throw new Error('policy staging already committed or aborted');
        done = true;
        undo();
      },
    };
  }

  /** Drops generation `gen` once decisions that started under it are over (DROP_DELAY_MS). */
  private retire(gen: number, compiled: CompiledExec): void {
    this.retiring.push({ gen, compiled, due: Date.now() + DROP_DELAY_MS });
    this.retireTimer ??= setTimeout(() => this.onRetireTimer(), DROP_DELAY_MS).unref();
  }

  private onRetireTimer(): void {
    this.retireTimer = undefined;
    if (this.closed) return;
    this.retireDue(Date.now());
    const next = this.retiring[0];
    if (next) this.retireTimer = setTimeout(() => this.onRetireTimer(), Math.max(0, next.due - Date.now())).unref();
  }

  /** Drops every retiring generation due by `now` (Infinity: all of them). */
  private retireDue(now: number): void {
    while (this.retiring.length && this.retiring[0]!.due <= now) {
      const r = this.retiring.shift()!;
      this.dropGeneration(r.gen, r.compiled);
    }
  }

  /** Generations replaced but still in the maps (their rules go DROP_DELAY_MS after the switch). */
  retiringGenerations(): number[] {
    return this.retiring.map((r) => r.gen);
  }

  private dropGeneration(gen: number, compiled: CompiledExec): void {
    for (const [mapName, entries] of [
      ['exec_ident', compiled.ident],
      ['exec_dir', compiled.dirs],
      ['exec_argv', compiled.argv],
    ] as const) {
      const m = this.map(mapName);
      for (const e of entries) {
        const k = Buffer.from(e.key);
        k.writeUInt32LE(gen, 0);
        m.delete(k);
      }
    }
  }

  compiled(policyId: number): CompiledExec | undefined {
    return this.gens.get(policyId)?.compiled;
  }

  /**
   * Removes policy `policyId` (no process is tagged with it any more): its config entry and agents: keys
   * at once, its rules DROP_DELAY_MS later like a replaced generation's. A process still tagged with it
   * would be decided by no policy (nothing matches but the fileless default), so callers check first.
   */
  removePolicy(policyId: number): void {
    const prev = this.gens.get(policyId);
    const idKey = Buffer.alloc(4);
    idKey.writeUInt32LE(policyId);
    this.map('policies').delete(idKey);
    this.gens.delete(policyId);
    if (!prev) return;
    for (const [m, entries] of [
      [this.map('agent_names'), prev.compiled.agents.names],
      [this.map('agent_idents'), prev.compiled.agents.idents],
    ] as const) {
      for (const e of entries) m.delete(e.key);
    }
    this.retire(prev.gen, prev.compiled);
  }

  /** Policy ids of live tagged processes (entries of processes that exited, or whose pid was reused, not counted). */
  policiesInUse(): Set<number> {
    const tf = LAYOUT.bridle_tag.fields;
    const out = new Set<number>();
    for (const [k, v] of this.map('tags').entries()) if (tagIsLive(k.readUInt32LE(0), v)) out.add(v.readUInt32LE(tf.policy));
    return out;
  }

  /**
   * What each path leads to (symlinks followed) as rule keys hold it, with the inode's generation, which
   * stat() does not give; undefined where nothing can be opened. The paths are opened (O_PATH: no read
   * access needed, nothing is read) in batches, and a file iterator made for this thread alone reports
   * every descriptor it holds. A path on an overlay also gets the identities beneath it (`beneath`: the
   * file that holds its data, or a directory's upper and lower directories), read from the overlay's
   * inode in the kernel.
   */
  identify(paths: string[]): Array<FileIdent | undefined> {
    const out: Array<FileIdent | undefined> = new Array(paths.length).fill(undefined);
    const F = LAYOUT.bridle_fd_ident;
    for (let i = 0; i < paths.length; i += IDENTIFY_BATCH) {
      const fds = new Map<number, number>(); // descriptor → index into paths
      try {
        for (let j = i; j < Math.min(i + IDENTIFY_BATCH, paths.length); j++) {
          try {
            fds.set(openSync(paths[j]!, O_PATH), j); // libuv adds O_CLOEXEC
          } catch (err) {
            // nothing there, or not reachable: no identity; anything else (out of descriptors) is an error
            if (!NO_FILE.has((err as NodeJS.ErrnoException).code ?? '')) throw err;
          }
        }
        if (!fds.size) continue;
        const b = this.obj.program('bridle_fd_idents').iterRead(process.pid);
        for (let o = 0; o + F.size <= b.length; o += F.size) {
          const fd = b.readUInt32LE(o + F.fields.fd);
          const j = fds.get(fd & ~FD_BENEATH);
          if (j === undefined) continue;
          const id: FileIdent = { dev: b.readBigUInt64LE(o + F.fields.dev), ino: b.readBigUInt64LE(o + F.fields.ino), generation: b.readUInt32LE(o + F.fields.generation) };
          // a file on an overlay: the files beneath it follow its own record
          if (!(fd & FD_BENEATH)) out[j] = id;
          else if (out[j]) (out[j]!.beneath ??= []).push(id);
        }
      } finally {
        for (const fd of fds.keys()) closeSync(fd);
      }
    }
    return out;
  }

  /** Every process now running, with its exact start time (BPF task iterator). */
  processes(): SeedRecord[] {
    return decodeSeeds(this.obj.program('bridle_seed_iter').iterRead());
  }

  /**
   * Tags processes as members of `session` under policy `policyId`. The session's live count is
   * written before the tags, so forks racing with this call are counted by the kernel.
   */
  tag(session: bigint, policyId: number, flags: number, targets: TagTarget[]): void {
    const sk = Buffer.alloc(8);
    sk.writeBigUInt64LE(session);
    const sf = LAYOUT.bridle_session.fields;
    const sv = Buffer.alloc(LAYOUT.bridle_session.size);
    const cur = this.map('sessions').lookup(sk);
    const live = (cur ? cur.readBigInt64LE(sf.live) : 0n) + BigInt(targets.length);
    sv.writeBigInt64LE(live, sf.live);
    sv.writeUInt32LE(policyId, sf.policy);
    sv.writeUInt32LE(flags, sf.flags);
    this.map('sessions').update(sk, sv);
    const tags = this.map('tags');
    const tf = LAYOUT.bridle_tag.fields;
    for (const t of targets) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(t.pid);
      const v = Buffer.alloc(LAYOUT.bridle_tag.size);
      v.writeBigUInt64LE(session, tf.session);
      v.writeUInt32LE(policyId, tf.policy);
      v.writeUInt32LE(flags, tf.flags);
      v.writeBigUInt64LE(t.start, tf.start);
      tags.update(k, v);
    }
  }

  /**
   * Sets or clears `flag` in the tag of every process of policy `policyId` (and in its sessions' entries),
   * e.g. monitor mode after a reload: verdicts read the tag, which a session's processes copy from their
   * creator at fork. A fork that copied a tag before this walk reached its creator is caught by the
   * next walk: walks repeat until one changes nothing (at most `passes`). Returns the tags changed.
   */
  setPolicyTagFlag(policyId: number, flag: number, on: boolean, passes = 8): number {
    const tf = LAYOUT.bridle_tag.fields;
    const sf = LAYOUT.bridle_session.fields;
    const tags = this.map('tags');
    const sessions = this.map('sessions');
    const want = (f: number) => (on ? f | flag : f & ~flag) >>> 0;
    let changed = 0;
    for (let pass = 0; pass < passes; pass++) {
      let now = 0;
      const seen = new Set<bigint>();
      for (const k of tags.keys()) {
        const v = tags.lookup(k);
        if (!v || v.readUInt32LE(tf.policy) !== policyId) continue;
        seen.add(v.readBigUInt64LE(tf.session));
        const f = v.readUInt32LE(tf.flags);
        if (f === want(f)) continue;
        v.writeUInt32LE(want(f), tf.flags);
        // BPF_EXIST: a process that exited meanwhile is not brought back
        try {
          tags.update(k, v, 'exist');
          now++;
        } catch (err) {
          if ((err as { code?: string }).code !== 'ENOENT') throw err;
        }
      }
      for (const s of seen) {
        const sk = Buffer.alloc(8);
        sk.writeBigUInt64LE(s);
        const sv = sessions.lookup(sk);
        if (!sv || sv.readUInt32LE(sf.flags) === want(sv.readUInt32LE(sf.flags))) continue;
        sv.writeUInt32LE(want(sv.readUInt32LE(sf.flags)), sf.flags);
        try {
          sessions.update(sk, sv, 'exist');
        } catch (err) {
          if ((err as { code?: string }).code !== 'ENOENT') throw err;
        }
      }
      changed += now;
      if (!now) break;
    }
    return changed;
  }

  /** The session a live process belongs to, if any. */
  tagOf(pid: number): { session: bigint; policy: number; flags: number } | undefined {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(pid);
    const v = this.map('tags').lookup(k);
    if (!v) return undefined;
    const tf = LAYOUT.bridle_tag.fields;
    return { session: v.readBigUInt64LE(tf.session), policy: v.readUInt32LE(tf.policy), flags: v.readUInt32LE(tf.flags) };
  }

  /** The current image of a live process as the kernel keys it (absent for processes older than the sensor). */
  imageOf(pid: number): { key: bigint; parentKey: bigint; parentPid: number; start: bigint } | undefined {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(pid);
    const v = this.map('procs').lookup(k);
    if (!v) return undefined;
    const f = LAYOUT.bridle_proc.fields;
    return { key: v.readBigUInt64LE(f.key), parentKey: v.readBigUInt64LE(f.parent_key), parentPid: v.readUInt32LE(f.parent_pid), start: v.readBigUInt64LE(f.start) };
  }

  /** Ring-buffer reservation failures per hook since load. */
  lost(): Record<string, number> {
    const out: Record<string, number> = {};
    HOOKS.forEach((h, i) => (out[h] = this.perCpuSum('lost', i)));
    return out;
  }

  protected override closeObjects(): void {
    // Replaced generations go now: pinned links (sessions still alive) keep these maps after we exit.
    clearTimeout(this.retireTimer);
    this.retireTimer = undefined;
    try {
      this.retireDue(Infinity);
    } catch {
      /* the maps are going with the object */
    }
    this.retiring = [];
    this.lsm?.close();
    this.obj.close();
  }
}
