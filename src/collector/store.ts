// The collector's storage interface. SQLite (sqlite.ts) is the embedded default; a PostgreSQL backend
// implements the same interface. Every method is async so that a networked backend fits; the SQLite one
// does its work synchronously inside them.
//
// Contract every backend keeps:
//  - ingest() stores a batch atomically (all or nothing) and each (host, seq) at most once: a replayed
//    event counts as a duplicate, is not stored again, and is not published again.
//  - events are returned as their protobuf bytes (`raw`), exactly as the agent sent them.
//  - lineage() walks `parent_exec_id` up to the session root and down to every descendant, with indexes
//    on exec_id and parent_exec_id so the cost follows the size of the tree, not of the store.
import type { BridleEvent, Verdict } from '../events/types.js';
import type { EventFilter } from '../events/query.js';

export interface IngestItem {
  /**
   * The decoded event. From the collector it is decodeForStore's: only what a store indexes is set (no
   * `ts`: use tsMs); everything else is in `raw`.
   */
  ev: BridleEvent;
  /** Epoch ms of the event's time (ev.ts may be empty: see ev). */
  tsMs: number;
  /** The event's protobuf encoding (bridle.v1.Event). */
  raw: Uint8Array;
}

export interface StoredEvent {
  /** Store-assigned id, increasing in insertion order. */
  id: number;
  raw: Uint8Array;
}

export interface IngestResult {
  stored: number;
  duplicates: number;
  /** The newly stored items with their ids (for live fan-out), in batch order. */
  fresh: Array<IngestItem & { id: number }>;
}

export interface ProcessRow {
  exec_id: string;
  parent_exec_id: string;
  host: string;
  session: string;
  pid: number;
  ppid: number;
  uid: number;
  path: string;
  argv: string[];
  /** Epoch ms of the exec (or session start); 0 when the process was only seen through its events. */
  start: number;
  session_root: boolean;
}

export type Relation = 'ancestor' | 'target' | 'descendant';

export interface LineageNode extends ProcessRow {
  relation: Relation;
  events: StoredEvent[];
}

export interface SessionRow {
  host: string;
  session: string;
  agent: string;
  origin: string;
  backend: string;
  mode: string;
  policy: string;
  uid: number;
  root_exec_id: string;
  path: string;
  argv: string[];
  start: number;
  end: number;
  exit_code?: number;
  signal?: number;
  events: number;
  denials: number;
  would_deny: number;
  lost: number;
}

export interface LineageResult {
  /** Ancestors (session root first), the target, then descendants breadth-first. */
  processes: LineageNode[];
  session?: SessionRow;
  truncated: boolean;
}

export interface HostRow {
  host: string;
  first_seen: number;
  last_seen: number;
  last_seq: number;
  events: number;
  lost: number;
  rejected: number;
}

export interface SessionQuery {
  hosts?: string[];
  session?: string;
  since?: number;
  withDenials?: boolean;
  limit?: number;
}

export interface ProcessQuery {
  daddr?: string;
  dport?: number;
  path?: string;
  since?: number;
  until?: number;
  hosts?: string[];
  limit?: number;
}

export interface ProcessMatchRow {
  process: ProcessRow;
  evidence: StoredEvent[];
  /** Nearest parent first, up to the session root. */
  ancestors: ProcessRow[];
}

export interface EventStore {
  /** Store one batch from `host` atomically; (host, seq) pairs already stored are skipped. */
  ingest(host: string, items: IngestItem[]): Promise<IngestResult>;
  /**
   * Optional: several batches from `host` atomically (all or none), one result per batch, as if each
   * were given to ingest() in order. The collector uses it for batches that queued up while it was busy.
   */
  ingestMany?(host: string, batches: IngestItem[][]): Promise<IngestResult[]>;
  /** Count events the collector refused from `host` (shown by `bridle sessions` / ListHosts). */
  addRejected(host: string, n: number): Promise<void>;
  /** Highest seq stored for `host`, 0 if none. */
  lastSeq(host: string): Promise<number>;
  /** The newest `limit` events matching, oldest first. */
  queryEvents(filter: EventFilter, limit: number): Promise<StoredEvent[]>;
  lineage(execId: string, maxDescendants: number): Promise<LineageResult | undefined>;
  sessions(q: SessionQuery): Promise<SessionRow[]>;
  hosts(): Promise<HostRow[]>;
  findProcesses(q: ProcessQuery): Promise<{ matches: ProcessMatchRow[]; truncated: boolean }>;
  close(): Promise<void>;
}

export type { Verdict };
