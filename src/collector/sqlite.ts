// The embedded store: one SQLite file (WAL), written with prepared statements, one transaction per batch.
//
// Tables: `events` (one row per event: indexed columns + the protobuf bytes), `processes` (one row per
// process image, from exec and session_start events: the lineage graph), `sessions`, `hosts`.
// Empty strings are stored as NULL in indexed columns so that partial indexes (`… IS NOT NULL`) are used
// by `col = ?` lookups and stay small.
//
// Durability: synchronous=NORMAL in WAL mode survives a crash of the collector process (kill -9) with
// every acknowledged batch; `sync: 'full'` also survives power loss, at some cost in throughput.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { EventFilter } from '../events/query.js';
import type { BridleEvent } from '../events/types.js';
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
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  host_id INTEGER NOT NULL,
  seq INTEGER,
  ts INTEGER NOT NULL,
  type TEXT NOT NULL,
  session TEXT,
  exec_id TEXT,
  verdict TEXT,
  daddr TEXT,
  dport INTEGER,
  data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_host_seq ON events(host_id, seq);
CREATE INDEX IF NOT EXISTS events_exec ON events(exec_id, ts) WHERE exec_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_session ON events(session, ts) WHERE session IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_verdict ON events(verdict, ts) WHERE verdict IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_daddr ON events(daddr, ts) WHERE daddr IS NOT NULL;
CREATE TABLE IF NOT EXISTS processes (
  exec_id TEXT PRIMARY KEY,
  parent_exec_id TEXT,
  host_id INTEGER NOT NULL,
  session TEXT NOT NULL,
  pid INTEGER NOT NULL,
  ppid INTEGER NOT NULL,
  uid INTEGER NOT NULL,
  path TEXT NOT NULL,
  argv TEXT NOT NULL,
  start_ts INTEGER NOT NULL,
  session_root INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processes_parent ON processes(parent_exec_id) WHERE parent_exec_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS processes_path ON processes(path, start_ts);
CREATE TABLE IF NOT EXISTS sessions (
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
  PRIMARY KEY (host_id, session)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_start ON sessions(start_ts);
`;

export interface SqliteStoreOptions {
  /** 'normal' (default): survives a collector crash. 'full': also survives power loss. */
  sync?: 'normal' | 'full';
  /** Page cache in MiB (default 64). */
  cacheMiB?: number;
}

interface SessionAcc {
  events: number;
  denials: number;
  would: number;
  lost: number;
}

const nz = (s: string | undefined): string | null => (s ? s : null);

type Row = Record<string, any>;

export class SqliteStore implements EventStore {
  readonly db: Database.Database;
  private hostIds = new Map<string, number>();
  private hostNames = new Map<number, string>();
  private st: Record<string, Database.Statement>;
  private ingestTx: (host: string, items: IngestItem[]) => IngestResult;

  constructor(path: string, opts: SqliteStoreOptions = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    const db = this.db;
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
      evIns: db.prepare(
        `INSERT INTO events(host_id, seq, ts, type, session, exec_id, verdict, daddr, dport, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(host_id, seq) DO NOTHING`,
      ),
      procUpsert: db.prepare(
        `INSERT INTO processes(exec_id, parent_exec_id, host_id, session, pid, ppid, uid, path, argv, start_ts, session_root)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(exec_id) DO UPDATE SET
           parent_exec_id = coalesce(excluded.parent_exec_id, parent_exec_id),
           path = CASE WHEN excluded.path <> '' THEN excluded.path ELSE path END,
           argv = CASE WHEN excluded.argv <> '[]' THEN excluded.argv ELSE argv END,
           start_ts = CASE WHEN start_ts = 0 OR (excluded.start_ts > 0 AND excluded.start_ts < start_ts) THEN excluded.start_ts ELSE start_ts END,
           session_root = max(session_root, excluded.session_root)`,
      ),
      sessStart: db.prepare(
        `INSERT INTO sessions(host_id, session, agent, origin, backend, mode, policy, uid, root_exec_id, path, argv, start_ts)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(host_id, session) DO UPDATE SET agent = excluded.agent, origin = excluded.origin,
           backend = excluded.backend, mode = excluded.mode, policy = excluded.policy, uid = excluded.uid,
           root_exec_id = excluded.root_exec_id, path = excluded.path, argv = excluded.argv, start_ts = excluded.start_ts`,
      ),
      sessEnsure: db.prepare('INSERT INTO sessions(host_id, session, start_ts) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      sessEnd: db.prepare('UPDATE sessions SET end_ts = ?, exit_code = ?, signal = ? WHERE host_id = ? AND session = ?'),
      sessAcc: db.prepare(
        'UPDATE sessions SET events = events + ?, denials = denials + ?, would_deny = would_deny + ?, lost = lost + ? WHERE host_id = ? AND session = ?',
      ),
      procGet: db.prepare('SELECT * FROM processes WHERE exec_id = ?'),
      procChildren: db.prepare(
        `WITH RECURSIVE d(exec_id, depth) AS (
           SELECT ?, 0
           UNION ALL
           SELECT p.exec_id, d.depth + 1 FROM processes p JOIN d ON p.parent_exec_id = d.exec_id WHERE d.depth < 4096
         )
         SELECT p.* FROM d JOIN processes p ON p.exec_id = d.exec_id WHERE d.depth > 0 LIMIT ?`,
      ),
      evByExec: db.prepare('SELECT id, data FROM events WHERE exec_id = ? ORDER BY ts, id LIMIT ?'),
      evExecOf: db.prepare("SELECT id, data FROM events WHERE exec_id = ? AND type IN ('exec', 'session_start') ORDER BY ts, id LIMIT 4"),
      firstEvOf: db.prepare('SELECT host_id, session, ts FROM events WHERE exec_id = ? ORDER BY ts, id LIMIT 1'),
      sessGet: db.prepare('SELECT s.*, h.name AS host FROM sessions s JOIN hosts h ON h.id = s.host_id WHERE s.host_id = ? AND s.session = ?'),
      hostsAll: db.prepare('SELECT * FROM hosts ORDER BY name'),
    };
    this.ingestTx = db.transaction((host: string, items: IngestItem[]) => this.ingestSync(host, items));
  }

  private hostId(name: string, now: number): number {
    let id = this.hostIds.get(name);
    if (id !== undefined) return id;
    const row = this.st.hostGet!.get(name) as Row | undefined;
    id = row ? (row.id as number) : Number(this.st.hostIns!.run(name, now, now).lastInsertRowid);
    this.hostIds.set(name, id);
    this.hostNames.set(id, name);
    return id;
  }

  private hostName(id: number): string {
    let name = this.hostNames.get(id);
    if (name === undefined) {
      const row = this.db.prepare('SELECT name FROM hosts WHERE id = ?').get(id) as Row | undefined;
      name = (row?.name as string | undefined) ?? '';
      this.hostNames.set(id, name);
    }
    return name;
  }

  private ingestSync(host: string, items: IngestItem[]): IngestResult {
    const now = Date.now();
    const hid = this.hostId(host, now);
    const st = this.st;
    const fresh: IngestResult['fresh'] = [];
    let duplicates = 0;
    let maxSeq = 0;
    let lostTotal = 0;
    const sessions = new Map<string, SessionAcc>();
    for (const item of items) {
      const ev = item.ev;
      const seq = ev.seq ? ev.seq : null;
      const daddr = ev.type === 'connect' ? nz(ev.daddr) : null;
      const dport = ev.type === 'connect' ? ev.dport : null;
      const r = st.evIns!.run(hid, seq, item.tsMs, ev.type, nz(ev.session), nz(ev.exec_id), ev.verdict ?? null, daddr, dport, item.raw);
      if (r.changes === 0) {
        duplicates++;
        continue;
      }
      if (seq !== null && seq > maxSeq) maxSeq = seq;
      fresh.push({ ...item, id: Number(r.lastInsertRowid) });
      this.indexEvent(hid, ev, item.tsMs);
      const lost = ev.type === 'loss' ? ev.count : 0;
      lostTotal += lost;
      if (ev.session) {
        let acc = sessions.get(ev.session);
        if (!acc) sessions.set(ev.session, (acc = { events: 0, denials: 0, would: 0, lost: 0 }));
        acc.events++;
        if (ev.verdict === 'deny') acc.denials++;
        else if (ev.verdict === 'would_deny') acc.would++;
        acc.lost += lost;
      }
    }
    for (const [session, a] of sessions) {
      if (st.sessAcc!.run(a.events, a.denials, a.would, a.lost, hid, session).changes === 0) {
        // Events of a session whose session_start we have not seen (agent attached late, or lost).
        st.sessEnsure!.run(hid, session, 0);
        st.sessAcc!.run(a.events, a.denials, a.would, a.lost, hid, session);
      }
    }
    st.hostUpd!.run(now, maxSeq, fresh.length, lostTotal, hid);
    return { stored: fresh.length, duplicates, fresh };
  }

  /** Secondary tables kept from single events: processes (lineage graph) and sessions. */
  private indexEvent(hid: number, ev: BridleEvent, tsMs: number): void {
    const st = this.st;
    switch (ev.type) {
      case 'exec':
        st.procUpsert!.run(ev.exec_id, nz(ev.parent_exec_id), hid, ev.session, ev.pid, ev.ppid, ev.uid, ev.path, JSON.stringify(ev.argv ?? []), tsMs, 0);
        break;
      case 'session_start':
        if (ev.exec_id) {
          st.procUpsert!.run(ev.exec_id, nz(ev.parent_exec_id), hid, ev.session, ev.pid, ev.ppid, ev.uid, ev.path ?? '', JSON.stringify(ev.argv ?? []), tsMs, 1);
        }
        st.sessStart!.run(
          hid, ev.session, ev.agent ?? '', ev.origin ?? '', ev.backend ?? '', ev.mode ?? '', ev.policy ?? '', ev.uid,
          ev.exec_id, ev.path ?? '', JSON.stringify(ev.argv ?? []), tsMs,
        );
        break;
      case 'session_end':
        st.sessEnsure!.run(hid, ev.session, 0);
        st.sessEnd!.run(tsMs, ev.exit_code ?? null, ev.signal ?? null, hid, ev.session);
        break;
      default:
        break;
    }
  }

  async ingest(host: string, items: IngestItem[]): Promise<IngestResult> {
    if (items.length === 0) return { stored: 0, duplicates: 0, fresh: [] };
    return this.ingestTx(host, items);
  }

  /** Synchronous form of ingest() for callers that own the store (bench, tests). */
  ingestNow(host: string, items: IngestItem[]): IngestResult {
    return this.ingestTx(host, items);
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
    if (f.hosts?.length) {
      const ids = f.hosts.map((h) => this.hostIds.get(h) ?? (this.st.hostGet!.get(h) as Row | undefined)?.id).filter((x) => x !== undefined);
      if (ids.length === 0) return [];
      where.push(`host_id IN (${ids.map(() => '?').join(',')})`);
      args.push(...ids);
    }
    if (f.session) {
      where.push('session = ?');
      args.push(f.session);
    }
    if (f.exec_id) {
      where.push('exec_id = ?');
      args.push(f.exec_id);
    }
    if (f.types?.length) {
      where.push(`type IN (${f.types.map(() => '?').join(',')})`);
      args.push(...f.types);
    }
    if (f.verdicts?.length) {
      where.push(`verdict IN (${f.verdicts.map(() => '?').join(',')})`);
      args.push(...f.verdicts);
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

  private proc(r: Row): ProcessRow {
    return {
      exec_id: r.exec_id,
      parent_exec_id: r.parent_exec_id ?? '',
      host: this.hostName(r.host_id),
      session: r.session,
      pid: r.pid,
      ppid: r.ppid,
      uid: r.uid,
      path: r.path,
      argv: JSON.parse(r.argv) as string[],
      start: r.start_ts,
      session_root: r.session_root === 1,
    };
  }

  /** A process known only from its events (no exec seen: it predates the agent, or its exec was lost). */
  private stubProc(execId: string): ProcessRow | undefined {
    const r = this.st.firstEvOf!.get(execId) as Row | undefined;
    if (!r) return undefined;
    return {
      exec_id: execId, parent_exec_id: '', host: this.hostName(r.host_id), session: r.session ?? '', pid: 0, ppid: 0, uid: 0,
      path: '', argv: [], start: 0, session_root: false,
    };
  }

  private events(execId: string, limit: number): StoredEvent[] {
    return (this.st.evByExec!.all(execId, limit) as Row[]).map((r) => ({ id: r.id as number, raw: r.data as Uint8Array }));
  }

  private ancestorsOf(p: ProcessRow): ProcessRow[] {
    const out: ProcessRow[] = [];
    const seen = new Set([p.exec_id]);
    let cur = p;
    while (!cur.session_root && cur.parent_exec_id && !seen.has(cur.parent_exec_id) && out.length < 256) {
      seen.add(cur.parent_exec_id);
      const row = this.st.procGet!.get(cur.parent_exec_id) as Row | undefined;
      const parent = row ? this.proc(row) : this.stubProc(cur.parent_exec_id);
      if (!parent) break;
      out.push(parent);
      cur = parent;
    }
    return out;
  }

  async lineage(execId: string, maxDescendants: number, maxEventsPerProcess = 10_000): Promise<LineageResult | undefined> {
    const row = this.st.procGet!.get(execId) as Row | undefined;
    const target = row ? this.proc(row) : this.stubProc(execId);
    if (!target) return undefined;
    const ancestors = this.ancestorsOf(target).reverse();
    const kids = this.st.procChildren!.all(execId, maxDescendants + 1) as Row[];
    const truncated = kids.length > maxDescendants;
    if (truncated) kids.length = maxDescendants;
    let truncatedEvents = false;
    const node = (p: ProcessRow, relation: LineageNode['relation']): LineageNode => {
      const events = this.events(p.exec_id, maxEventsPerProcess + 1);
      if (events.length > maxEventsPerProcess) {
        events.length = maxEventsPerProcess;
        truncatedEvents = true;
      }
      return { ...p, relation, events };
    };
    const processes = [
      ...ancestors.map((p) => node(p, 'ancestor')),
      node(target, 'target'),
      ...kids.map((r) => node(this.proc(r), 'descendant')),
    ];
    const hid = this.hostIds.get(target.host) ?? ((this.st.hostGet!.get(target.host) as Row | undefined)?.id as number | undefined);
    const srow = target.session && hid !== undefined ? (this.st.sessGet!.get(hid, target.session) as Row | undefined) : undefined;
    const result: LineageResult = { processes, truncated: truncated || truncatedEvents };
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
      ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY s.start_ts DESC LIMIT ?`;
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
    const byExec = new Map<string, StoredEvent[]>();
    let truncated = false;
    if (q.daddr) {
      const rows = this.db
        .prepare(`SELECT id, exec_id, host_id, data FROM events WHERE daddr = ? AND ts >= ? AND ts <= ? ${q.dport ? 'AND dport = ?' : ''} ORDER BY ts DESC LIMIT ?`)
        .all(...[q.daddr, since, until, ...(q.dport ? [q.dport] : []), 50_000]) as Row[];
      for (const r of rows.reverse()) {
        if (hostIds && !hostIds.has(r.host_id)) continue;
        const key = (r.exec_id as string | null) ?? '';
        let list = byExec.get(key);
        if (!list) {
          if (byExec.size >= limit) {
            truncated = true;
            continue;
          }
          byExec.set(key, (list = []));
        }
        if (list.length < 100) list.push({ id: r.id, raw: r.data });
      }
    }
    const pathMatches = (path: string): boolean => (q.path!.includes('/') ? path === q.path : path === q.path || path.endsWith('/' + q.path));
    if (q.path && !q.daddr) {
      const sql = q.path.includes('/')
        ? 'SELECT * FROM processes WHERE path = ? AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?'
        : "SELECT * FROM processes WHERE (path = ? OR path LIKE '%/' || ?) AND start_ts >= ? AND start_ts <= ? ORDER BY start_ts LIMIT ?";
      const args = q.path.includes('/') ? [q.path, since, until, limit + 1] : [q.path, q.path, since, until, limit + 1];
      const rows = this.db.prepare(sql).all(...args) as Row[];
      if (rows.length > limit) {
        truncated = true;
        rows.length = limit;
      }
      for (const r of rows) {
        if (hostIds && !hostIds.has(r.host_id)) continue;
        const ev = (this.st.evExecOf!.all(r.exec_id) as Row[]).map((e) => ({ id: e.id as number, raw: e.data as Uint8Array }));
        byExec.set(r.exec_id, ev);
      }
    }
    const matches: ProcessMatchRow[] = [];
    for (const [execId, evidence] of byExec) {
      const row = execId ? (this.st.procGet!.get(execId) as Row | undefined) : undefined;
      const process = row ? this.proc(row) : (this.stubProc(execId) ?? {
        exec_id: execId, parent_exec_id: '', host: '', session: '', pid: 0, ppid: 0, uid: 0, path: '', argv: [], start: 0, session_root: false,
      });
      // Both an address and a path: the processes that ran the path and connected to the address.
      if (q.daddr && q.path && !pathMatches(process.path)) continue;
      matches.push({ process, evidence, ancestors: execId ? this.ancestorsOf(process) : [] });
    }
    return { matches, truncated };
  }

  async close(): Promise<void> {
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
