// The embedded store: one SQLite file (WAL, 16 KiB pages), written with prepared statements, one
// transaction per batch (or per group of batches the collector had queued).
//
// Tables: `chunks` (the events themselves, one row per ingested batch: see chunks.ts), `chunk_procs`,
// `chunk_sessions` and `chunk_daddrs` (which chunks hold events of a process, of a session, of connects to
// an address), `seq_ranges` (the sequence numbers stored per host: each (host, seq) is stored once),
// `processes` (one row per process image: the lineage graph, parent by row id), `sessions`, `hosts`.
// Strings that repeat on every event (host, session, exec_id) are interned into integer ids through
// in-memory caches in front of the tables; process ids are assigned here and their rows written in bulk.
//
// Durability: synchronous=NORMAL in WAL mode keeps every committed (so every acknowledged) batch through
// a crash of the collector process (kill -9); `sync: 'full'` also through a power cut, at some cost.
// Checkpoints (copying the WAL back into the database file) run on a worker thread (checkpointer.ts), so
// that a commit on the ingest path only appends to the WAL.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { decodeForStore, F, typeCode, VERDICTS } from '../events/proto.js';
import { matchEvent, type EventFilter } from '../events/query.js';
import type { BridleEvent } from '../events/types.js';
import { WalCheckpointer } from './checkpointer.js';
import { ChunkBuilder, ChunkView, CHUNK_EVENTS, decodePositions, encodePositions, SeqRanges, typeBit } from './chunks.js';
import type {
  EventStore,
  HostRow,
  IngestItem,
  IngestResult,
  LineageNode,
  LineageResult,
  ProcessMatchRow,
  ProcessQuery,
  ProcessRow,
  SessionQuery,
  SessionRow,
  StoredEvent,
} from './store.js';

/**
 * 1: one row per event (table `events`, migrated on open); 2: chunks; 3: a process row names the chunk its
 * first events are in (`first_chunk`), and `chunk_procs` lists only its other chunks.
 */
const SCHEMA_VERSION = 3;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS hosts (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL,
  last_seq INTEGER NOT NULL DEFAULT 0,
  events INTEGER NOT NULL DEFAULT 0,
  lost INTEGER NOT NULL DEFAULT 0,
  rejected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
  id INTEGER PRIMARY KEY,
  host_id INTEGER NOT NULL,
  session TEXT NOT NULL,
  agent TEXT NOT NULL DEFAULT '',
  origin TEXT NOT NULL DEFAULT '',
  backend TEXT NOT NULL DEFAULT '',
  mode TEXT NOT NULL DEFAULT '',
  policy TEXT NOT NULL DEFAULT '',
  uid INTEGER NOT NULL DEFAULT 0,
  root_exec_id TEXT NOT NULL DEFAULT '',
  path TEXT NOT NULL DEFAULT '',
  argv TEXT NOT NULL DEFAULT '[]',
  start_ts INTEGER NOT NULL DEFAULT 0,
  end_ts INTEGER NOT NULL DEFAULT 0,
  exit_code INTEGER,
  signal INTEGER,
  events INTEGER NOT NULL DEFAULT 0,
  denials INTEGER NOT NULL DEFAULT 0,
  would_deny INTEGER NOT NULL DEFAULT 0,
  lost INTEGER NOT NULL DEFAULT 0,
  UNIQUE (host_id, session)
);
CREATE INDEX IF NOT EXISTS sessions_name ON sessions(session);
CREATE INDEX IF NOT EXISTS sessions_start ON sessions(start_ts);
CREATE TABLE IF NOT EXISTS processes (
  id INTEGER PRIMARY KEY,
  exec_id TEXT NOT NULL UNIQUE,
  parent_id INTEGER,
  host_id INTEGER NOT NULL,
  session_id INTEGER,
  pid INTEGER NOT NULL DEFAULT 0,
  ppid INTEGER NOT NULL DEFAULT 0,
  uid INTEGER NOT NULL DEFAULT 0,
  path TEXT,
  argv TEXT NOT NULL DEFAULT '[]',
  start_ts INTEGER NOT NULL DEFAULT 0,
  session_root INTEGER NOT NULL DEFAULT 0,
  first_chunk INTEGER
);
CREATE INDEX IF NOT EXISTS processes_parent ON processes(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_path ON processes(path, start_ts) WHERE path IS NOT NULL;
CREATE TABLE IF NOT EXISTS chunks (
  id INTEGER PRIMARY KEY,
  host_id INTEGER NOT NULL,
  ts_lo INTEGER NOT NULL,
  ts_hi INTEGER NOT NULL,
  n INTEGER NOT NULL,
  types INTEGER NOT NULL,
  denials INTEGER NOT NULL,
  meta BLOB NOT NULL,
  data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_ts ON chunks(ts_hi);
CREATE INDEX IF NOT EXISTS chunks_host ON chunks(host_id, ts_hi);
CREATE INDEX IF NOT EXISTS chunks_denied ON chunks(ts_hi) WHERE denials > 0;
-- Chunks holding events of a process other than its first_chunk (most processes have none: their events
-- come in one batch), so that a process costs one index entry, not two.
CREATE TABLE IF NOT EXISTS chunk_procs (proc_id INTEGER NOT NULL, chunk_id INTEGER NOT NULL, PRIMARY KEY (proc_id, chunk_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_sessions (session_id INTEGER NOT NULL, chunk_id INTEGER NOT NULL, PRIMARY KEY (session_id, chunk_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunk_daddrs (daddr TEXT NOT NULL, chunk_id INTEGER NOT NULL, at BLOB NOT NULL, PRIMARY KEY (daddr, chunk_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_ranges (host_id INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, PRIMARY KEY (host_id, lo)) WITHOUT ROWID;
`;


export interface SqliteStoreOptions {
  /** 'normal' (default): survives a collector crash. 'full': also survives power loss. */
  sync?: 'normal' | 'full';
  /** Page cache in MiB (default 64). */
  cacheMiB?: number;
  /** Checkpoint the WAL from a worker thread (default true for a file): commits only append to the WAL. */
  checkpointThread?: boolean;
}

/** With the checkpoint thread, the writer still checkpoints past this many WAL pages (64 MiB). */
const WAL_SAFETY_PAGES = 4096;

interface SessionAcc {
  events: number;
  denials: number;
  would: number;
  lost: number;
}

type Row = Record<string, any>;

export interface StoredEventRecord {
  id: number;
  /** Row ids of the event's process and session (0: none). */
  procId: number;
  sessionId: number;
  raw: Buffer;
}

function* eventsOf(db: Database.Database): Generator<StoredEventRecord> {
  for (const r of db.prepare('SELECT id, meta, data FROM chunks ORDER BY id').iterate() as IterableIterator<Row>) {
    const c = new ChunkView(r.id, r.meta, r.data);
    for (let i = 0; i < c.n; i++) yield { id: c.eventId(i), procId: c.proc(i), sessionId: c.session(i), raw: c.raw(i) };
  }
}

/** Type codes of the events that start a process image. */
const IMAGE_TYPES: ReadonlySet<number> = new Set([F.event.exec, F.event.session_start]);

/** Newest first: by time, then by id (insertion order). */
const newestFirst = (a: { ts: number; id: number }, b: { ts: number; id: number }): number => b.ts - a.ts || b.id - a.id;

/** A Map that forgets its oldest entries past `max` (insertion order). */
class BoundedMap<K, V> extends Map<K, V> {
  constructor(private max: number) {
    super();
  }
  override set(k: K, v: V): this {
    if (this.size >= this.max) {
      let n = this.max >> 3;
      for (const key of this.keys()) {
        this.delete(key);
        if (--n <= 0) break;
      }
    }
    return super.set(k, v);
  }
}

/** Columns of a processes row as newProc queues them. */
const PROC_COLUMNS = 13;

const PROC_COLS = `p.id, p.session_id, p.exec_id, p.pid, p.ppid, p.uid, p.path, p.argv, p.start_ts, p.session_root, p.parent_id,
  pp.exec_id AS parent_exec_id, h.name AS host, s.session AS session`;
const PROC_FROM = `processes p LEFT JOIN processes pp ON pp.id = p.parent_id LEFT JOIN hosts h ON h.id = p.host_id
  LEFT JOIN sessions s ON s.id = p.session_id`;

export class SqliteStore implements EventStore {
  readonly db: Database.Database;
  private hostIds = new Map<string, number>();
  private sessionIds = new BoundedMap<string, number>(65_536);
  private procIds = new BoundedMap<string, number>(262_144);
  private seqs = new Map<number, SeqRanges>();
  /** Process rows assigned an id in this transaction but not written yet (written in bulk). */
  private pendingProcs: unknown[] = [];
  private nextProcId = 0;
  /** Chunk ids are assigned here too: the chunk being built is `nextChunkId` (new processes name it). */
  private nextChunkId = 0;
  private bulk = new Map<string, Database.Statement>();
  private st: Record<string, Database.Statement>;
  private ingestTx: (host: string, items: IngestItem[]) => IngestResult;
  private ingestManyTx: (host: string, batches: IngestItem[][]) => IngestResult[];
  private checkpointer: WalCheckpointer | undefined;

  constructor(path: string, opts: SqliteStoreOptions = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    const db = this.db;
    db.pragma('page_size = 16384'); // only takes effect on a new database
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${opts.sync === 'full' ? 'FULL' : 'NORMAL'}`);
    db.pragma(`cache_size = -${(opts.cacheMiB ?? 64) * 1024}`);
    db.pragma('temp_store = MEMORY');
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new Error(`${path}: store schema version ${version} is newer than this bridle (${SCHEMA_VERSION})`);
    db.exec(SCHEMA);
    // Schema 3 added processes.first_chunk (stores of schema 1 and 2 index every process in chunk_procs).
    if (!(db.pragma('table_info(processes)') as Row[]).some((c) => c.name === 'first_chunk')) db.exec('ALTER TABLE processes ADD COLUMN first_chunk INTEGER');

    this.st = {
      hostGet: db.prepare('SELECT id FROM hosts WHERE name = ?'),
      hostIns: db.prepare('INSERT INTO hosts(name, first_seen, last_seen) VALUES (?, ?, ?)'),
      hostUpd: db.prepare('UPDATE hosts SET last_seen = ?, last_seq = max(last_seq, ?), events = events + ?, lost = lost + ? WHERE id = ?'),
      hostRej: db.prepare('UPDATE hosts SET rejected = rejected + ?, last_seen = ? WHERE id = ?'),
      hostLastSeq: db.prepare('SELECT last_seq FROM hosts WHERE name = ?'),
      sessGetId: db.prepare('SELECT id FROM sessions WHERE host_id = ? AND session = ?'),
      sessIns: db.prepare('INSERT INTO sessions(host_id, session, start_ts) VALUES (?, ?, ?)'),
      sessStart: db.prepare(
        `UPDATE sessions SET agent = ?, origin = ?, backend = ?, mode = ?, policy = ?, uid = ?, root_exec_id = ?, path = ?, argv = ?, start_ts = ?
         WHERE id = ?`,
      ),
      sessEnd: db.prepare('UPDATE sessions SET end_ts = ?, exit_code = ?, signal = ? WHERE id = ?'),
      sessAcc: db.prepare('UPDATE sessions SET events = events + ?, denials = denials + ?, would_deny = would_deny + ?, lost = lost + ? WHERE id = ?'),
      procGetId: db.prepare('SELECT id FROM processes WHERE exec_id = ?'),
      procMaxId: db.prepare('SELECT coalesce(max(id), 0) AS id FROM processes'),
      procDetails: db.prepare(
        `UPDATE processes SET parent_id = coalesce(?, parent_id), session_id = coalesce(session_id, ?), pid = ?, ppid = ?, uid = ?,
           path = coalesce(?, path), argv = CASE WHEN ? <> '[]' THEN ? ELSE argv END,
           start_ts = CASE WHEN start_ts = 0 OR ? < start_ts THEN ? ELSE start_ts END, session_root = max(session_root, ?)
         WHERE id = ?`,
      ),
      chunkIns: db.prepare('INSERT INTO chunks(id, host_id, ts_lo, ts_hi, n, types, denials, meta, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
      chunkMaxId: db.prepare('SELECT coalesce(max(id), 0) AS id FROM chunks'),
      chunkById: db.prepare('SELECT id, meta, data FROM chunks WHERE id = ?'),
      chunkData: db.prepare('SELECT data FROM chunks WHERE id = ?'),
      procChunks: db.prepare(
        `SELECT first_chunk AS chunk_id FROM processes WHERE id = ? AND first_chunk IS NOT NULL
         UNION SELECT chunk_id FROM chunk_procs WHERE proc_id = ? ORDER BY chunk_id`,
      ),
      seqGet: db.prepare('SELECT lo, hi FROM seq_ranges WHERE host_id = ? ORDER BY lo'),
      seqDel: db.prepare('DELETE FROM seq_ranges WHERE host_id = ? AND lo = ?'),
      seqPut: db.prepare('INSERT OR REPLACE INTO seq_ranges(host_id, lo, hi) VALUES (?, ?, ?)'),
      eventCount: db.prepare('SELECT coalesce(sum(n), 0) AS n FROM chunks'),
      procByExec: db.prepare(`SELECT ${PROC_COLS} FROM ${PROC_FROM} WHERE p.exec_id = ?`),
      procById: db.prepare(`SELECT ${PROC_COLS} FROM ${PROC_FROM} WHERE p.id = ?`),
      procChildren: db.prepare(
        `WITH RECURSIVE d(id, depth) AS (
           SELECT ?, 0
           UNION ALL
           SELECT p.id, d.depth + 1 FROM processes p JOIN d ON p.parent_id = d.id WHERE d.depth < 4096
         )
         SELECT ${PROC_COLS} FROM ${PROC_FROM} JOIN d ON p.id = d.id WHERE d.depth > 0 LIMIT ?`,
      ),
      sessById: db.prepare('SELECT s.*, h.name AS host FROM sessions s JOIN hosts h ON h.id = s.host_id WHERE s.id = ?'),
      hostsAll: db.prepare('SELECT * FROM hosts ORDER BY name'),
    };
    this.ingestTx = db.transaction((host: string, items: IngestItem[]) => this.ingestSync(host, items));
    this.ingestManyTx = db.transaction((host: string, batches: IngestItem[][]) =>
      batches.map((items) => (items.length ? this.ingestSync(host, items) : { stored: 0, duplicates: 0, fresh: [] })),
    );
    if (version === 1) this.transact(() => db.transaction(() => this.migrateV1())());
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    if (path !== ':memory:' && opts.checkpointThread !== false) {
      // A worker that fails to start reports it through onFailure, like one that fails later.
      this.checkpointer = new WalCheckpointer({
        path,
        sync: opts.sync === 'full' ? 'FULL' : 'NORMAL',
        onFailure: () => {
          // Back to checkpoints on the writer (SQLite's default bound).
          if (this.db.open) this.db.pragma('wal_autocheckpoint = 1000');
        },
      });
      db.pragma(`wal_autocheckpoint = ${WAL_SAFETY_PAGES}`);
    }
  }

  // ---- interning ----

  private hostId(name: string, now: number): number {
    let id = this.hostIds.get(name);
    if (id !== undefined) return id;
    const row = this.st.hostGet!.get(name) as Row | undefined;
    id = row ? (row.id as number) : Number(this.st.hostIns!.run(name, now, now).lastInsertRowid);
    this.hostIds.set(name, id);
    return id;
  }

  private sessionId(hid: number, session: string, tsMs: number): number {
    const key = `${hid}\u0000${session}`;
    let id = this.sessionIds.get(key);
    if (id !== undefined) return id;
    const row = this.st.sessGetId!.get(hid, session) as Row | undefined;
    // A session first seen through a later event (agent attached late, session_start lost) starts as a bare row.
    id = row ? (row.id as number) : Number(this.st.sessIns!.run(hid, session, tsMs).lastInsertRowid);
    this.sessionIds.set(key, id);
    return id;
  }

  /** Row id of a process image; undefined if the store has never seen it. */
  private procLookup(execId: string): number | undefined {
    let id = this.procIds.get(execId);
    if (id !== undefined) return id;
    const row = this.st.procGetId!.get(execId) as Row | undefined;
    if (!row) return undefined;
    id = row.id as number;
    this.procIds.set(execId, id);
    return id;
  }

  /** Assigns the next process row id and queues the row (written by flushProcs, in bulk). */
  private newProc(execId: string, parentId: number | null, hid: number, sid: number | null, pid: number, ppid: number, uid: number,
    path: string | null, argv: string, startTs: number, root: number): number {
    const id = this.procIdNext();
    this.nextProcId++;
    this.pendingProcs.push(id, execId, parentId, hid, sid, pid, ppid, uid, path, argv, startTs, root, this.chunkIdNext());
    this.procIds.set(execId, id);
    // Bounded, so that the id cache (which may forget the oldest entries) never holds the only copy.
    if (this.pendingProcs.length >= 1024 * PROC_COLUMNS) this.flushProcs();
    return id;
  }

  /** The id the next new process gets. */
  private procIdNext(): number {
    if (this.nextProcId === 0) this.nextProcId = ((this.st.procMaxId!.get() as Row).id as number) + 1;
    return this.nextProcId;
  }

  /** The id of the chunk being built (the next written). */
  private chunkIdNext(): number {
    if (this.nextChunkId === 0) this.nextChunkId = ((this.st.chunkMaxId!.get() as Row).id as number) + 1;
    return this.nextChunkId;
  }

  /** A chunk for new events: processes from `procIdNext()` on have it as their first_chunk, so it does not list them. */
  private newChunk(): ChunkBuilder {
    return new ChunkBuilder(this.procIdNext());
  }

  private flushProcs(): void {
    if (!this.pendingProcs.length) return;
    this.insertRows('INSERT INTO processes(id, exec_id, parent_id, host_id, session_id, pid, ppid, uid, path, argv, start_ts, session_root, first_chunk)', PROC_COLUMNS, this.pendingProcs);
    this.pendingProcs = [];
  }

  /** Row id of a process image, creating a bare row (known only by its exec_id) if new. */
  private procStub(execId: string, hid: number, sid: number | null, pid: number, ppid: number, uid: number): number {
    const known = this.procLookup(execId);
    if (known !== undefined) return known;
    return this.newProc(execId, null, hid, sid, pid, ppid, uid, null, '[]', 0, 0);
  }

  /** INSERT of many rows (`flat`: `cols` values per row), in statements of up to 256 rows. */
  private insertRows(head: string, cols: number, flat: unknown[]): void {
    const rows = flat.length / cols;
    let at = 0;
    for (const size of [256, 64, 16, 4, 1]) {
      while (rows - at >= size) {
        const key = `${size}\u0000${head}`;
        let stmt = this.bulk.get(key);
        if (!stmt) {
          const one = `(${new Array(cols).fill('?').join(', ')})`;
          stmt = this.db.prepare(`${head} VALUES ${new Array(size).fill(one).join(', ')}`);
          this.bulk.set(key, stmt);
        }
        stmt.run(size === rows ? flat : flat.slice(at * cols, (at + size) * cols));
        at += size;
      }
    }
  }

  private seqRanges(hid: number): SeqRanges {
    let r = this.seqs.get(hid);
    if (!r) this.seqs.set(hid, (r = new SeqRanges(this.st.seqGet!.all(hid) as Array<{ lo: number; hi: number }>)));
    return r;
  }

  /** Writes a chunk and what indexes it; returns its row id. */
  private writeChunk(hid: number, c: ChunkBuilder): number {
    const id = this.chunkIdNext();
    this.st.chunkIns!.run(id, hid, c.tsLo, c.tsHi, c.n, c.types, c.denials, c.metaBytes(), c.data());
    this.nextChunkId++;
    const pairs = (set: Set<unknown>): unknown[] => {
      const flat: unknown[] = [];
      for (const k of set) flat.push(k, id);
      return flat;
    };
    if (c.procs.size) this.insertRows('INSERT INTO chunk_procs(proc_id, chunk_id)', 2, pairs(c.procs));
    if (c.sessions.size) this.insertRows('INSERT INTO chunk_sessions(session_id, chunk_id)', 2, pairs(c.sessions));
    if (c.daddrs.size) {
      const flat: unknown[] = [];
      for (const [daddr, at] of c.daddrs) flat.push(daddr, id, encodePositions(at));
      this.insertRows('INSERT INTO chunk_daddrs(daddr, chunk_id, at)', 3, flat);
    }
    return id;
  }

  private ingestSync(host: string, items: IngestItem[]): IngestResult {
    const now = Date.now();
    const hid = this.hostId(host, now);
    const st = this.st;
    const seqs = this.seqRanges(hid);
    const fresh: IngestResult['fresh'] = [];
    let duplicates = 0;
    let maxSeq = 0;
    let lostTotal = 0;
    const sessions = new Map<number, SessionAcc>();
    let lastSession = '';
    let lastSid = 0;
    let chunk = this.newChunk();
    // fresh[chunkStart + i] is the chunk's event i: its id is known once the chunk is written.
    let chunkStart = 0;
    const flushChunk = (): void => {
      const cid = this.writeChunk(hid, chunk);
      for (let i = chunkStart; i < fresh.length; i++) fresh[i]!.id = cid * CHUNK_EVENTS + (i - chunkStart);
      chunk = this.newChunk();
      chunkStart = fresh.length;
    };
    for (const item of items) {
      const ev = item.ev;
      const tsMs = item.tsMs;
      const seq = ev.seq ? ev.seq : 0;
      if (seq) {
        if (seqs.has(seq)) {
          duplicates++;
          continue;
        }
        seqs.add(seq);
        if (seq > maxSeq) maxSeq = seq;
      }
      // Events of one session mostly come in runs: skip the cache lookup (and its key string) for those.
      let sid: number | null = null;
      if (ev.session) {
        if (ev.session !== lastSession) {
          lastSession = ev.session;
          lastSid = this.sessionId(hid, ev.session, tsMs);
        }
        sid = lastSid;
      }
      const isImage = ev.type === 'exec' || ev.type === 'session_start';
      let procId = 0;
      if (ev.exec_id) {
        const known = this.procLookup(ev.exec_id);
        if (known === undefined) procId = isImage ? this.insertImage(ev, hid, sid, tsMs) : this.procStub(ev.exec_id, hid, sid, ev.pid, ev.ppid, ev.uid);
        else {
          procId = known;
          if (isImage) this.updateImage(procId, ev, hid, sid, tsMs);
        }
      }
      if (sid !== null) {
        if (ev.type === 'session_start') {
          st.sessStart!.run(
            ev.agent ?? '', ev.origin ?? '', ev.backend ?? '', ev.mode ?? '', ev.policy ?? '', ev.uid, ev.exec_id, ev.path ?? '',
            JSON.stringify(ev.argv ?? []), tsMs, sid,
          );
        } else if (ev.type === 'session_end') {
          st.sessEnd!.run(tsMs, ev.exit_code ?? null, ev.signal ?? null, sid);
        }
      }
      const daddr = ev.type === 'connect' && ev.daddr ? ev.daddr : null;
      chunk.add(item.raw, tsMs, typeCode(ev.type), ev.verdict ? VERDICTS[ev.verdict] : 0, procId, sid ?? 0, daddr);
      fresh.push({ ev, tsMs, raw: item.raw, id: 0 });
      if (chunk.full) flushChunk();
      const lost = ev.type === 'loss' ? ev.count : 0;
      lostTotal += lost;
      if (sid !== null) {
        let acc = sessions.get(sid);
        if (!acc) sessions.set(sid, (acc = { events: 0, denials: 0, would: 0, lost: 0 }));
        acc.events++;
        if (ev.verdict === 'deny') acc.denials++;
        else if (ev.verdict === 'would_deny') acc.would++;
        acc.lost += lost;
      }
    }
    if (chunk.n) flushChunk();
    this.flushProcs();
    const changes = seqs.takeChanges();
    for (const lo of changes.removed) st.seqDel!.run(hid, lo);
    for (const [lo, hi] of changes.upserts) st.seqPut!.run(hid, lo, hi);
    for (const [sid, a] of sessions) st.sessAcc!.run(a.events, a.denials, a.would, a.lost, sid);
    st.hostUpd!.run(now, maxSeq, fresh.length, lostTotal, hid);
    return { stored: fresh.length, duplicates, fresh };
  }

  private imageFields(ev: BridleEvent & { type: 'exec' | 'session_start' }, hid: number, sid: number | null) {
    const parentId = ev.parent_exec_id ? this.procStub(ev.parent_exec_id, hid, null, ev.ppid, 0, 0) : null;
    return { parentId, path: ev.path || null, argv: JSON.stringify(ev.argv ?? []), root: ev.type === 'session_start' ? 1 : 0, sid };
  }

  private insertImage(ev: BridleEvent, hid: number, sid: number | null, tsMs: number): number {
    const f = this.imageFields(ev as BridleEvent & { type: 'exec' | 'session_start' }, hid, sid);
    return this.newProc(ev.exec_id, f.parentId, hid, sid, ev.pid, ev.ppid, ev.uid, f.path, f.argv, tsMs, f.root);
  }

  private updateImage(id: number, ev: BridleEvent, hid: number, sid: number | null, tsMs: number): void {
    const f = this.imageFields(ev as BridleEvent & { type: 'exec' | 'session_start' }, hid, sid);
    // Its row may still be queued (pending ids are the newest; the first value queued is the first id).
    if (this.pendingProcs.length && id >= (this.pendingProcs[0] as number)) this.flushProcs();
    this.st.procDetails!.run(f.parentId, sid, ev.pid, ev.ppid, ev.uid, f.path, f.argv, f.argv, tsMs, tsMs, f.root, id);
  }

  /**
   * Schema 1 kept one row per event in `events`: its rows become chunks (in their order, per run of one
   * host), their (host, seq) pairs seq ranges, and the table goes. Runs once, in one transaction.
   */
  private migrateV1(): void {
    const db = this.db;
    const exists = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").get();
    if (!exists) return;
    let chunk = new ChunkBuilder();
    let chunkHost = -1;
    // Read in pages: better-sqlite3 allows no write while a statement iterates on the connection.
    const page = db.prepare('SELECT id, host_id, seq, ts, type, session_id, proc_id, verdict, daddr, data FROM events WHERE id > ? ORDER BY id LIMIT 4096');
    for (let after = -1, rows = page.all(after) as Row[]; rows.length; after = rows.at(-1)!.id as number, rows = page.all(after) as Row[]) {
      for (const r of rows) {
        if (chunk.n && (chunk.full || r.host_id !== chunkHost)) {
          this.writeChunk(chunkHost, chunk);
          chunk = new ChunkBuilder();
        }
        chunkHost = r.host_id;
        if (r.seq !== null) {
          const seqs = this.seqRanges(r.host_id);
          if (!seqs.has(r.seq)) seqs.add(r.seq);
        }
        chunk.add(r.data, r.ts, r.type, r.verdict ?? 0, r.proc_id ?? 0, r.session_id ?? 0, r.daddr);
      }
    }
    if (chunk.n) this.writeChunk(chunkHost, chunk);
    for (const [hid, seqs] of this.seqs) {
      for (const [lo, hi] of seqs.takeChanges().upserts) this.st.seqPut!.run(hid, lo, hi);
    }
    db.exec('DROP TABLE events');
  }

  async ingest(host: string, items: IngestItem[]): Promise<IngestResult> {
    if (items.length === 0) return { stored: 0, duplicates: 0, fresh: [] };
    return this.ingestNow(host, items);
  }

  /** One transaction for all: each index page the batches touch is written to the WAL once, not per batch. */
  async ingestMany(host: string, batches: IngestItem[][]): Promise<IngestResult[]> {
    return this.transact(() => this.ingestManyTx(host, batches));
  }

  /** Synchronous form of ingest() for callers that own the store (bench, tests). */
  ingestNow(host: string, items: IngestItem[]): IngestResult {
    return this.transact(() => this.ingestTx(host, items));
  }

  /** Runs an ingest transaction; if it rolls back, the ids it interned are forgotten with it. */
  private transact<T>(tx: () => T): T {
    try {
      return tx();
    } catch (err) {
      this.forgetIds();
      throw err;
    }
  }

  /** After a rolled-back transaction: the interned ids and seq ranges it added name rows that no longer exist. */
  private forgetIds(): void {
    this.hostIds.clear();
    this.sessionIds.clear();
    this.procIds.clear();
    this.seqs.clear();
    this.pendingProcs = [];
    this.nextProcId = 0;
    this.nextChunkId = 0;
  }

  async addRejected(host: string, n: number): Promise<void> {
    const now = Date.now();
    this.st.hostRej!.run(n, now, this.hostId(host, now));
  }

  async lastSeq(host: string): Promise<number> {
    const row = this.st.hostLastSeq!.get(host) as Row | undefined;
    return (row?.last_seq as number | undefined) ?? 0;
  }

  /** Events stored (all hosts). */
  countEvents(): number {
    return (this.st.eventCount!.get() as Row).n as number;
  }

  /** Every stored event in id order, with the process and session row ids it was stored under. */
  allEvents(): Generator<StoredEventRecord> {
    return eventsOf(this.db);
  }

  /** Every event stored in the database at `path`, read-only (while a collector may be writing it). */
  static *readEvents(path: string): Generator<StoredEventRecord> {
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      yield* eventsOf(db);
    } finally {
      db.close();
    }
  }

  private chunk(id: number, cache?: Map<number, ChunkView>): ChunkView {
    let c = cache?.get(id);
    if (c) return c;
    const r = this.st.chunkById!.get(id) as Row;
    c = new ChunkView(r.id, r.meta, r.data);
    cache?.set(id, c);
    return c;
  }

  /** Events of one process in id order (only of `types` when given), at most `limit`. */
  private procEvents(procId: number, limit: number, cache: Map<number, ChunkView>, types?: ReadonlySet<number>): StoredEvent[] {
    const out: StoredEvent[] = [];
    const chunkIds = (this.st.procChunks!.all(procId, procId) as Row[]).map((r) => r.chunk_id as number);
    for (const cid of chunkIds) {
      const c = this.chunk(cid, cache);
      for (let i = 0; i < c.n; i++) {
        if (c.proc(i) !== procId || (types && !types.has(c.type(i)))) continue;
        out.push({ id: c.eventId(i), raw: c.raw(i) });
        if (out.length >= limit) return out;
      }
    }
    return out;
  }

  async queryEvents(f: EventFilter, limit: number): Promise<StoredEvent[]> {
    return this.findEvents(f, limit).map((e) => ({ id: e.id, raw: this.withData(e.c).raw(e.i) }));
  }

  /** Reads a chunk's event bytes if not read yet (queries choose events from the records alone first). */
  private withData(c: ChunkView): ChunkView {
    if (!c.data) c.data = (this.st.chunkData!.get(c.id) as Row).data as Buffer;
    return c;
  }

  /** The newest `limit` events matching `f`, oldest first, as positions in their chunks. */
  private findEvents(f: EventFilter, limit: number): Array<{ id: number; ts: number; c: ChunkView; i: number }> {
    if (limit <= 0) return [];
    // Chunks that can hold a match, newest first; then their events, picked by the per-event records.
    const where: string[] = [];
    const args: unknown[] = [];
    const ids = (sql: string, values: unknown[]): number[] => (this.db.prepare(sql).all(...values) as Row[]).map((r) => r.id as number);
    if (f.hosts?.length) {
      const hids = f.hosts.map((h) => (this.st.hostGet!.get(h) as Row | undefined)?.id as number | undefined).filter((x) => x !== undefined);
      if (!hids.length) return [];
      where.push(`c.host_id IN (${hids.join(',')})`);
    }
    let sids: Set<number> | undefined;
    if (f.session) {
      sids = new Set(ids('SELECT id FROM sessions WHERE session = ?', [f.session]));
      if (!sids.size) return [];
      where.push(`c.id IN (SELECT chunk_id FROM chunk_sessions WHERE session_id IN (${[...sids].join(',')}))`);
    }
    let procId: number | undefined;
    if (f.exec_id) {
      procId = this.procLookup(f.exec_id);
      if (procId === undefined) return [];
      where.push('c.id IN (SELECT first_chunk FROM processes WHERE id = ? UNION SELECT chunk_id FROM chunk_procs WHERE proc_id = ?)');
      args.push(procId, procId);
    }
    let types: Set<number> | undefined;
    if (f.types?.length) {
      types = new Set(f.types.map(typeCode));
      where.push(`(c.types & ${[...types].reduce((m, c) => m | typeBit(c), 0)}) <> 0`);
    }
    let verdicts: Set<number> | undefined;
    if (f.verdicts?.length) {
      verdicts = new Set(f.verdicts.map((v) => VERDICTS[v]));
      if ([...verdicts].every((c) => c >= 2)) where.push('c.denials > 0');
    }
    // With an address, the index entry also says where in the chunk its connects are.
    const from = f.daddr ? 'chunk_daddrs d JOIN chunks c ON c.id = d.chunk_id' : 'chunks c';
    if (f.daddr) {
      where.push('d.daddr = ?');
      args.push(f.daddr);
    }
    if (f.since !== undefined) {
      where.push('c.ts_hi >= ?');
      args.push(f.since);
    }
    if (f.until !== undefined) {
      where.push('c.ts_lo <= ?');
      args.push(f.until);
    }
    // The per-event records and the address index decide everything but a port and the names of types
    // this store does not know: for those the event itself is read (with the one meaning of "matches").
    const decode = (!!f.daddr && !!f.dport) || !!types?.has(F.event.other); // matchEvent reads a port only with an address
    const connect = F.event.connect;
    const found: Array<{ id: number; ts: number; c: ChunkView; i: number }> = [];
    let floor = Number.NEGATIVE_INFINITY; // the oldest time among the `limit` newest found so far
    // Records only (the events' bytes come after them in the row, and are read for the events chosen).
    const sql = `SELECT c.id, c.ts_hi, c.meta${f.daddr ? ', d.at' : ''} FROM ${from} ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY c.ts_hi DESC, c.id DESC`;
    for (const r of this.db.prepare(sql).iterate(...args) as IterableIterator<Row>) {
      if (found.length >= limit && (r.ts_hi as number) < floor) break;
      const c = new ChunkView(r.id, r.meta);
      const at = r.at ? decodePositions(r.at as Buffer) : undefined;
      for (let k = 0, end = at ? at.length : c.n; k < end; k++) {
        const i = at ? at[k]! : k;
        const ts = c.ts(i);
        if (ts < floor) continue;
        if (procId !== undefined && c.proc(i) !== procId) continue;
        if (sids && !sids.has(c.session(i))) continue;
        if (types && !types.has(c.type(i))) continue;
        if (verdicts && !verdicts.has(c.verdict(i))) continue;
        if (f.since !== undefined && ts < f.since) continue;
        if (f.until !== undefined && ts > f.until) continue;
        if (f.daddr && c.type(i) !== connect) continue;
        if (decode) {
          const { ev, tsMs } = decodeForStore(this.withData(c).view(i)); // what matchEvent reads
          if (!matchEvent(f, ev, tsMs)) continue;
        }
        found.push({ id: c.eventId(i), ts, c, i });
      }
      if (found.length >= limit) {
        found.sort(newestFirst);
        found.length = limit;
        floor = found[limit - 1]!.ts;
      }
    }
    found.sort(newestFirst);
    if (found.length > limit) found.length = limit;
    return found.reverse();
  }

  private proc(r: Row): ProcessRow & { id: number; parent_id: number | null; session_id: number | null } {
    return {
      id: r.id,
      session_id: r.session_id,
      parent_id: r.parent_id,
      exec_id: r.exec_id,
      parent_exec_id: r.parent_exec_id ?? '',
      host: r.host ?? '',
      session: r.session ?? '',
      pid: r.pid,
      ppid: r.ppid,
      uid: r.uid,
      path: r.path ?? '',
      argv: JSON.parse(r.argv) as string[],
      start: r.start_ts,
      session_root: r.session_root === 1,
    };
  }

  // Object literals rather than `{ ...p, more }`: on Node 20's V8 that form costs microseconds per object and
  // leaves garbage that makes scavenges slow (measured in bench/collector.bench.ts).
  private static strip(p: ProcessRow & { id?: number; parent_id?: number | null }): ProcessRow {
    return {
      exec_id: p.exec_id, parent_exec_id: p.parent_exec_id, host: p.host, session: p.session, pid: p.pid, ppid: p.ppid, uid: p.uid,
      path: p.path, argv: p.argv, start: p.start, session_root: p.session_root,
    };
  }

  /** Parent chain, nearest first, up to the session root (or the first process with no known parent). */
  private ancestorsOf(p: ReturnType<SqliteStore['proc']>): Array<ReturnType<SqliteStore['proc']>> {
    const out: Array<ReturnType<SqliteStore['proc']>> = [];
    const seen = new Set([p.id]);
    let cur = p;
    while (!cur.session_root && cur.parent_id !== null && !seen.has(cur.parent_id) && out.length < 256) {
      seen.add(cur.parent_id);
      const row = this.st.procById!.get(cur.parent_id) as Row | undefined;
      if (!row) break;
      cur = this.proc(row);
      out.push(cur);
    }
    return out;
  }

  async lineage(execId: string, maxDescendants: number, maxEventsPerProcess = 10_000): Promise<LineageResult | undefined> {
    const row = this.st.procByExec!.get(execId) as Row | undefined;
    if (!row) return undefined;
    const target = this.proc(row);
    const ancestors = this.ancestorsOf(target).reverse();
    const kids = (this.st.procChildren!.all(target.id, maxDescendants + 1) as Row[]).map((r) => this.proc(r));
    const truncated = kids.length > maxDescendants;
    if (truncated) kids.length = maxDescendants;
    let truncatedEvents = false;
    const chunks = new Map<number, ChunkView>();
    const node = (p: ReturnType<SqliteStore['proc']>, relation: LineageNode['relation']): LineageNode => {
      const events = this.procEvents(p.id, maxEventsPerProcess + 1, chunks);
      if (events.length > maxEventsPerProcess) {
        events.length = maxEventsPerProcess;
        truncatedEvents = true;
      }
      const n = SqliteStore.strip(p) as LineageNode;
      n.relation = relation;
      n.events = events;
      return n;
    };
    const processes = [...ancestors.map((p) => node(p, 'ancestor')), node(target, 'target'), ...kids.map((p) => node(p, 'descendant'))];
    const result: LineageResult = { processes, truncated: truncated || truncatedEvents };
    const sid = target.session_id;
    const srow = sid != null ? (this.st.sessById!.get(sid) as Row | undefined) : undefined;
    if (srow) result.session = this.sessionRow(srow);
    return result;
  }

  private sessionRow(r: Row): SessionRow {
    const s: SessionRow = {
      host: r.host, session: r.session, agent: r.agent, origin: r.origin, backend: r.backend, mode: r.mode, policy: r.policy,
      uid: r.uid, root_exec_id: r.root_exec_id, path: r.path, argv: JSON.parse(r.argv) as string[], start: r.start_ts, end: r.end_ts,
      events: r.events, denials: r.denials, would_deny: r.would_deny, lost: r.lost,
    };
    if (r.exit_code !== null) s.exit_code = r.exit_code;
    if (r.signal !== null) s.signal = r.signal;
    return s;
  }

  async sessions(q: SessionQuery): Promise<SessionRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.hosts?.length) {
      where.push(`h.name IN (${q.hosts.map(() => '?').join(',')})`);
      args.push(...q.hosts);
    }
    if (q.session) {
      where.push('s.session = ?');
      args.push(q.session);
    }
    if (q.since !== undefined) {
      where.push('(s.start_ts >= ? OR s.end_ts >= ? OR s.end_ts = 0)');
      args.push(q.since, q.since);
    }
    if (q.withDenials) where.push('(s.denials > 0 OR s.would_deny > 0)');
    const sql = `SELECT s.*, h.name AS host FROM sessions s JOIN hosts h ON h.id = s.host_id
      ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY s.start_ts DESC, s.id DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, q.limit ?? 100) as Row[]).map((r) => this.sessionRow(r));
  }

  async hosts(): Promise<HostRow[]> {
    return (this.st.hostsAll!.all() as Row[]).map((r) => ({
      host: r.name, first_seen: r.first_seen, last_seen: r.last_seen, last_seq: r.last_seq, events: r.events, lost: r.lost, rejected: r.rejected,
    }));
  }

  async findProcesses(q: ProcessQuery): Promise<{ matches: ProcessMatchRow[]; truncated: boolean }> {
    const limit = q.limit ?? 100;
    const hostIds = q.hosts?.length
      ? new Set(q.hosts.map((h) => (this.st.hostGet!.get(h) as Row | undefined)?.id as number | undefined).filter((x) => x !== undefined))
      : undefined;
    const since = q.since ?? 0;
    const until = q.until ?? Number.MAX_SAFE_INTEGER;
    const byProc = new Map<number, StoredEvent[]>();
    const chunks = new Map<number, ChunkView>();
    let truncated = false;
    const pathMatches = (path: string): boolean => (q.path!.includes('/') ? path === q.path : path === q.path || path.endsWith('/' + q.path));
    if (q.daddr) {
      const filter: EventFilter = { daddr: q.daddr, ...(q.dport ? { dport: q.dport } : {}), ...(q.since !== undefined ? { since: q.since } : {}), ...(q.until !== undefined ? { until: q.until } : {}), ...(q.hosts?.length ? { hosts: q.hosts } : {}) };
      for (const e of this.findEvents(filter, 50_000)) {
        const key = e.c.proc(e.i) || -1;
        let list = byProc.get(key);
        if (!list) {
          if (byProc.size >= limit) {
            truncated = true;
            continue;
          }
          byProc.set(key, (list = []));
        }
        if (list.length < 100) list.push({ id: e.id, raw: this.withData(e.c).raw(e.i) });
      }
    } else if (q.path) {
      const exact = q.path.includes('/');
      const sql = exact
        ? 'SELECT id, host_id FROM processes WHERE path = ? AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?'
        : "SELECT id, host_id FROM processes WHERE (path = ? OR path LIKE '%/' || ? ESCAPE '\\') AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?";
      // a basename is matched as written: '_' and '%' in it are not wildcards
      const like = q.path.replace(/[\\%_]/g, '\\$&');
      const rows = this.db.prepare(sql).all(...(exact ? [q.path, since, until, limit + 1] : [q.path, like, since, until, limit + 1])) as Row[];
      if (rows.length > limit) {
        truncated = true;
        rows.length = limit;
      }
      for (const r of rows) {
        if (hostIds && !hostIds.has(r.host_id)) continue;
        byProc.set(r.id, this.procEvents(r.id, 4, chunks, IMAGE_TYPES));
      }
    }
    const matches: ProcessMatchRow[] = [];
    for (const [procId, evidence] of byProc) {
      const row = procId >= 0 ? (this.st.procById!.get(procId) as Row | undefined) : undefined;
      if (!row) {
        matches.push({
          process: { exec_id: '', parent_exec_id: '', host: '', session: '', pid: 0, ppid: 0, uid: 0, path: '', argv: [], start: 0, session_root: false },
          evidence, ancestors: [],
        });
        continue;
      }
      const process = this.proc(row);
      // Both an address and a path: the processes that ran the path and connected to the address.
      if (q.daddr && q.path && !pathMatches(process.path)) continue;
      matches.push({ process: SqliteStore.strip(process), evidence, ancestors: this.ancestorsOf(process).map((a) => SqliteStore.strip(a)) });
    }
    return { matches, truncated };
  }

  async close(): Promise<void> {
    await this.checkpointer?.close();
    this.checkpointer = undefined;
    if (this.db.open) {
      try {
        this.db.pragma('wal_checkpoint(TRUNCATE)');
      } catch {
        // a checkpoint is an optimisation; the WAL is replayed on next open anyway
      }
      this.db.close();
    }
  }
}
