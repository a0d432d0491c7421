// Typed client for the collector's query API (what `bridle events|lineage|sessions` and tests use).
import * as grpc from '@grpc/grpc-js';
import { eventFromMessage, num, tsFromPb, tsToPb, VERDICTS, type PbEvent } from '../events/proto.js';
import type { EventFilter } from '../events/query.js';
import type { BridleEvent } from '../events/types.js';
import type { HostRow, ProcessQuery, ProcessRow, Relation, SessionQuery, SessionRow } from './store.js';
import { channelCredentials, type TlsFiles } from './tls.js';
import { CollectorClient, RELATIONS, type WireEventFilter, type WireHost, type WireSession } from './wire.js';

export interface QueryClientOptions {
  /** host:port of the collector. */
  collector: string;
  tls?: TlsFiles;
  insecure?: boolean;
  /** Bearer token for the query API (else the client certificate must have the query role). */
  token?: string;
  /** Name to verify in the collector's certificate when it differs from the host dialled. */
  serverName?: string;
  /** Deadline of each unary call (default 30 s). */
  timeoutMs?: number;
}

export interface LineageProcess extends ProcessRow {
  relation: Relation;
  events: BridleEvent[];
}
export interface Lineage {
  processes: LineageProcess[];
  session?: SessionRow;
  truncated: boolean;
}
export interface ProcessMatch {
  process: ProcessRow;
  evidence: BridleEvent[];
  ancestors: ProcessRow[];
}

/** A live event stream: iterate it; close() ends the iteration cleanly (no error). */
export interface Subscription extends AsyncIterable<BridleEvent> {
  close(): void;
}

export function filterToWire(f: EventFilter): WireEventFilter {
  const w: WireEventFilter = {};
  if (f.hosts?.length) w.hosts = f.hosts;
  if (f.session) w.session = f.session;
  if (f.types?.length) w.types = f.types;
  if (f.verdicts?.length) w.verdicts = f.verdicts.map((v) => VERDICTS[v]);
  if (f.exec_id) w.exec_id = f.exec_id;
  if (f.since !== undefined) w.since = tsToPb(f.since);
  if (f.until !== undefined) w.until = tsToPb(f.until);
  if (f.daddr) w.daddr = f.daddr;
  if (f.dport) w.dport = f.dport;
  return w;
}

function procFromWire(p: any): ProcessRow {
  return {
    exec_id: p.exec_id ?? '', parent_exec_id: p.parent_exec_id ?? '', host: p.host ?? '', session: p.session ?? '', pid: p.pid ?? 0,
    ppid: p.ppid ?? 0, uid: p.uid ?? 0, path: p.path ?? '', argv: p.argv ?? [], start: tsFromPb(p.start), session_root: !!p.session_root,
  };
}

function sessionFromWire(s: WireSession): SessionRow {
  const out: SessionRow = {
    host: s.host, session: s.session, agent: s.agent, origin: s.origin, backend: s.backend, mode: s.mode, policy: s.policy, uid: s.uid,
    root_exec_id: s.root_exec_id, path: s.path, argv: s.argv ?? [], start: tsFromPb(s.start), end: tsFromPb(s.end),
    events: num(s.events), denials: num(s.denials), would_deny: num(s.would_deny), lost: num(s.lost),
  };
  if (s.exit_code != null) out.exit_code = s.exit_code;
  if (s.signal != null) out.signal = s.signal;
  return out;
}

type Raw = Record<string, (...args: any[]) => any>;

export class QueryClient {
  private client: grpc.Client;
  private raw: Raw;
  private metadata: grpc.Metadata;

  constructor(private opts: QueryClientOptions) {
    const channelOpts: grpc.ChannelOptions = { 'grpc.max_receive_message_length': 256 * 1024 * 1024 };
    if (opts.serverName) channelOpts['grpc.ssl_target_name_override'] = opts.serverName;
    this.client = new CollectorClient(opts.collector, channelCredentials(opts.tls, opts.insecure), channelOpts);
    this.raw = this.client as unknown as Raw;
    this.metadata = new grpc.Metadata();
    if (opts.token) this.metadata.set('authorization', `Bearer ${opts.token}`);
  }

  private deadline(): grpc.CallOptions {
    return { deadline: Date.now() + (this.opts.timeoutMs ?? 30_000) };
  }

  private unary<T>(method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      this.raw[method]!(req, this.metadata, this.deadline(), (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)));
    });
  }

  /** The newest `limit` stored events matching `filter`, oldest first. */
  events(filter: EventFilter = {}, limit = 100): Promise<BridleEvent[]> {
    return new Promise((resolve, reject) => {
      const out: BridleEvent[] = [];
      const call = this.raw.QueryEvents!({ filter: filterToWire(filter), limit }, this.metadata, this.deadline()) as grpc.ClientReadableStream<PbEvent>;
      call.on('data', (m: PbEvent) => out.push(eventFromMessage(m)));
      call.on('error', reject);
      call.on('end', () => resolve(out));
    });
  }

  /** Stored matches (up to `backfill`) then live events as the collector stores them. */
  subscribe(filter: EventFilter = {}, opts: { backfill?: number } = {}): Subscription {
    const call = this.raw.Subscribe!({ filter: filterToWire(filter), backfill: opts.backfill ?? 0 }, this.metadata) as grpc.ClientReadableStream<PbEvent>;
    const queue: BridleEvent[] = [];
    let waiting: { resolve: (r: IteratorResult<BridleEvent>) => void; reject: (e: unknown) => void } | undefined;
    let done = false;
    let failure: unknown;
    let closing = false;
    const settle = (): void => {
      if (!waiting) return;
      const w = waiting;
      if (queue.length) {
        waiting = undefined;
        w.resolve({ value: queue.shift()!, done: false });
      } else if (failure) {
        waiting = undefined;
        w.reject(failure);
      } else if (done) {
        waiting = undefined;
        w.resolve({ value: undefined, done: true });
      }
    };
    call.on('data', (m: PbEvent) => {
      try {
        queue.push(eventFromMessage(m));
      } catch (err) {
        failure = err;
      }
      settle();
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (closing && err.code === grpc.status.CANCELLED) done = true;
      else failure = err;
      settle();
    });
    call.on('end', () => {
      done = true;
      settle();
    });
    const close = (): void => {
      if (done || closing) return;
      closing = true;
      call.cancel();
    };
    return {
      close,
      [Symbol.asyncIterator]() {
        return {
          next: () =>
            new Promise<IteratorResult<BridleEvent>>((resolve, reject) => {
              waiting = { resolve, reject };
              settle();
            }),
          return: async () => {
            close();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  async lineage(execId: string, maxDescendants = 10_000): Promise<Lineage | undefined> {
    const res = await this.unary<any>('Lineage', { exec_id: execId, max_descendants: maxDescendants });
    if (!res.processes?.length) return undefined;
    const out: Lineage = {
      processes: res.processes.map((p: any) => {
        // procFromWire's fields then two more, without `{ ...row, more }` (slow on Node 20's V8).
        const node = procFromWire(p) as LineageProcess;
        node.relation = (RELATIONS[p.relation ?? 0] ?? 'descendant') as Relation;
        node.events = (p.events ?? []).map((e: PbEvent) => eventFromMessage(e));
        return node;
      }),
      truncated: !!res.truncated,
    };
    if (res.session) out.session = sessionFromWire(res.session);
    return out;
  }

  async sessions(q: SessionQuery = {}): Promise<SessionRow[]> {
    const req: Record<string, unknown> = { limit: q.limit ?? 100 };
    if (q.hosts?.length) req.hosts = q.hosts;
    if (q.session) req.session = q.session;
    if (q.since !== undefined) req.since = tsToPb(q.since);
    if (q.withDenials) req.with_denials = true;
    const res = await this.unary<{ sessions?: WireSession[] }>('ListSessions', req);
    return (res.sessions ?? []).map(sessionFromWire);
  }

  async hosts(): Promise<HostRow[]> {
    const res = await this.unary<{ hosts?: WireHost[] }>('ListHosts', {});
    return (res.hosts ?? []).map((h) => ({
      host: h.host, first_seen: tsFromPb(h.first_seen), last_seen: tsFromPb(h.last_seen), last_seq: num(h.last_seq), events: num(h.events),
      lost: num(h.lost), rejected: num(h.rejected),
    }));
  }

  async findProcesses(q: ProcessQuery): Promise<{ matches: ProcessMatch[]; truncated: boolean }> {
    const req: Record<string, unknown> = { limit: q.limit ?? 100 };
    if (q.daddr) req.daddr = q.daddr;
    if (q.dport) req.dport = q.dport;
    if (q.path) req.path = q.path;
    if (q.since !== undefined) req.since = tsToPb(q.since);
    if (q.until !== undefined) req.until = tsToPb(q.until);
    if (q.hosts?.length) req.hosts = q.hosts;
    const res = await this.unary<any>('FindProcesses', req);
    return {
      matches: (res.matches ?? []).map((m: any) => ({
        process: procFromWire(m.process ?? {}),
        evidence: (m.evidence ?? []).map((e: PbEvent) => eventFromMessage(e)),
        ancestors: (m.ancestors ?? []).map(procFromWire),
      })),
      truncated: !!res.truncated,
    };
  }

  close(): void {
    this.client.close();
  }
}

export function createQueryClient(opts: QueryClientOptions): QueryClient {
  return new QueryClient(opts);
}
