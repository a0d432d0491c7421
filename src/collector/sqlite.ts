// The embedded store: one SQLite file (WAL, 16 KiB pages), written with prepared statements, one
// transaction per batch.
//
// Tables: `events` (one row per event: indexed columns + the protobuf bytes), `processes` (one row per
// process image: the lineage graph, parent by row id), `sessions`, `hosts`. Strings that repeat on every
// event (host, session, exec_id) are interned into integer ids, so the per-event indexes are small and
// their inserts land on a few hot pages (an index keyed by a random-looking exec_id string cost ~40 µs
// per event here; by process row id, ~1 µs). Interning uses in-memory caches in front of the tables.
// Nullable indexed columns hold NULL rather than '' so that partial indexes (`… IS NOT NULL`) serve
// `col = ?` lookups.
//
// Durability: synchronous=NORMAL in WAL mode keeps every committed (so every acknowledged) batch through
// a crash of the collector process (kill -9); `sync: 'full'` also through a power cut, at some cost.
// Checkpoints (copying the WAL back into the database file) run on a worker thread (checkpointer.ts), so
// that a commit on the ingest path only appends to the WAL.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { F, VERDICTS } from '../events/proto.js';
import type { EventFilter } from '../events/query.js';
import type { BridleEvent } from '../events/types.js';
import { WalCheckpointer } from './checkpointer.js';
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

const SCHEMA_VERSION = 1;

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
  session_root INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS processes_parent ON processes(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_path ON processes(path, start_ts) WHERE path IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  host_id INTEGER NOT NULL,
  seq INTEGER,
  ts INTEGER NOT NULL,
  type INTEGER NOT NULL,
  session_id INTEGER,
  proc_id INTEGER,
  verdict INTEGER,
  daddr TEXT,
  dport INTEGER,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_host_seq ON events(host_id, seq);
CREATE INDEX IF NOT EXISTS events_proc ON events(proc_id) WHERE proc_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, ts) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_denied ON events(verdict, ts) WHERE verdict >= 2;
CREATE INDEX IF NOT EXISTS events_daddr ON events(daddr, ts) WHERE daddr IS NOT NULL;
`;

/** events.type: the Event.body field number of the type (stable, never reused); 99 = a type this schema does not know. */
const TYPE_CODE: Record<string, number> = { ...F.event };
const typeCode = (t: string): number => TYPE_CODE[t] ?? F.event.other;

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

const PROC_COLS = `p.id, p.exec_id, p.pid, p.ppid, p.uid, p.path, p.argv, p.start_ts, p.session_root, p.parent_id,
  pp.exec_id AS parent_exec_id, h.name AS host, s.session AS session`;
const PROC_FROM = `processes p LEFT JOIN processes pp ON pp.id = p.parent_id LEFT JOIN hosts h ON h.id = p.host_id
  LEFT JOIN sessions s ON s.id = p.session_id`;

export class SqliteStore implements EventStore {
  readonly db: Database.Database;
  private hostIds = new Map<string, number>();
  private sessionIds = new BoundedMap<string, number>(65_536);
  private procIds = new BoundedMap<string, number>(262_144);
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
    db.pragma(`user_version = ${SCHEMA_VERSION}`);

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
      procIns: db.prepare(
        `INSERT INTO processes(exec_id, parent_id, host_id, session_id, pid, ppid, uid, path, argv, start_ts, session_root)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      procDetails: db.prepare(
        `UPDATE processes SET parent_id = coalesce(?, parent_id), session_id = coalesce(session_id, ?), pid = ?, ppid = ?, uid = ?,
           path = coalesce(?, path), argv = CASE WHEN ? <> '[]' THEN ? ELSE argv END,
           start_ts = CASE WHEN start_ts = 0 OR ? < start_ts THEN ? ELSE start_ts END, session_root = max(session_root, ?)
         WHERE id = ?`,
      ),
      evIns: db.prepare(
        `INSERT INTO events(host_id, seq, ts, type, session_id, proc_id, verdict, daddr, dport, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(host_id, seq) DO NOTHING`,
      ),
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
      evByProc: db.prepare('SELECT id, data FROM events WHERE proc_id = ? ORDER BY id LIMIT ?'),
      evExecOf: db.prepare(`SELECT id, data FROM events WHERE proc_id = ? AND type IN (${F.event.exec}, ${F.event.session_start}) ORDER BY id LIMIT 4`),
      procSession: db.prepare('SELECT session_id FROM processes WHERE id = ?'),
      sessById: db.prepare('SELECT s.*, h.name AS host FROM sessions s JOIN hosts h ON h.id = s.host_id WHERE s.id = ?'),
      hostsAll: db.prepare('SELECT * FROM hosts ORDER BY name'),
    };
    this.ingestTx = db.transaction((host: string, items: IngestItem[]) => this.ingestSync(host, items));
    this.ingestManyTx = db.transaction((host: string, batches: IngestItem[][]) =>
      batches.map((items) => (items.length ? this.ingestSync(host, items) : { stored: 0, duplicates: 0, fresh: [] })),
    );
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

  /** Row id of a process image, creating a bare row (known only by its exec_id) if new. */
  private procStub(execId: string, hid: number, sid: number | null, pid: number, ppid: number, uid: number): number {
    const known = this.procLookup(execId);
    if (known !== undefined) return known;
    const id = Number(this.st.procIns!.run(execId, null, hid, sid, pid, ppid, uid, null, '[]', 0, 0).lastInsertRowid);
    this.procIds.set(execId, id);
    return id;
  }

  private ingestSync(host: string, items: IngestItem[]): IngestResult {
    const now = Date.now();
    const hid = this.hostId(host, now);
    const st = this.st;
    const fresh: IngestResult['fresh'] = [];
    let duplicates = 0;
    let maxSeq = 0;
    let lostTotal = 0;
    const sessions = new Map<number, SessionAcc>();
    let lastSession = '';
    let lastSid = 0;
    for (const item of items) {
      const ev = item.ev;
      const tsMs = item.tsMs;
      const seq = ev.seq ? ev.seq : null;
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
      let procId: number | null = null;
      let newImage = false;
      if (ev.exec_id) {
        const known = this.procLookup(ev.exec_id);
        if (known !== undefined) procId = known;
        else if (isImage) {
          procId = this.insertImage(ev, hid, sid, tsMs);
          newImage = true;
        } else procId = this.procStub(ev.exec_id, hid, sid, ev.pid, ev.ppid, ev.uid);
      }
      const daddr = ev.type === 'connect' && ev.daddr ? ev.daddr : null;
      const dport = ev.type === 'connect' ? ev.dport : null;
      const verdict = ev.verdict ? VERDICTS[ev.verdict] : null;
      const r = st.evIns!.run(hid, seq, tsMs, typeCode(ev.type), sid, procId, verdict, daddr, dport, item.raw);
      if (r.changes === 0) {
        duplicates++;
        continue;
      }
      if (seq !== null && seq > maxSeq) maxSeq = seq;
      fresh.push({ ev, tsMs, raw: item.raw, id: Number(r.lastInsertRowid) });
      if (isImage && procId !== null && !newImage) this.updateImage(procId, ev, hid, sid, tsMs);
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
    const id = Number(this.st.procIns!.run(ev.exec_id, f.parentId, hid, sid, ev.pid, ev.ppid, ev.uid, f.path, f.argv, tsMs, f.root).lastInsertRowid);
    this.procIds.set(ev.exec_id, id);
    return id;
  }

  private updateImage(id: number, ev: BridleEvent, hid: number, sid: number | null, tsMs: number): void {
    const f = this.imageFields(ev as BridleEvent & { type: 'exec' | 'session_start' }, hid, sid);
    this.st.procDetails!.run(f.parentId, sid, ev.pid, ev.ppid, ev.uid, f.path, f.argv, f.argv, tsMs, tsMs, f.root, id);
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

  /** After a rolled-back transaction: the interned ids it added name rows that no longer exist. */
  private forgetIds(): void {
    this.hostIds.clear();
    this.sessionIds.clear();
    this.procIds.clear();
  }

  async addRejected(host: string, n: number): Promise<void> {
    const now = Date.now();
    this.st.hostRej!.run(n, now, this.hostId(host, now));
  }

  async lastSeq(host: string): Promise<number> {
    const row = this.st.hostLastSeq!.get(host) as Row | undefined;
    return (row?.last_seq as number | undefined) ?? 0;
  }

  async queryEvents(f: EventFilter, limit: number): Promise<StoredEvent[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const inList = (col: string, values: unknown[]): void => {
      where.push(`${col} IN (${values.map(() => '?').join(',')})`);
      args.push(...values);
    };
    if (f.hosts?.length) inList('host_id', f.hosts.map((h) => (this.st.hostGet!.get(h) as Row | undefined)?.id ?? -1));
    if (f.session) {
      where.push('session_id IN (SELECT id FROM sessions WHERE session = ?)');
      args.push(f.session);
    }
    if (f.exec_id) {
      where.push('proc_id = (SELECT id FROM processes WHERE exec_id = ?)');
      args.push(f.exec_id);
    }
    if (f.types?.length) inList('type', [...new Set(f.types.map(typeCode))]);
    if (f.verdicts?.length) {
      const codes = f.verdicts.map((v) => VERDICTS[v]);
      inList('verdict', codes);
      if (codes.every((c) => c >= 2)) where.push('verdict >= 2'); // lets SQLite use the events_denied index
    }
    if (f.daddr) {
      where.push('daddr = ?');
      args.push(f.daddr);
      if (f.dport) {
        where.push('dport = ?');
        args.push(f.dport);
      }
    }
    if (f.since !== undefined) {
      where.push('ts >= ?');
      args.push(f.since);
    }
    if (f.until !== undefined) {
      where.push('ts <= ?');
      args.push(f.until);
    }
    const sql = `SELECT id, data FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY ts DESC, id DESC LIMIT ?`;
    const rows = this.db.prepare(sql).all(...args, limit) as Row[];
    rows.reverse();
    return rows.map((r) => ({ id: r.id as number, raw: r.data as Uint8Array }));
  }

  private proc(r: Row): ProcessRow & { id: number; parent_id: number | null } {
    return {
      id: r.id,
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

  private events(procId: number, limit: number): StoredEvent[] {
    return (this.st.evByProc!.all(procId, limit) as Row[]).map((r) => ({ id: r.id as number, raw: r.data as Uint8Array }));
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
    const node = (p: ReturnType<SqliteStore['proc']>, relation: LineageNode['relation']): LineageNode => {
      const events = this.events(p.id, maxEventsPerProcess + 1);
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
    const sid = (this.st.procSession!.get(target.id) as Row | undefined)?.session_id as number | null | undefined;
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
    let truncated = false;
    const pathMatches = (path: string): boolean => (q.path!.includes('/') ? path === q.path : path === q.path || path.endsWith('/' + q.path));
    if (q.daddr) {
      const rows = this.db
        .prepare(`SELECT id, proc_id, host_id, data FROM events WHERE daddr = ? AND ts >= ? AND ts <= ? ${q.dport ? 'AND dport = ?' : ''} ORDER BY ts DESC LIMIT ?`)
        .all(...[q.daddr, since, until, ...(q.dport ? [q.dport] : []), 50_000]) as Row[];
      for (const r of rows.reverse()) {
        if (hostIds && !hostIds.has(r.host_id)) continue;
        const key = (r.proc_id as number | null) ?? -1;
        let list = byProc.get(key);
        if (!list) {
          if (byProc.size >= limit) {
            truncated = true;
            continue;
          }
          byProc.set(key, (list = []));
        }
        if (list.length < 100) list.push({ id: r.id, raw: r.data });
      }
    } else if (q.path) {
      const exact = q.path.includes('/');
      const sql = exact
        ? 'SELECT id, host_id FROM processes WHERE path = ? AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?'
        : "SELECT id, host_id FROM processes WHERE (path = ? OR path LIKE '%/' || ?) AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?";
      const rows = this.db.prepare(sql).all(...(exact ? [q.path, since, until, limit + 1] : [q.path, q.path, since, until, limit + 1])) as Row[];
      if (rows.length > limit) {
        truncated = true;
        rows.length = limit;
      }
      for (const r of rows) {
        if (hostIds && !hostIds.has(r.host_id)) continue;
        byProc.set(r.id, (this.st.evExecOf!.all(r.id) as Row[]).map((e) => ({ id: e.id as number, raw: e.data as Uint8Array })));
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
