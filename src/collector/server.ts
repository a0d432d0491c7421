// The collector's gRPC server: Ingest (agents), Subscribe / QueryEvents / Lineage / ListSessions /
// ListHosts / FindProcesses (incident responders). One process, an embedded SQLite store by default.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { tsFromPb, tsToPb, VERDICT_NAMES } from '../events/proto.js';
import type { EventFilter } from '../events/query.js';
import type { Verdict } from '../events/types.js';
import { Hub, type Subscriber } from './hub.js';
import { freshEvents, ingestMessages } from './ingest.js';
import { isGrpcStatus, ThreadedSqliteStore, type MessageStore } from './store-thread.js';
import type { EventStore, LineageNode, ProcessRow, SessionRow, StoredEvent } from './store.js';
import { peerIdentity, ROLE_AGENT, ROLE_QUERY, serverCredentials, TokenSet, type TlsFiles } from './tls.js';
import {
  collectorServerDefinition,
  decodeIngestRequest,
  LIMITS,
  pb,
  RELATIONS,
  type WireEventFilter,
  type WireEventQuery,
  type WireLineageRequest,
  type WireProcessQuery,
  type WireSessionQuery,
  type WireSubscribeRequest,
} from './wire.js';

export interface CollectorOptions {
  /** host:port to listen on; port 0 picks a free one. */
  listen: string;
  /** SQLite file of the embedded store (ignored when `store` is given). */
  dbPath: string;
  /** Mutual TLS: PEM paths of the CA, the collector's certificate and key. */
  tls?: TlsFiles;
  /** Plain text, no client certificates: any peer may ingest as any host. Only for tests and demos. */
  insecure?: boolean;
  /** Bearer tokens accepted by the query API. */
  queryTokens?: string[];
  /** Another backend behind the same interface. */
  store?: EventStore;
  /** SQLite synchronous mode (default 'normal': survives a collector crash; 'full': also power loss). */
  sync?: 'normal' | 'full';
  log?: pino.Logger;
  limits?: Partial<typeof LIMITS>;
}

export interface Collector {
  /** host:port actually bound (the port resolved when 0 was asked). */
  address: string;
  port: number;
  store: EventStore;
  /** storeRestarts: times the embedded store's thread ended on its own and a new one took over. */
  stats(): { streams: number; subscribers: number; stored: number; duplicates: number; rejected: number; storeRestarts: number };
  close(): Promise<void>;
}

/** "127.0.0.1:7443", "[::1]:0", ":7443" (all interfaces) → host and port. */
export function parseHostPort(s: string, what = 'address'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(s.trim());
  if (!m) throw new Error(`${what} '${s}' is not HOST:PORT (e.g. 127.0.0.1:7443 or [::1]:7443)`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`${what} '${s}': port ${port} is out of range`);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  return { host, port };
}

export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

const fail = (code: grpc.status, details: string): Partial<grpc.StatusObject> => ({ code, details });

function filterFromWire(f: WireEventFilter | null | undefined): EventFilter {
  const out: EventFilter = {};
  if (!f) return out;
  if (f.hosts?.length) out.hosts = f.hosts;
  if (f.session) out.session = f.session;
  if (f.types?.length) out.types = f.types;
  if (f.verdicts?.length) out.verdicts = f.verdicts.map((v) => VERDICT_NAMES[v]).filter((v): v is Verdict => !!v);
  if (f.exec_id) out.exec_id = f.exec_id;
  if (f.since) out.since = tsFromPb(f.since);
  if (f.until) out.until = tsFromPb(f.until);
  if (f.daddr) out.daddr = f.daddr;
  if (f.dport) out.dport = f.dport;
  return out;
}

const tsOrNull = (ms: number) => (ms ? tsToPb(ms) : null);
const rawList = (evs: StoredEvent[]) => evs.map((e) => e.raw);

function processToWire(p: ProcessRow, relation?: LineageNode['relation'], events?: StoredEvent[]) {
  return {
    exec_id: p.exec_id, parent_exec_id: p.parent_exec_id, host: p.host, session: p.session, pid: p.pid, ppid: p.ppid, uid: p.uid,
    path: p.path, argv: p.argv, start: tsOrNull(p.start), relation: relation ? RELATIONS.indexOf(relation) : 0,
    session_root: p.session_root, events: events ? rawList(events) : [],
  };
}

function sessionToWire(s: SessionRow) {
  return {
    host: s.host, session: s.session, agent: s.agent, origin: s.origin, backend: s.backend, mode: s.mode, policy: s.policy, uid: s.uid,
    root_exec_id: s.root_exec_id, path: s.path, argv: s.argv, start: tsOrNull(s.start), end: tsOrNull(s.end), events: s.events,
    denials: s.denials, would_deny: s.would_deny, lost: s.lost, exit_code: s.exit_code ?? null, signal: s.signal ?? null,
  };
}

/**
 * Messages already queued on an ingest stream are stored in one transaction, up to this many bytes (about
 * 10,000 events).
 */
const GROUP_BYTES = 2 * 1024 * 1024;
/**
 * A stream commits at most this often while its groups are small (a steady agent sends a batch every
 * 20 ms): each index page a commit touches is written to the WAL once per commit, so fewer commits cost
 * less per event. Acknowledgements and live subscribers wait at most this long more.
 */
const COMMIT_EVERY_MS = 50;

/** HTTP/2 receive window (per stream and per connection) of the collector. */
const FLOW_WINDOW = 32 * 1024 * 1024;
interface GrpcInternals {
  commonServerOptions?: { settings?: Record<string, number> };
  http2Servers?: Map<import('node:events').EventEmitter, unknown>;
}

/**
 * grpc-js (1.14) has no server option for HTTP/2 flow control, and Node's default 64 KiB window makes an
 * agent wait for several WINDOW_UPDATE round trips per batch, each through the collector's busy event loop:
 * both sides end up idle half the time. This sets a 32 MiB window through grpc-js internals (stream window
 * in the SETTINGS of new sessions, connection window once each session starts); if those internals move,
 * ingest still works, only slower.
 */
function widenFlowControl(server: grpc.Server, log: pino.Logger): void {
  const internals = server as unknown as GrpcInternals;
  if (internals.commonServerOptions && internals.http2Servers instanceof Map) {
    internals.commonServerOptions.settings = { ...internals.commonServerOptions.settings, initialWindowSize: FLOW_WINDOW };
  } else {
    log.warn('grpc-js internals changed: ingest runs with the default 64 KiB HTTP/2 window');
  }
}

export async function startCollector(opts: CollectorOptions): Promise<Collector> {
  const log = opts.log ?? pino({ level: process.env.BRIDLE_LOG ?? 'warn', name: 'collector' });
  const limits = { ...LIMITS, ...opts.limits };
  const { host: bindHost, port: bindPort } = parseHostPort(opts.listen, 'listen address');
  const creds = serverCredentials(opts.tls, opts.insecure);
  if (!opts.tls) {
    log.warn('INSECURE: collector without TLS; any peer can write events as any host and read them with a token');
  }
  const tokens = new TokenSet(opts.queryTokens ?? []);
  // The embedded store runs on its own thread; a store given here runs on this one.
  const hub = new Hub();
  const store: EventStore & Partial<MessageStore> =
    opts.store ??
    (await ThreadedSqliteStore.open(opts.dbPath, opts.sync ? { sync: opts.sync } : {}, {
      ended(err) {
        // What the calls it held stored was neither acknowledged nor sent to subscribers: the agents send
        // it again (stored once), and subscribers are told to resubscribe with a backfill to get it.
        log.error({ err: err.message }, 'the store thread ended; the ingest calls it held fail, live subscribers are ended, a new thread starts');
        hub.failAll('the collector\'s store thread restarted; resubscribe with a backfill');
      },
      restarted: (n) => log.warn({ restarts: n }, 'the store thread is running again'),
      startFailed: (err, retryInMs) => log.error({ err: err.message, retryInMs }, 'the store could not be opened again'),
    }));
  const messages: MessageStore = store.ingestMessages
    ? (store as MessageStore)
    : { ingestMessages: (h, msgs, lim) => ingestMessages(store, h, msgs, lim, true) };
  const counters = { streams: 0, stored: 0, duplicates: 0, rejected: 0 };
  const ingestCalls = new Set<grpc.ServerDuplexStream<Buffer, object>>();

  /** Query methods: a bearer token from the list, or a client certificate with the query role. */
  function authorize(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): string | undefined {
    const auth = call.metadata.get('authorization')[0];
    if (typeof auth === 'string') {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
      if (m && tokens.has(m[1]!)) return undefined;
      return 'the bearer token is not valid';
    }
    const id = peerIdentity(call);
    if (id.role === ROLE_QUERY) return undefined;
    return 'the query API needs a credential: metadata "authorization: Bearer <token>" or a query-role client certificate';
  }

  function decodeReq<T>(type: keyof typeof pb, buf: Buffer): T {
    return (pb[type] as typeof pb.Event).decode(buf) as unknown as T;
  }

  function unary<Req>(type: keyof typeof pb, run: (req: Req) => Promise<object>): grpc.handleUnaryCall<Buffer, object> {
    return (call, cb) => {
      const denied = authorize(call);
      if (denied) return cb(fail(grpc.status.UNAUTHENTICATED, denied));
      let req: Req;
      try {
        req = decodeReq<Req>(type, call.request);
      } catch (err) {
        return cb(fail(grpc.status.INVALID_ARGUMENT, `malformed request: ${(err as Error).message}`));
      }
      run(req).then(
        (res) => cb(null, res),
        (err) => {
          const code = (err as { code?: unknown }).code;
          if (isGrpcStatus(code)) return cb(fail(code, (err as Error).message));
          log.error({ err }, 'query failed');
          cb(fail(grpc.status.INTERNAL, (err as Error).message));
        },
      );
    };
  }

  /**
   * The live Ingest stream of each host. One at a time: a second (an agent reconnecting before its old
   * stream was noticed gone, or a copy of the host's key elsewhere) would interleave its numbering with the
   * first's, and events of one would be taken for duplicates of the other's. The newer stream wins.
   */
  const hostStreams = new Map<string, () => void>();

  function ingest(call: grpc.ServerDuplexStream<Buffer, object>): void {
    counters.streams++;
    ingestCalls.add(call);
    const peer = call.getPeer();
    const id = peerIdentity(call);
    let host: string | undefined;
    const queue: Buffer[] = [];
    let busy = false;
    let inputDone = false;
    let lastCommit = 0;
    let finished = false;

    const superseded = (): void => {
      log.warn({ host, peer }, 'a newer Ingest stream of this host took over; this one is ended');
      finish(fail(grpc.status.ABORTED, `a newer stream of host '${host}' took over this one`));
    };
    /** The stream is over: it takes no more messages and is no longer its host's live stream. */
    const release = (): void => {
      finished = true;
      ingestCalls.delete(call);
      if (host && hostStreams.get(host) === superseded) hostStreams.delete(host);
    };
    const finish = (status?: Partial<grpc.StatusObject>): void => {
      if (finished) return;
      release();
      if (status) call.emit('error', status);
      else call.end();
    };

    const send = (msg: object): void => {
      if (!finished) call.write(msg);
    };

    /** The stream's first message: Hello, checked against the peer's certificate; then Welcome. */
    const hello = async (buf: Buffer): Promise<void> => {
      let req;
      try {
        req = decodeIngestRequest(buf);
      } catch (err) {
        return finish(fail(grpc.status.INVALID_ARGUMENT, `malformed first message: ${(err as Error).message}`));
      }
      if (req.kind !== 'hello') return finish(fail(grpc.status.FAILED_PRECONDITION, 'the first message on an Ingest stream must be Hello'));
      const claimed = req.hello?.host ?? '';
      if (!claimed) return finish(fail(grpc.status.INVALID_ARGUMENT, 'Hello.host is empty'));
      if (opts.tls) {
        if (id.role !== ROLE_AGENT) {
          return finish(fail(grpc.status.PERMISSION_DENIED, `certificate ${id.names[0] ?? '?'} has no agent role (OU=${ROLE_AGENT}); it cannot write events`));
        }
        if (!id.names.includes(claimed)) {
          log.warn({ peer, names: id.names, claimed }, 'refused: host certificate tried to write as another host');
          return finish(fail(grpc.status.PERMISSION_DENIED, `certificate for ${id.names.join(', ')} cannot write events as host '${claimed}'`));
        }
      }
      const lastSeq = await store.lastSeq(claimed);
      if (finished) return;
      host = claimed;
      const prev = hostStreams.get(host);
      hostStreams.set(host, superseded);
      prev?.();
      log.info({ host, peer, agent_version: req.hello?.agent_version, spool: req.hello?.spool_id }, 'agent connected');
      send({ welcome: { host, last_seq: lastSeq, max_batch_bytes: limits.maxBatchBytes, max_event_bytes: limits.maxEventBytes } });
    };

    /** Stores a group of messages (in one transaction when the store can) and answers each, in order. */
    const commit = async (group: Buffer[]): Promise<void> => {
      const h = host!;
      const outcomes = await messages.ingestMessages(h, group, limits);
      for (let i = 0; i < outcomes.length; i++) {
        const o = outcomes[i]!;
        if ('fatal' in o) return finish(fail(grpc.status.FAILED_PRECONDITION, 'Hello sent twice on one stream'));
        counters.stored += o.stored;
        counters.duplicates += o.duplicates;
        counters.rejected += o.rejected;
        if (o.warn) log.warn({ host: h, peer, rejected: o.rejected, error: o.warn }, 'refused events');
        send({ ack: o.ack });
        if (hub.size && (o.fresh ?? o.freshAt)?.length) hub.publish(freshEvents(group[i]!, o, (kind) => hub.wants(kind)));
      }
    };

    const pump = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        if (!host && queue.length && !finished) {
          await hello(queue.shift()!);
          call.resume();
        }
        while (host && queue.length && !finished) {
          // The messages already queued go to the store together (up to GROUP_BYTES): a busy collector
          // commits less often, with each index page it touches written once per commit.
          const group: Buffer[] = [];
          let bytes = 0;
          for (;;) {
            while (queue.length && bytes < GROUP_BYTES) {
              const buf = queue.shift()!;
              if (queue.length < 4) call.resume();
              group.push(buf);
              bytes += buf.length;
              // grpc-js hands over one message per turn of the event loop: let the next ones that have
              // arrived meanwhile in before storing (one turn; nothing waits when nothing is there).
              if (!queue.length && bytes < GROUP_BYTES && !inputDone) await new Promise((r) => setImmediate(r));
            }
            // Small groups wait for the commit interval (more batches join them), unless the stream is ending.
            const wait = lastCommit + COMMIT_EVERY_MS - performance.now();
            if (finished || inputDone || bytes >= GROUP_BYTES || wait <= 0) break;
            await new Promise((r) => setTimeout(r, wait));
            if (!queue.length) break;
          }
          if (finished) break;
          await commit(group);
          lastCommit = performance.now();
        }
      } catch (err) {
        // The store failed (disk full, …): end the stream; the agent keeps the batch and retries later.
        log.error({ err, host }, 'ingest failed');
        finish(fail(grpc.status.UNAVAILABLE, `collector cannot store events: ${(err as Error).message}`));
      } finally {
        busy = false;
      }
      if (inputDone && queue.length === 0) finish();
    };

    call.on('data', (buf: Buffer) => {
      if (finished) return;
      queue.push(buf);
      if (queue.length >= 16) call.pause();
      void pump();
    });
    call.on('end', () => {
      inputDone = true;
      if (!busy && queue.length === 0) finish();
    });
    call.on('error', release);
    call.on('cancelled', release);
  }

  const server = new grpc.Server({
    'grpc.max_receive_message_length': limits.maxMessageBytes,
    'grpc.max_send_message_length': limits.maxMessageBytes,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  });

  server.addService(collectorServerDefinition, {
    Ingest: ingest,

    Subscribe: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const denied = authorize(call);
      if (denied) return void call.emit('error', fail(grpc.status.UNAUTHENTICATED, denied));
      let req: WireSubscribeRequest;
      try {
        req = decodeReq<WireSubscribeRequest>('SubscribeRequest', call.request);
      } catch (err) {
        return void call.emit('error', fail(grpc.status.INVALID_ARGUMENT, `malformed request: ${(err as Error).message}`));
      }
      const sub: Subscriber = { filter: filterFromWire(req.filter), call: call as never, pending: [], minId: 0, closed: false };
      hub.add(sub);
      const backfill = Math.min(req.backfill ?? 0, 100_000);
      const done = (rows: StoredEvent[]): void => {
        let last = 0;
        for (const r of rows) {
          hub.write(sub, Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength));
          last = Math.max(last, r.id);
        }
        hub.goLive(sub, last);
      };
      if (backfill === 0) return done([]);
      store.queryEvents(sub.filter, backfill).then(done, (err) => {
        log.error({ err }, 'subscribe backfill failed');
        call.emit('error', fail(grpc.status.INTERNAL, (err as Error).message));
      });
    },

    QueryEvents: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const denied = authorize(call);
      if (denied) return void call.emit('error', fail(grpc.status.UNAUTHENTICATED, denied));
      let req: WireEventQuery;
      try {
        req = decodeReq<WireEventQuery>('EventQuery', call.request);
      } catch (err) {
        return void call.emit('error', fail(grpc.status.INVALID_ARGUMENT, `malformed request: ${(err as Error).message}`));
      }
      const limit = Math.min(req.limit || 100, 100_000);
      store.queryEvents(filterFromWire(req.filter), limit).then(
        (rows) => {
          for (const r of rows) call.write(Buffer.from(r.raw.buffer, r.raw.byteOffset, r.raw.byteLength));
          call.end();
        },
        (err) => call.emit('error', fail(grpc.status.INTERNAL, (err as Error).message)),
      );
    },

    Lineage: unary<WireLineageRequest>('LineageRequest', async (req) => {
      if (!req.exec_id) throw Object.assign(new Error('exec_id is required'), { code: grpc.status.INVALID_ARGUMENT });
      const res = await store.lineage(req.exec_id, Math.min(req.max_descendants || 10_000, 100_000));
      if (!res) return { processes: [], truncated: false };
      return {
        processes: res.processes.map((p) => processToWire(p, p.relation, p.events)),
        session: res.session ? sessionToWire(res.session) : null,
        truncated: res.truncated,
      };
    }),

    ListSessions: unary<WireSessionQuery>('SessionQuery', async (req) => {
      const q: Parameters<EventStore['sessions']>[0] = { limit: Math.min(req.limit || 100, 10_000) };
      if (req.hosts?.length) q.hosts = req.hosts;
      if (req.session) q.session = req.session;
      if (req.since) q.since = tsFromPb(req.since);
      if (req.with_denials) q.withDenials = true;
      return { sessions: (await store.sessions(q)).map(sessionToWire) };
    }),

    ListHosts: unary<object>('HostQuery', async () => ({
      hosts: (await store.hosts()).map((h) => ({ ...h, first_seen: tsOrNull(h.first_seen), last_seen: tsOrNull(h.last_seen) })),
    })),

    FindProcesses: unary<WireProcessQuery>('ProcessQuery', async (req) => {
      if (!req.daddr && !req.path) throw Object.assign(new Error('give an address (daddr) or a path'), { code: grpc.status.INVALID_ARGUMENT });
      const q: Parameters<EventStore['findProcesses']>[0] = { limit: Math.min(req.limit || 100, 10_000) };
      if (req.daddr) q.daddr = req.daddr;
      if (req.dport) q.dport = req.dport;
      if (req.path) q.path = req.path;
      if (req.since) q.since = tsFromPb(req.since);
      if (req.until) q.until = tsFromPb(req.until);
      if (req.hosts?.length) q.hosts = req.hosts;
      const res = await store.findProcesses(q);
      return {
        matches: res.matches.map((m) => ({
          process: processToWire(m.process),
          evidence: rawList(m.evidence),
          ancestors: m.ancestors.map((a) => processToWire(a)),
        })),
        truncated: res.truncated,
      };
    }),
  } as unknown as grpc.UntypedServiceImplementation);

  widenFlowControl(server, log);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatHostPort(bindHost, bindPort), creds, (err, p) => (err ? reject(new Error(`cannot listen on ${opts.listen}: ${err.message}`)) : resolve(p))),
  ).catch(async (err) => {
    await store.close();
    throw err;
  });
  for (const h2 of (server as unknown as GrpcInternals).http2Servers?.keys() ?? []) {
    h2.on('session', (session: { setLocalWindowSize?(n: number): void }) => session.setLocalWindowSize?.(FLOW_WINDOW));
  }
  const address = formatHostPort(bindHost, port);
  log.info({ address, tls: !!opts.tls, db: opts.store ? '(custom store)' : opts.dbPath }, 'collector listening');

  let closed: Promise<void> | undefined;
  return {
    address,
    port,
    store,
    stats: () => ({ ...counters, streams: ingestCalls.size, subscribers: hub.size, storeRestarts: store instanceof ThreadedSqliteStore ? store.restarts : 0 }),
    close() {
      closed ??= (async () => {
        hub.closeAll();
        for (const c of ingestCalls) c.end();
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 2000);
          server.tryShutdown(() => {
            clearTimeout(t);
            resolve();
          });
        });
        await store.close();
      })();
      return closed;
    },
  };
}
