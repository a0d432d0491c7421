// How the SQLite store keeps events: in chunks, one row per ingested batch (split every CHUNK_EVENTS
// events), not one row per event.
//
// Why: on this 2-core machine a SQLite row costs about 5 µs through better-sqlite3 before any index (the
// call, binding, the B-tree insert), and each per-event index about 1 µs more; the collector's budget for
// storing at 100,000 events/s is about 3 µs an event (bench/collector.bench.ts). A chunk row holds the
// events' protobuf bytes back to back (`data`) and a fixed-size record per event (`meta`) with what the
// queries filter on, so a query reads a chunk and picks its events without decoding the others. Indexes
// point at chunks, one entry per distinct session or destination address in a chunk, and per process with
// events beyond the chunk its process row names as its first (sqlite.ts).
//
// Event ids are chunk id × CHUNK_EVENTS + position: unique, and increasing in insertion order.

/** Most events in one chunk (a batch with more is split). Also the multiplier of event ids. */
export const CHUNK_EVENTS = 4096;

/**
 * One event's record in `meta`, little-endian: f64 time (epoch ms), u32 end of its bytes in `data`,
 * u32 process row id (0: none), u32 session row id (0: none), u8 type code, u8 verdict code, 2 bytes zero.
 */
export const META_BYTES = 24;
const M_TS = 0;
const M_END = 8;
const M_PROC = 12;
const M_SESSION = 16;
const M_TYPE = 20;
const M_VERDICT = 21;

/** Bit of a type code in a chunk's `types` mask (codes ≥ 31 share bit 0). */
export const typeBit = (code: number): number => (code > 0 && code < 31 ? 1 << code : 1);

/** Collects the events of one chunk as they are ingested. */
export class ChunkBuilder {
  readonly raws: Uint8Array[] = [];
  /** Processes to index under this chunk: those below `newProcsFrom` (newer ones name it as their first chunk). */
  readonly procs = new Set<number>();
  readonly sessions = new Set<number>();
  /** Destination address of connect events → their positions in the chunk. */
  readonly daddrs = new Map<string, number[]>();
  n = 0;
  bytes = 0;
  tsLo = Number.POSITIVE_INFINITY;
  tsHi = Number.NEGATIVE_INFINITY;
  types = 0;
  /** Events with a deny or would_deny verdict (verdict code ≥ 2). */
  denials = 0;
  private meta = Buffer.alloc(64 * META_BYTES);

  constructor(private readonly newProcsFrom = Number.POSITIVE_INFINITY) {}

  get full(): boolean {
    return this.n >= CHUNK_EVENTS;
  }

  add(raw: Uint8Array, tsMs: number, type: number, verdict: number, proc: number, session: number, daddr: string | null): void {
    const o = this.n * META_BYTES;
    if (o + META_BYTES > this.meta.length) {
      const grown = Buffer.alloc(Math.min(CHUNK_EVENTS * META_BYTES, this.meta.length * 4));
      this.meta.copy(grown);
      this.meta = grown;
    }
    this.bytes += raw.length;
    this.raws.push(raw);
    const m = this.meta;
    m.writeDoubleLE(tsMs, o + M_TS);
    m.writeUInt32LE(this.bytes, o + M_END);
    m.writeUInt32LE(proc, o + M_PROC);
    m.writeUInt32LE(session, o + M_SESSION);
    m[o + M_TYPE] = type;
    m[o + M_VERDICT] = verdict;
    this.n++;
    if (tsMs < this.tsLo) this.tsLo = tsMs;
    if (tsMs > this.tsHi) this.tsHi = tsMs;
    this.types |= typeBit(type);
    if (verdict >= 2) this.denials++;
    if (proc && proc < this.newProcsFrom) this.procs.add(proc);
    if (session) this.sessions.add(session);
    if (daddr) {
      const at = this.daddrs.get(daddr);
      if (at) at.push(this.n - 1);
      else this.daddrs.set(daddr, [this.n - 1]);
    }
  }

  data(): Buffer {
    return Buffer.concat(this.raws, this.bytes);
  }

  metaBytes(): Buffer {
    return this.meta.subarray(0, this.n * META_BYTES);
  }
}

/** Positions in a chunk as stored beside an index entry (u16 each: CHUNK_EVENTS fits). */
export function encodePositions(at: number[]): Buffer {
  const b = Buffer.allocUnsafe(at.length * 2);
  for (let i = 0; i < at.length; i++) b.writeUInt16LE(at[i]!, i * 2);
  return b;
}

export function decodePositions(b: Buffer): number[] {
  const at: number[] = [];
  for (let o = 0; o + 1 < b.length; o += 2) at.push(b.readUInt16LE(o));
  return at;
}

/** A stored chunk, read back: its records, and its events' bytes once read (`data`). */
export class ChunkView {
  readonly n: number;
  constructor(
    readonly id: number,
    private readonly meta: Buffer,
    public data?: Buffer,
  ) {
    this.n = meta.length / META_BYTES;
  }
  eventId(i: number): number {
    return this.id * CHUNK_EVENTS + i;
  }
  ts(i: number): number {
    return this.meta.readDoubleLE(i * META_BYTES + M_TS);
  }
  proc(i: number): number {
    return this.meta.readUInt32LE(i * META_BYTES + M_PROC);
  }
  session(i: number): number {
    return this.meta.readUInt32LE(i * META_BYTES + M_SESSION);
  }
  type(i: number): number {
    return this.meta[i * META_BYTES + M_TYPE]!;
  }
  verdict(i: number): number {
    return this.meta[i * META_BYTES + M_VERDICT]!;
  }
  /** The event's bytes, without decoding: a view into the chunk. */
  view(i: number): Buffer {
    if (!this.data) throw new Error(`chunk ${this.id}: events not read`);
    const start = i ? this.meta.readUInt32LE((i - 1) * META_BYTES + M_END) : 0;
    return this.data.subarray(start, this.meta.readUInt32LE(i * META_BYTES + M_END));
  }
  /** The event's bytes as a copy of their own (an answer does not keep the whole chunk alive). */
  raw(i: number): Buffer {
    return Buffer.from(this.view(i));
  }
}

/**
 * The sequence numbers stored for one host, as sorted disjoint ranges: how the store keeps each
 * (host, seq) at most once without an index entry per event. A host's stream is normally one range that
 * grows at its end. Changes since the last `takeChanges()` are tracked so that only they are written.
 */
export class SeqRanges {
  private lo: number[] = [];
  private hi: number[] = [];
  private dirty = new Set<number>();
  private removed = new Set<number>();

  constructor(rows: Iterable<{ lo: number; hi: number }> = []) {
    for (const r of rows) {
      this.lo.push(r.lo);
      this.hi.push(r.hi);
    }
  }

  get size(): number {
    return this.lo.length;
  }

  /** Index of the last range starting at or before `s`, or -1. */
  private find(s: number): number {
    let a = 0;
    let b = this.lo.length - 1;
    let at = -1;
    while (a <= b) {
      const m = (a + b) >> 1;
      if (this.lo[m]! <= s) {
        at = m;
        a = m + 1;
      } else b = m - 1;
    }
    return at;
  }

  has(s: number): boolean {
    const n = this.lo.length;
    if (n === 0 || s > this.hi[n - 1]!) return false;
    const i = this.find(s);
    return i >= 0 && s <= this.hi[i]!;
  }

  /** Adds `s` (which must not be present). */
  add(s: number): void {
    const n = this.lo.length;
    if (n && s === this.hi[n - 1]! + 1) {
      this.hi[n - 1] = s;
      this.dirty.add(this.lo[n - 1]!);
      return;
    }
    const i = n === 0 || s > this.hi[n - 1]! ? n - 1 : this.find(s);
    const joinLeft = i >= 0 && this.hi[i]! + 1 === s;
    const joinRight = i + 1 < n && this.lo[i + 1] === s + 1;
    if (joinLeft && joinRight) {
      this.hi[i] = this.hi[i + 1]!;
      this.drop(i + 1);
      this.dirty.add(this.lo[i]!);
    } else if (joinLeft) {
      this.hi[i] = s;
      this.dirty.add(this.lo[i]!);
    } else if (joinRight) {
      const hi = this.hi[i + 1]!;
      this.drop(i + 1);
      this.insert(i + 1, s, hi);
    } else this.insert(i + 1, s, s);
  }

  private drop(i: number): void {
    const lo = this.lo[i]!;
    this.dirty.delete(lo);
    this.removed.add(lo);
    this.lo.splice(i, 1);
    this.hi.splice(i, 1);
  }

  private insert(i: number, lo: number, hi: number): void {
    this.lo.splice(i, 0, lo);
    this.hi.splice(i, 0, hi);
    this.removed.delete(lo);
    this.dirty.add(lo);
  }

  /** Ranges to delete (by start) and to write, since the last call. */
  takeChanges(): { removed: number[]; upserts: Array<[number, number]> } {
    const upserts: Array<[number, number]> = [];
    for (const lo of this.dirty) upserts.push([lo, this.hi[this.find(lo)]!]);
    const removed = [...this.removed];
    this.dirty.clear();
    this.removed.clear();
    return { removed, upserts };
  }
}
