/**
 * Typed wrapper over the native libbpf addon (native/, built by scripts/build-native.sh).
 *
 * Loader steps, in order: `BpfObject.open` → configure (`setGlobal`, `reuseMap`, `setMaxEntries`,
 * `setAutoload`) → `load` → `program(x).attach()` / `attachCgroup()` → `new RingBuffer(map, onBatch)`.
 * Every failure is a `BpfError` carrying `errno`, `code` ('EPERM', …), `op` (the libbpf call) and, for
 * loads, `log` (libbpf's output including the verifier log; its tail is also in `message`).
 *
 * Resources are objects you close: `BpfObject.close()` detaches the links it made (pinned links stay),
 * `BpfMap.close()` releases its fd, `RingBuffer.close()` resolves after the last batch was delivered.
 * Anything left open is closed when the addon's environment shuts down (process or worker exit).
 * Everything here runs on the JS main thread except the ring buffer's poller (in C++).
 */
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { existsSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { REPO_ROOT } from '../root.js';

import { ensureTracefs } from './bpffs.js';

// ---------------------------------------------------------------------------------------------------
// Raw binding (the shape of native/src/*.cc). Only this file touches it.

interface RawProgramInfo {
  name: string;
  section: string;
  type: string;
  autoload: boolean;
  fd: number;
}
interface RawMapInfo {
  name: string;
  type: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  internal: boolean;
}
interface RawMapFdInfo {
  fd: number;
  id: number;
  name: string;
  type: string;
  typeId: number;
  keySize: number;
  valueSize: number;
  valueBytes: number;
  maxEntries: number;
  flags: number;
}
interface RawLinkInfo {
  id: number;
  progId: number;
  type: string;
  pinned: boolean;
  pinPath: string;
}
interface RawLink {
  __fd(): number;
  __pin(path: string): void;
  __unpin(): void;
  __detach(): void;
  __close(): void;
  __info(): RawLinkInfo;
}
interface RawObject {
  __setGlobal(name: string, value: Buffer): void;
  __reuseMap(name: string, from: RawMap | number): void;
  __setMaxEntries(name: string, n: number): void;
  __setAutoload(prog: string, on: boolean): void;
  __setProgType(prog: string, progType: string, attachType: number): void;
  __load(): void;
  __programs(): RawProgramInfo[];
  __maps(): RawMapInfo[];
  __progFd(name: string): number;
  __mapFd(name: string): number;
  __attach(prog: string): RawLink;
  __attachCgroup(prog: string, path: string): RawLink;
  __iterRead(prog: string, tid?: number): Buffer;
  __isLoaded(): boolean;
  __close(): void;
}
interface RawMap {
  __info(): RawMapFdInfo;
  __lookup(key: Buffer): Buffer | null;
  __update(key: Buffer, value: Buffer, flags: number): void;
  __delete(key: Buffer): boolean;
  __keys(): Buffer[];
  __updateBatch(keys: Buffer, values: Buffer, count: number, flags: number): number;
  __pin(path: string): void;
  __close(): void;
}
interface RawRingBuffer {
  __close(done?: () => void): void;
  __ref(): void;
  __unref(): void;
  __stats(): RingBufferStats;
}
interface RawAddon {
  Object: { __open(path: string, name?: string): RawObject };
  Map: {
    __fromFd(fd: number): RawMap;
    __openPinned(path: string): RawMap;
    __create(type: string, keySize: number, valueSize: number, maxEntries: number, name: string, flags: number): RawMap;
  };
  RingBuffer: new (
    map: RawMap,
    cb: (data: Buffer | null, offsets: Uint32Array | null, err: number) => void,
    opts?: { timeoutMs?: number; maxPendingBytes?: number; maxBatchRecords?: number },
  ) => RawRingBuffer;
  libbpfVersion(): string;
  numPossibleCpus(): number;
  setErrorClass(ctor: new (message: string, errno: number, op: string, log: string) => Error): void;
  probeProgType(t: string): boolean;
  probeMapType(t: string): boolean;
  probeHelper(progType: string, helper: string): boolean;
  probeAttachType(progType: string, attachType: number): boolean;
  progTypes(): string[];
  mapTypes(): string[];
  liveCount(): number;
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  setDumpable(on: boolean): void;
  getDumpable(): boolean;
}

// ---------------------------------------------------------------------------------------------------
// Errors

const errnoNames: Map<number, string> = new Map(
  Object.entries(osConstants.errno).map(([name, n]) => [n as number, name]),
);
errnoNames.set(524, 'ENOTSUPP'); // kernel-internal, leaks out of bpf()

/** The one error mode of the addon: a failed libbpf call or syscall. */
export class BpfError extends Error {
  /** Positive errno, e.g. 1 for EPERM. */
  readonly errno: number;
  /** Symbolic errno ('EPERM', 'ENOENT', …), or 'E<n>' if unknown. */
  readonly code: string;
  /** The failed operation, e.g. `bpf_object__load(process)`. */
  readonly op: string;
  /** libbpf output captured during the operation (verifier log on load failures); may be empty. */
  readonly log: string;

  constructor(message: string, errno: number, op: string, log = '') {
    super(message);
    this.name = 'BpfError';
    this.errno = errno;
    this.code = errnoNames.get(errno) ?? `E${errno}`;
    this.op = op;
    this.log = log;
  }

  /** The program libbpf named as failing to load, if any ("prog 'x': failed to load"). */
  get program(): string | undefined {
    return /prog '([^']+)': (?:BPF program load failed|failed to load)/.exec(this.log)?.[1];
  }
}

// ---------------------------------------------------------------------------------------------------
// Loading the addon

/** Where scripts/build-native.sh puts the addon; BRIDLE_NATIVE overrides. */
export const nativePath: string =
  process.env.BRIDLE_NATIVE ?? resolve(REPO_ROOT, 'native/build/Release/bridle_native.node');

let addon: RawAddon | undefined;

/** The raw addon, loaded on first use (so importing this module never fails on an unbuilt tree). */
function raw(): RawAddon {
  if (addon) return addon;
  if (!existsSync(nativePath)) {
    throw new Error(`bridle native addon not built: ${nativePath} is missing (run scripts/build-native.sh)`);
  }
  const req = createRequire(import.meta.url);
  const a = req(nativePath) as RawAddon;
  a.setErrorClass(BpfError);
  addon = a;
  return a;
}

/** True if the addon is built and loads. */
export function nativeAvailable(): boolean {
  try {
    raw();
    return true;
  } catch {
    return false;
  }
}

export function libbpfVersion(): string {
  return raw().libbpfVersion();
}

export function numPossibleCpus(): number {
  return raw().numPossibleCpus();
}

/** SO_PEERCRED of a connected unix socket: the peer's pid, uid and gid. */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  return raw().peerCred(fd);
}

/**
 * prctl(PR_SET_DUMPABLE): whether this process may dump core, and whether anyone without CAP_SYS_PTRACE
 * may read its /proc/<pid> files or attach to it. Kept across fork; an exec sets it anew.
 */
export function setDumpable(on: boolean): void {
  raw().setDumpable(on);
}

/** prctl(PR_GET_DUMPABLE) != 0. */
export function getDumpable(): boolean {
  return raw().getDumpable();
}

/** Resources the addon instance still holds open (objects, links, maps, ring buffers). For tests. */
export function liveResources(): number {
  return addon ? addon.liveCount() : 0;
}

function invalid(op: string, what: string): BpfError {
  return new BpfError(`${op}: ${what}`, 22, op);
}

// ---------------------------------------------------------------------------------------------------
// Object, programs, links

export interface OpenOptions {
  /** bpf_object name (prefix of internal map names such as "<name>.rodata"); default: file stem. */
  name?: string;
}

/** A BPF ELF object: open → (configure) → load → attach. */
export class BpfObject {
  readonly path: string;
  #raw: RawObject;
  #closed = false;
  #maps = new Map<string, BpfMap>();
  #links = new Set<BpfLink>();

  private constructor(path: string, r: RawObject) {
    this.path = path;
    this.#raw = r;
  }

  /** bpf_object__open_file. Throws BpfError (ENOENT for a missing file). */
  static open(path: string, opts: OpenOptions = {}): BpfObject {
    return new BpfObject(path, raw().Object.__open(path, opts.name));
  }

  /** Writes a global (`const volatile` in .rodata, or .data/.bss) by its BTF name, before load. */
  setGlobal(name: string, value: Buffer): void {
    this.#raw.__setGlobal(name, value);
  }
  setGlobalU32(name: string, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.setGlobal(name, b);
  }
  setGlobalU64(name: string, v: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.setGlobal(name, b);
  }

  /** Before load: use an existing map (of another object, or a pinned one) instead of creating `name`. */
  reuseMap(name: string, from: BpfMap | number): void {
    this.#raw.__reuseMap(name, typeof from === 'number' ? from : from._raw('reuseMap'));
  }

  /** Before load. */
  setMaxEntries(name: string, n: number): void {
    this.#raw.__setMaxEntries(name, n);
  }

  /** Before load: whether `prog` is loaded at all (skip optional programs the kernel refuses). */
  setAutoload(prog: string, on: boolean): void {
    this.#raw.__setAutoload(prog, on);
  }

  /** Program type (libbpf's name) and expected attach type (kernel number) for sections libbpf 1.1 does not know. */
  setProgType(prog: string, progType: string, attachType: number): void {
    this.#raw.__setProgType(prog, progType, attachType);
  }

  /**
   * bpf_object__load. On failure the BpfError carries the verifier log (message tail, `log`) and the
   * failing program (`err.program`). libbpf does not retry: to fall back, open the file again and
   * setAutoload(prog, false) for the programs this kernel refused (fentry/lsm give EPERM here).
   */
  load(): void {
    this.#raw.__load();
  }

  get loaded(): boolean {
    return !this.#closed && this.#raw.__isLoaded();
  }

  programs(): string[] {
    return this.#raw.__programs().map((p) => p.name);
  }
  programInfo(): RawProgramInfo[] {
    return this.#raw.__programs();
  }
  maps(): string[] {
    return this.#raw.__maps().map((m) => m.name);
  }
  mapInfo(): RawMapInfo[] {
    return this.#raw.__maps();
  }

  program(name: string): BpfProgram {
    const info = this.#raw.__programs().find((p) => p.name === name);
    if (!info) throw new BpfError(`program(${name}): no such program`, 2, `program(${name})`);
    return new BpfProgram(this, name, info.section, info.type);
  }

  /** A handle on a map of the loaded object (an fd of its own; stays valid until closed or the object closes). */
  map(name: string): BpfMap {
    const have = this.#maps.get(name);
    if (have && !have.closed) return have;
    const fd = this.#raw.__mapFd(name);
    if (fd < 0) throw new BpfError(`map(${name}): object is not loaded`, 22, `map(${name})`);
    const m = new BpfMap(raw().Map.__fromFd(fd));
    this.#maps.set(name, m);
    return m;
  }

  /** Idempotent. Destroys the links this object made (pinned ones only release their fd) and the map handles from map(). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const l of this.#links) l._forget();
    this.#links.clear();
    for (const m of this.#maps.values()) m.close();
    this.#maps.clear();
    this.#raw.__close();
  }

  /** @internal */
  _raw(): RawObject {
    if (this.#closed) throw new BpfError('object is closed', 9, 'BpfObject');
    return this.#raw;
  }
  /** @internal */
  _link(r: RawLink): BpfLink {
    const l = new BpfLink(this, r);
    this.#links.add(l);
    return l;
  }
}

export class BpfProgram {
  readonly object: BpfObject;
  readonly name: string;
  readonly section: string;
  /** libbpf program type name ("tracing", "cgroup_sock_addr", …). */
  readonly type: string;

  /** @internal */
  constructor(object: BpfObject, name: string, section: string, type: string) {
    this.object = object;
    this.name = name;
    this.section = section;
    this.type = type;
  }

  /** The program fd (owned by the object), -1 before load. */
  get fd(): number {
    return this.object._raw().__progFd(this.name);
  }

  /**
   * libbpf auto-attach by section (tp_btf/, raw_tp/, tracepoint/, iter/, …). For tracepoint/ (tp/)
   * sections tracefs is mounted first if needed: libbpf reads the event id from it.
   */
  attach(): BpfLink {
    if (/^(tracepoint|tp)\//.test(this.section)) ensureTracefs();
    return this.object._link(this.object._raw().__attach(this.name));
  }

  /** Attach a cgroup program (cgroup/connect4, …) to a cgroup v2 directory through a BPF link (multi-attach). */
  attachCgroup(cgroupPath: string): BpfLink {
    return this.object._link(this.object._raw().__attachCgroup(this.name, cgroupPath));
  }

  /**
   * For iter/ programs: run the iterator once and return everything it printed. Blocks while it runs.
   * `tid`: a task iterator (task, task_file, task_vma) walks only that thread.
   */
  iterRead(tid?: number): Buffer {
    return this.object._raw().__iterRead(this.name, tid);
  }
}

/** An attachment. Belongs to its object: BpfObject.close() destroys it unless pinned. */
export class BpfLink {
  readonly object: BpfObject;
  #raw: RawLink;
  #closed = false;

  /** @internal */
  constructor(object: BpfObject, r: RawLink) {
    this.object = object;
    this.#raw = r;
  }

  get fd(): number {
    return this.#closed ? -1 : this.#raw.__fd();
  }
  get closed(): boolean {
    return this.#closed || this.#raw.__fd() < 0;
  }
  info(): RawLinkInfo {
    return this.#raw.__info();
  }

  /** Pin in bpffs: the attachment then survives close() and process exit until the pin is removed. */
  pin(path: string): void {
    this.#raw.__pin(path);
  }
  /** Remove the pin made by pin(); the link stays attached while this handle is open. */
  unpin(): void {
    this.#raw.__unpin();
  }
  /** Release the link: detaches unless pinned (then only our fd is dropped). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#raw.__close();
  }
  /** Force detach (BPF_LINK_DETACH), even when pinned, then close. */
  detach(): void {
    this.#raw.__detach();
    this.#closed = true;
  }
  /** @internal the object closed it */
  _forget(): void {
    this.#closed = true;
  }
}

// ---------------------------------------------------------------------------------------------------
// Maps

export type UpdateFlag = 'any' | 'noexist' | 'exist';
const updateFlags: Record<UpdateFlag, number> = { any: 0, noexist: 1, exist: 2 };

/** A BPF map by fd. Keys and values are raw bytes; per-CPU maps use one 8-byte-aligned slot per possible CPU. */
export class BpfMap {
  readonly name: string;
  readonly id: number;
  /** Kernel map type number (BPF_MAP_TYPE_*). */
  readonly type: number;
  /** libbpf map type name ("hash", "ringbuf", …). */
  readonly typeName: string;
  readonly keySize: number;
  readonly valueSize: number;
  /** Bytes of a value buffer in user space (valueSize, or slot*CPUs for per-CPU maps). */
  readonly valueBytes: number;
  readonly maxEntries: number;
  readonly flags: number;
  #raw: RawMap;
  #closed = false;

  /** @internal */
  constructor(r: RawMap) {
    this.#raw = r;
    const i = r.__info();
    this.name = i.name;
    this.id = i.id;
    this.type = i.typeId;
    this.typeName = i.type;
    this.keySize = i.keySize;
    this.valueSize = i.valueSize;
    this.valueBytes = i.valueBytes;
    this.maxEntries = i.maxEntries;
    this.flags = i.flags;
  }

  get fd(): number {
    return this.#closed ? -1 : this.#raw.__info().fd;
  }
  get closed(): boolean {
    return this.#closed;
  }

  /** The value, or null if the key is absent. */
  lookup(key: Buffer): Buffer | null {
    return this.#raw.__lookup(key);
  }
  update(key: Buffer, value: Buffer, flags: UpdateFlag = 'any'): void {
    this.#raw.__update(key, value, updateFlags[flags]);
  }
  /** True if the key existed. */
  delete(key: Buffer): boolean {
    return this.#raw.__delete(key);
  }
  /** All keys (a walk, not a snapshot). */
  keys(): Buffer[] {
    return this.#raw.__keys();
  }
  /** [key, value] pairs; entries deleted during the walk are skipped. */
  entries(): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) out.push([k, v]);
    }
    return out;
  }
  /**
   * Update `count` elements: `keys` holds count*keySize bytes, `values` count*valueBytes. One
   * BPF_MAP_UPDATE_BATCH where supported, else a loop in C++. Returns the number updated.
   */
  updateBatch(keys: Buffer, values: Buffer, count: number, flags: UpdateFlag = 'any'): number {
    return this.#raw.__updateBatch(keys, values, count, updateFlags[flags]);
  }
  /** Pin this map in bpffs (bpf_obj_pin). */
  pin(path: string): void {
    this.#raw.__pin(path);
  }
  /** Remove a pin (any bpffs path). Missing is fine. */
  unpin(path: string): void {
    rmSync(path, { force: true });
  }
  /** Release our fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#raw.__close();
  }
  /** @internal */
  _raw(op: string): RawMap {
    if (this.#closed) throw new BpfError(`${op}: map is closed`, 9, op);
    return this.#raw;
  }
}

/** Open a map pinned in bpffs (bpf_obj_get). */
export function openPinnedMap(path: string): BpfMap {
  return new BpfMap(raw().Map.__openPinned(path));
}

/** A standalone map without an object (bpf_map_create). `type` is a libbpf name: "hash", "array", "ringbuf", … */
export function createMap(
  type: string,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  name = '',
  flags = 0,
): BpfMap {
  return new BpfMap(raw().Map.__create(type, keySize, valueSize, maxEntries, name, flags));
}

// ---------------------------------------------------------------------------------------------------
// Ring buffer

export interface RingBufferOptions {
  /** Poll timeout of the poller thread (bounds close() latency). Default 50. */
  timeoutMs?: number;
  /** At most this many records per onBatch call; the rest follows on the next event loop turn. Default 16384. */
  maxBatchRecords?: number;
  /** Records held for JS beyond this stop the poller reading (the kernel ring then fills). Default 64 MiB. */
  maxPendingBytes?: number;
  /**
   * Called with an exception thrown by onBatch, or a BpfError if polling failed (after delivering what
   * was read; the poller then stops). Default: re-thrown as an uncaught exception. Delivery continues
   * after an onBatch exception.
   */
  onError?: (err: unknown) => void;
  /** Do not keep the event loop alive for this ring buffer. */
  unref?: boolean;
}

/** A batch as one Buffer: record i is data.subarray(offsets[i], offsets[i + 1]); offsets.length = n + 1. */
export type RawBatchHandler = (data: Buffer, offsets: Uint32Array) => void;

export interface RingBufferStats {
  batches: number;
  records: number;
  bytes: number;
  closed: boolean;
}

/**
 * Reads a BPF_MAP_TYPE_RINGBUF map on a poller thread and calls `onBatch` on the main thread with whole
 * batches, in order. Records are views into one Buffer per batch (copy them to keep them past the call).
 */
export class RingBuffer {
  #raw: RawRingBuffer;
  #closing: Promise<void> | undefined;

  /** @internal (RingBuffer.raw) */
  constructor(map: BpfMap, onBatch: RawBatchHandler, opts: RingBufferOptions | undefined, raw: true);
  constructor(map: BpfMap, onBatch: (records: Buffer[]) => void, opts?: RingBufferOptions);
  constructor(
    map: BpfMap,
    onBatch: ((records: Buffer[]) => void) | RawBatchHandler,
    opts: RingBufferOptions = {},
    rawBatches = false,
  ) {
    if (map.typeName !== 'ringbuf') throw invalid('RingBuffer', `map ${map.name} is a ${map.typeName}, not a ringbuf`);
    const onError = opts.onError;
    // Node 20 swallows exceptions thrown into a Node-API callback (DEP0168): re-raise them ourselves.
    const fail = (e: unknown): void => {
      if (onError) onError(e);
      else
        process.nextTick(() => {
          throw e;
        });
    };
    const cb = (data: Buffer | null, offsets: Uint32Array | null, err: number): void => {
      try {
        if (data && offsets) {
          if (rawBatches) {
            (onBatch as RawBatchHandler)(data, offsets);
            return;
          }
          const n = offsets.length - 1;
          const recs: Buffer[] = new Array(n);
          for (let i = 0; i < n; i++) recs[i] = data.subarray(offsets[i]!, offsets[i + 1]!);
          (onBatch as (records: Buffer[]) => void)(recs);
        } else if (err) {
          throw new BpfError(`ring_buffer__poll(${map.name}): errno ${err}`, err, 'ring_buffer__poll');
        }
      } catch (e) {
        fail(e);
      }
    };
    const o: { timeoutMs?: number; maxPendingBytes?: number; maxBatchRecords?: number } = {};
    if (opts.timeoutMs !== undefined) o.timeoutMs = opts.timeoutMs;
    if (opts.maxBatchRecords !== undefined) o.maxBatchRecords = opts.maxBatchRecords;
    if (opts.maxPendingBytes !== undefined) o.maxPendingBytes = opts.maxPendingBytes;
    this.#raw = new (raw().RingBuffer)(map._raw('RingBuffer'), cb, o);
    if (opts.unref) this.#raw.__unref();
  }

  /**
   * Like the constructor, without a Buffer per record: `onBatch(data, offsets)` gets the batch as one
   * Buffer and n+1 offsets (record i is data[offsets[i] .. offsets[i+1])). For hot decoders.
   */
  static raw(map: BpfMap, onBatch: RawBatchHandler, opts: RingBufferOptions = {}): RingBuffer {
    return new RingBuffer(map, onBatch, opts, true);
  }

  /** Stops the poller, delivers every record still pending (including what the kernel holds), then resolves. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((res) => this.#raw.__close(res));
    return this.#closing;
  }
  ref(): void {
    this.#raw.__ref();
  }
  unref(): void {
    this.#raw.__unref();
  }
  stats(): RingBufferStats {
    return this.#raw.__stats();
  }
}

// ---------------------------------------------------------------------------------------------------
// Feature probes (libbpf_probe_bpf_*). Names are libbpf's: progType "tracepoint", "cgroup_sock_addr",
// "tracing" (libbpf cannot probe tracing/lsm without a target: it answers false; try loading instead);
// helper "bpf_send_signal" or "send_signal". Unknown names throw BpfError(EINVAL).

/** Kernel attach type numbers (uapi enum bpf_attach_type) libbpf 1.1 has no names for. */
export const ATTACH = { CGROUP_UNIX_CONNECT: 49, CGROUP_UNIX_SENDMSG: 50 } as const;

export const probe = {
  progType(t: string): boolean {
    return raw().probeProgType(t);
  },
  mapType(t: string): boolean {
    return raw().probeMapType(t);
  },
  helper(progType: string, helper: string): boolean {
    return raw().probeHelper(progType, helper);
  },
  /** Does the kernel take this program type with this expected attach type (kernel number, see ATTACH)? */
  attachType(progType: string, attachType: number): boolean {
    return raw().probeAttachType(progType, attachType);
  },
  progTypes(): string[] {
    return raw().progTypes();
  },
  mapTypes(): string[] {
    return raw().mapTypes();
  },
};
