// The agent's on-disk spool: every batch is written here before it is sent, and stays until the collector
// acknowledges it. It survives restarts of the agent (kill -9 included), of the collector and of the
// network, and it is bounded: when full, new batches are refused and the caller counts them as lost.
//
// Layout of a spool directory:
//   spool.json             state: spool id, acknowledged seq, reserved seq, unreported losses
//   <first seq>.seg        segments of records, appended in seq order; deleted once fully acknowledged
//   lock                   pid of the process using the spool (stale locks of dead processes are taken over)
//
// A record is a 32-byte header then the payload (the encoded IngestRequest{batch}):
//   magic u32 "BRS1" | payload length u32 | crc32 of payload u32 | event count u32 | first seq u64 | last seq u64
// A torn record at the tail (the process died mid-write) is cut off on open; a record whose CRC does not
// match when read back is skipped and its events are counted as lost.
import { chmodSync, closeSync, existsSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync, writevSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { crc32 } from 'node:zlib';

const MAGIC = 0x31535242; // "BRS1" little-endian
const HEADER = 32;

export interface SpoolOptions {
  /** Bound on the bytes of all segment files (default 1 GiB). */
  maxBytes?: number;
  /** Payloads of records not yet sent kept in memory, to send without a read back from disk (default 4 MiB). */
  memBytes?: number;
  /** A segment is closed and a new one started past this size (default 8 MiB). */
  segmentBytes?: number;
}

export interface SpoolState {
  /** Random id of this spool, sent to the collector in Hello. */
  id: string;
  /** Every event with seq ≤ ackedSeq is stored by the collector. */
  ackedSeq: number;
  /** Sequence numbers up to here may have been handed out; a restart continues above it. */
  reservedSeq: number;
  /** Losses not yet reported to the collector as a `loss` event, by where they happened. */
  lossPending: Record<string, number>;
  /** All losses ever counted by this spool. */
  lostTotal: number;
}

interface Segment {
  path: string;
  firstSeq: number;
  size: number;
  /** Records in this segment not yet acknowledged. */
  pending: number;
  fd?: number;
}

export interface SpoolEntry {
  seg: Segment;
  offset: number;
  len: number;
  crc: number;
  count: number;
  firstSeq: number;
  lastSeq: number;
  payload?: Buffer | undefined;
}

export class SpoolLockedError extends Error {
  override name = 'SpoolLockedError';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  state: SpoolState;
  /** Records not yet acknowledged, in seq order. */
  private entries: SpoolEntry[] = [];
  /** Index into `entries` of the next record to send. */
  private cursor = 0;
  private segments: Segment[] = [];
  private current: Segment | undefined;
  private totalBytes = 0;
  private memUsed = 0;
  private readonly memBytes: number;
  private readonly segmentBytes: number;
  private unacked = 0;
  private maxSeqSeen = 0;
  /** Events in records found corrupt when read back. */
  corrupt = 0;
  private metaDirty = false;
  private closed = false;

  private constructor(dir: string, opts: SpoolOptions) {
    this.dir = dir;
    this.maxBytes = opts.maxBytes ?? 1024 * 1024 * 1024;
    this.memBytes = opts.memBytes ?? 4 * 1024 * 1024;
    this.segmentBytes = opts.segmentBytes ?? 8 * 1024 * 1024;
    this.state = { id: randomUUID(), ackedSeq: 0, reservedSeq: 0, lossPending: {}, lostTotal: 0 };
  }

  /** Opens (or creates) the spool in `dir`: takes the lock, reads state, indexes un-acknowledged records. */
  static open(dir: string, opts: SpoolOptions = {}): Spool {
    // Every session's argv and tool arguments wait here: readable by the agent's user only.
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    const s = new Spool(dir, opts);
    s.lock();
    s.load();
    return s;
  }

  private lock(): void {
    const path = join(this.dir, 'lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const pid = Number(readFileSync(path, 'utf8').trim());
        if (pid && pid !== process.pid && pidAlive(pid)) {
          throw new SpoolLockedError(`spool ${this.dir} is in use by process ${pid}`);
        }
        unlinkSync(path); // stale: its process is gone (e.g. killed with -9)
      }
    }
    throw new SpoolLockedError(`cannot lock spool ${this.dir}`);
  }

  private load(): void {
    const metaPath = join(this.dir, 'spool.json');
    if (existsSync(metaPath)) {
      try {
        this.state = { ...this.state, ...(JSON.parse(readFileSync(metaPath, 'utf8')) as Partial<SpoolState>) };
      } catch {
        // A torn state file: keep defaults; the segments still carry every un-acked record and the
        // sequence counter continues above the highest seq found in them.
      }
    }
    const names = readdirSync(this.dir).filter((n) => n.endsWith('.seg')).sort();
    for (const name of names) {
      const path = join(this.dir, name);
      const seg: Segment = { path, firstSeq: Number(name.slice(0, -4)), size: 0, pending: 0 };
      const fd = openSync(path, 'r+');
      try {
        const size = statSync(path).size;
        const hdr = Buffer.alloc(HEADER);
        let off = 0;
        while (off + HEADER <= size) {
          if (readSync(fd, hdr, 0, HEADER, off) < HEADER || hdr.readUInt32LE(0) !== MAGIC) break;
          const len = hdr.readUInt32LE(4);
          if (off + HEADER + len > size) break; // torn write at the tail
          const e: SpoolEntry = {
            seg, offset: off + HEADER, len, crc: hdr.readUInt32LE(8), count: hdr.readUInt32LE(12),
            firstSeq: Number(hdr.readBigUInt64LE(16)), lastSeq: Number(hdr.readBigUInt64LE(24)),
          };
          this.maxSeqSeen = Math.max(this.maxSeqSeen, e.lastSeq);
          if (e.lastSeq > this.state.ackedSeq) {
            this.entries.push(e);
            seg.pending++;
            this.unacked += e.count;
          }
          off += HEADER + len;
        }
        if (off < size) ftruncateSync(fd, off);
        seg.size = off;
      } finally {
        closeSync(fd);
      }
      this.totalBytes += seg.size;
      if (seg.pending === 0) {
        unlinkSync(path);
        this.totalBytes -= seg.size;
      } else {
        this.segments.push(seg);
      }
    }
    this.state.reservedSeq = Math.max(this.state.reservedSeq, this.maxSeqSeen);
    this.writeMeta();
  }

  /** Bytes of segment files on disk. */
  get bytes(): number {
    return this.totalBytes;
  }
  /** Events spooled and not yet acknowledged. */
  get unackedEvents(): number {
    return this.unacked;
  }
  get unackedRecords(): number {
    return this.entries.length;
  }
  /** Highest seq ever written to this spool (or reserved). */
  get highestSeq(): number {
    return Math.max(this.maxSeqSeen, this.state.reservedSeq);
  }

  /** Would a record of `payloadBytes` fit under maxBytes? */
  fits(payloadBytes: number): boolean {
    return this.totalBytes + HEADER + payloadBytes <= this.maxBytes;
  }

  /**
   * Would append() keep a payload of `len` bytes in memory for sending? Then the caller hands the buffer
   * over; otherwise the payload is only written to disk and the caller may reuse its buffer at once.
   */
  keeps(len: number): boolean {
    return this.memUsed + len <= this.memBytes;
  }

  /** Appends one record. Returns false (writing nothing) when the spool is full. */
  append(firstSeq: number, lastSeq: number, count: number, payload: Buffer): boolean {
    if (this.closed) throw new Error('spool is closed');
    if (!this.fits(payload.length)) return false;
    if (!this.current || this.current.size >= this.segmentBytes) this.rotate(firstSeq);
    const seg = this.current!;
    const hdr = Buffer.alloc(HEADER);
    const crc = crc32(payload);
    hdr.writeUInt32LE(MAGIC, 0);
    hdr.writeUInt32LE(payload.length, 4);
    hdr.writeUInt32LE(crc, 8);
    hdr.writeUInt32LE(count, 12);
    hdr.writeBigUInt64LE(BigInt(firstSeq), 16);
    hdr.writeBigUInt64LE(BigInt(lastSeq), 24);
    // One write of header + payload (page cache: a kill -9 cannot lose it; a torn tail is cut on open).
    const total = HEADER + payload.length;
    let done = writevSync(seg.fd!, [hdr, payload], seg.size);
    if (done < total) {
      // A short write (disk nearly full): finish it, or cut the partial record off and fail.
      const all = Buffer.concat([hdr, payload]);
      try {
        while (done < total) done += writeSync(seg.fd!, all, done, total - done, seg.size + done);
      } catch (err) {
        ftruncateSync(seg.fd!, seg.size);
        throw err;
      }
    }
    const e: SpoolEntry = { seg, offset: seg.size + HEADER, len: payload.length, crc, count, firstSeq, lastSeq };
    if (this.keeps(payload.length)) {
      e.payload = payload;
      this.memUsed += payload.length;
    }
    seg.size += HEADER + payload.length;
    seg.pending++;
    this.totalBytes += HEADER + payload.length;
    this.entries.push(e);
    this.unacked += count;
    this.maxSeqSeen = Math.max(this.maxSeqSeen, lastSeq);
    return true;
  }

  private rotate(firstSeq: number): void {
    if (this.current?.fd !== undefined) {
      fsyncSync(this.current.fd);
      closeSync(this.current.fd);
      delete this.current.fd;
      if (this.current.pending === 0) this.drop(this.current);
    }
    const path = join(this.dir, `${String(firstSeq).padStart(16, '0')}.seg`);
    const seg: Segment = { path, firstSeq, size: 0, pending: 0, fd: openSync(path, 'w+', 0o600) };
    this.segments.push(seg);
    this.current = seg;
  }

  private drop(seg: Segment): void {
    if (seg.fd !== undefined) {
      closeSync(seg.fd);
      delete seg.fd;
    }
    try {
      unlinkSync(seg.path);
    } catch {
      // already gone
    }
    this.totalBytes -= seg.size;
    this.segments = this.segments.filter((s) => s !== seg);
    if (this.current === seg) this.current = undefined;
  }

  /**
   * Next record to send, with its payload; undefined when none. A payload kept in memory is handed over
   * (the cache holds only records not yet sent: a record is resent only after a reconnect, and then read
   * back from disk); others are read back from disk.
   */
  next(): (SpoolEntry & { payload: Buffer }) | undefined {
    while (this.cursor < this.entries.length) {
      const e = this.entries[this.cursor++]!;
      const cached = e.payload;
      if (cached) {
        e.payload = undefined;
        this.memUsed -= cached.length;
        return withPayload(e, cached);
      }
      const buf = Buffer.allocUnsafe(e.len);
      let ok = false;
      try {
        const fd = e.seg.fd ?? openSync(e.seg.path, 'r');
        try {
          ok = readSync(fd, buf, 0, e.len, e.offset) === e.len && crc32(buf) === e.crc;
        } finally {
          if (fd !== e.seg.fd) closeSync(fd);
        }
      } catch {
        ok = false;
      }
      if (ok) return withPayload(e, buf);
      // Corrupt on disk: the record can never be sent. Count it lost and treat it as done.
      this.corrupt += e.count;
      this.addLoss('spool-corrupt', e.count);
      this.cursor--;
      this.entries.splice(this.cursor, 1);
      this.settle(e);
    }
    return undefined;
  }

  /** Start sending again from the oldest un-acknowledged record (after a reconnect). */
  rewind(): void {
    this.cursor = 0;
  }

  /** The collector has every event with seq ≤ lastSeq: drop those records. Returns how many events. */
  ack(lastSeq: number): number {
    let events = 0;
    while (this.entries.length && this.entries[0]!.lastSeq <= lastSeq) {
      const e = this.entries.shift()!;
      if (this.cursor > 0) this.cursor--;
      events += e.count;
      this.settle(e);
    }
    if (lastSeq > this.state.ackedSeq) {
      this.state.ackedSeq = lastSeq;
      this.metaDirty = true;
    }
    return events;
  }

  private settle(e: SpoolEntry): void {
    this.unacked -= e.count;
    if (e.payload) {
      this.memUsed -= e.payload.length;
      e.payload = undefined;
    }
    const seg = e.seg;
    seg.pending--;
    // A fully acknowledged segment goes; the one being written goes too once it is big enough to rotate.
    if (seg.pending === 0 && (seg !== this.current || seg.size >= 1024 * 1024)) this.drop(seg);
  }

  addLoss(where: string, n: number): void {
    this.state.lossPending[where] = (this.state.lossPending[where] ?? 0) + n;
    this.state.lostTotal += n;
    this.metaDirty = true;
  }

  /** Losses were reported to the collector (in a spooled `loss` event). */
  lossReported(where: string, n: number): void {
    const left = (this.state.lossPending[where] ?? 0) - n;
    if (left > 0) this.state.lossPending[where] = left;
    else delete this.state.lossPending[where];
    this.metaDirty = true;
  }

  /** Allows handing out sequence numbers up to `upTo` (persisted first, so a crash never reuses them). */
  reserve(upTo: number): void {
    if (upTo <= this.state.reservedSeq) return;
    this.state.reservedSeq = upTo;
    this.writeMeta();
  }

  /** Persists state if it changed (acks, losses); cheap to call often. */
  saveIfDirty(): void {
    if (this.metaDirty) this.writeMeta();
  }

  private writeMeta(): void {
    const path = join(this.dir, 'spool.json');
    const tmp = `${path}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    renameSync(tmp, path);
    this.metaDirty = false;
  }

  /** Flushes state and segment data to disk and releases the lock. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.current?.fd !== undefined) {
      fsyncSync(this.current.fd);
      closeSync(this.current.fd);
      delete this.current.fd;
      if (this.current.pending === 0) this.drop(this.current);
    }
    this.writeMeta();
    try {
      unlinkSync(join(this.dir, 'lock'));
    } catch {
      // already gone
    }
  }
}

/** What `bridle doctor` / `sessions` can show about a spool without opening it for writing. */
export function readSpoolStatus(dir: string): { exists: boolean; bytes: number; segments: number; state?: SpoolState } {
  if (!existsSync(dir)) return { exists: false, bytes: 0, segments: 0 };
  let bytes = 0;
  let segments = 0;
  for (const n of readdirSync(dir)) {
    if (!n.endsWith('.seg')) continue;
    segments++;
    bytes += statSync(join(dir, n)).size;
  }
  let state: SpoolState | undefined;
  try {
    state = JSON.parse(readFileSync(join(dir, 'spool.json'), 'utf8')) as SpoolState;
  } catch {
    state = undefined;
  }
  return state ? { exists: true, bytes, segments, state } : { exists: true, bytes, segments };
}

/** The record to send: its entry's fields (a literal, not a spread: this runs per batch) and its bytes. */
function withPayload(e: SpoolEntry, payload: Buffer): SpoolEntry & { payload: Buffer } {
  return { seg: e.seg, offset: e.offset, len: e.len, crc: e.crc, count: e.count, firstSeq: e.firstSeq, lastSeq: e.lastSeq, payload };
}
