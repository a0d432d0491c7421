// BridleEvent ⇄ protobuf (proto/bridle/v1/events.proto). The .proto files are the schema; protobufjs loads
// them at run time (keepCase, so field names are the NDJSON names) and this file is the one place that
// maps between the TS event types and the wire messages. Every other module encodes and decodes events
// through encodeEvent / decodeEvent.
//
// The `*_KEYS` tables below list every field of every event type. They are typed so that adding a field
// to src/events/types.ts without mapping it here is a compile error (`npm run typecheck`), instead of a
// field silently dropped on the way to the collector.
import protobuf from 'protobufjs';
import { fileURLToPath } from 'node:url';
import type {
  BridleEvent,
  ConnectEvent,
  DnsEvent,
  EventBase,
  EventType,
  ExecEvent,
  ExitEvent,
  LossEvent,
  PolicyEvent,
  SessionEndEvent,
  SessionStartEvent,
  ToolCallEvent,
  Verdict,
  ViolationEvent,
} from './types.js';

/** Directory holding `bridle/v1/*.proto`. */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));
export const PROTO_FILES = ['bridle/v1/events.proto', 'bridle/v1/collector.proto', 'bridle/v1/agent.proto'];

/** All bridle protobuf types, loaded once from PROTO_DIR. */
export const root: protobuf.Root = (() => {
  const r = new protobuf.Root();
  // google/protobuf/* come from protobufjs's bundled copies; ours from PROTO_DIR.
  r.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? target : PROTO_DIR + target);
  r.loadSync(PROTO_FILES, { keepCase: true });
  r.resolveAll();
  return r;
})();

export const EventMsg = root.lookupType('bridle.v1.Event');

// ---- wire shapes (what protobufjs encodes from / decodes to) ----

/** A uint64/int64 as protobufjs hands it back: a number, or a Long when the value needs 64 bits. */
export type Int64 = number | { toNumber(): number };
export interface PbTimestamp {
  seconds: Int64;
  nanos: number;
}
export interface PbHeader {
  ts?: PbTimestamp | null;
  host?: string;
  session?: string;
  exec_id?: string;
  parent_exec_id?: string;
  pid?: number;
  ppid?: number;
  uid?: number;
  seq?: Int64;
  verdict?: number;
  rule?: string;
  policy?: string;
}
export interface PbEvent {
  header?: PbHeader | null;
  body?: string;
  [body: string]: unknown;
}

/** 64-bit protobuf integer → JS number (exact below 2^53, which sequence numbers and times stay under). */
export function num(v: Int64 | null | undefined): number {
  if (v == null) return 0;
  return typeof v === 'number' ? v : v.toNumber();
}

export function tsToPb(ms: number): PbTimestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}
export function tsFromPb(t: PbTimestamp | null | undefined): number {
  if (!t) return 0;
  return num(t.seconds) * 1000 + Math.floor((t.nanos ?? 0) / 1_000_000);
}
/** ISO-8601 → epoch ms; an unparsable time becomes "now" rather than losing the event. */
export function isoToMs(ts: string): number {
  const ms = Date.parse(ts);
  return Number.isFinite(ms) ? ms : Date.now();
}

export const VERDICTS: Record<Verdict, number> = { allow: 1, deny: 2, would_deny: 3 };
export const VERDICT_NAMES: Array<Verdict | undefined> = [undefined, 'allow', 'deny', 'would_deny'];
const NET_PROTO: Record<string, number> = { tcp: 1, udp: 2, unix: 3, other: 4 };
const NET_PROTO_NAMES = ['other', 'tcp', 'udp', 'unix', 'other'] as const;
const FAMILY: Record<string, number> = { inet: 1, inet6: 2, unix: 3 };
const FAMILY_NAMES = ['inet', 'inet', 'inet6', 'unix'] as const;

// ---- field tables (compile-time exhaustive) ----

type KeySet<T> = { [K in keyof Required<T>]: true };
type Own<T extends EventBase> = KeySet<Omit<T, keyof EventBase>>;

export const BASE_KEYS: KeySet<EventBase> = {
  type: true, ts: true, host: true, session: true, exec_id: true, parent_exec_id: true, pid: true, ppid: true,
  uid: true, seq: true, verdict: true, rule: true, policy: true,
};
/** Per event type: the fields beyond EventBase. */
export const TYPE_KEYS = {
  session_start: { origin: true, agent: true, backend: true, mode: true, path: true, argv: true } satisfies Own<SessionStartEvent>,
  session_end: { exit_code: true, signal: true, counts: true } satisfies Own<SessionEndEvent>,
  exec: { path: true, argv: true, script: true, via_loader: true, fileless: true, cwd: true } satisfies Own<ExecEvent>,
  exit: { exit_code: true, signal: true } satisfies Own<ExitEvent>,
  connect: { proto: true, family: true, daddr: true, dport: true, op: true } satisfies Own<ConnectEvent>,
  dns: { name: true, answers: true, ttl: true } satisfies Own<DnsEvent>,
  tool_call: { server: true, tool: true, arguments: true, latency_ms: true, is_error: true, reason: true } satisfies Own<ToolCallEvent>,
  violation: { what: true, detail: true } satisfies Own<ViolationEvent>,
  loss: { where: true, count: true } satisfies Own<LossEvent>,
  policy: { action: true, detail: true } satisfies Own<PolicyEvent>,
} satisfies Record<EventType, object>;

// ---- BridleEvent → message ----

function header(ev: EventBase): PbHeader {
  return {
    ts: tsToPb(isoToMs(ev.ts)),
    host: ev.host,
    session: ev.session,
    exec_id: ev.exec_id,
    parent_exec_id: ev.parent_exec_id,
    pid: ev.pid >>> 0,
    ppid: ev.ppid >>> 0,
    uid: ev.uid >>> 0,
    seq: ev.seq ?? 0,
    verdict: ev.verdict ? (VERDICTS[ev.verdict] ?? 0) : 0,
    rule: ev.rule ?? '',
    policy: ev.policy ?? '',
  };
}

function otherJson(ev: BridleEvent): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev)) if (!(k in BASE_KEYS)) rest[k] = v;
  return JSON.stringify(rest);
}

/** The protobuf object for one event (not yet encoded). */
export function eventToMessage(ev: BridleEvent): PbEvent {
  const h = header(ev);
  switch (ev.type) {
    case 'session_start':
      return { header: h, session_start: { origin: ev.origin, agent: ev.agent ?? '', backend: ev.backend, mode: ev.mode, path: ev.path ?? '', argv: ev.argv ?? [] } };
    case 'session_end':
      return { header: h, session_end: { exit_code: ev.exit_code ?? null, signal: ev.signal ?? null, counts: ev.counts ?? {} } };
    case 'exec':
      return { header: h, exec: { path: ev.path, argv: ev.argv, script: ev.script ?? '', via_loader: !!ev.via_loader, fileless: !!ev.fileless, cwd: ev.cwd ?? '' } };
    case 'exit':
      return { header: h, exit: { exit_code: ev.exit_code ?? null, signal: ev.signal ?? null } };
    case 'connect':
      return { header: h, connect: { proto: NET_PROTO[ev.proto] ?? 4, family: FAMILY[ev.family] ?? 0, daddr: ev.daddr, dport: ev.dport >>> 0, op: ev.op ?? '' } };
    case 'dns':
      return { header: h, dns: { name: ev.name, answers: ev.answers, ttl: ev.ttl ?? null } };
    case 'tool_call':
      return {
        header: h,
        tool_call: {
          server: ev.server, tool: ev.tool, arguments: ev.arguments === undefined ? '' : JSON.stringify(ev.arguments),
          latency_ms: ev.latency_ms ?? null, is_error: !!ev.is_error, reason: ev.reason ?? '',
        },
      };
    case 'violation':
      return { header: h, violation: { what: ev.what, detail: ev.detail ?? '' } };
    case 'loss':
      return { header: h, loss: { where: ev.where, count: ev.count } };
    case 'policy':
      return { header: h, policy: { action: ev.action, detail: ev.detail ?? '' } };
    default: {
      const other = ev as BridleEvent;
      return { header: h, other: { type: String((other as { type: unknown }).type), json: otherJson(other) } };
    }
  }
}

export function encodeEvent(ev: BridleEvent): Uint8Array {
  return EventMsg.encode(eventToMessage(ev)).finish();
}

// ---- message → BridleEvent ----

/** Adds `key: value` unless value is the protobuf default for "absent" ('' or false or null). */
function opt<T extends object>(o: T, key: string, value: unknown): void {
  if (value === '' || value === false || value == null) return;
  (o as Record<string, unknown>)[key] = value;
}

function has(msg: object, key: string): boolean {
  const v = (msg as Record<string, unknown>)[key];
  return v !== null && v !== undefined;
}

/** A decoded protobuf Event → BridleEvent. Throws on an event with no body or a malformed `other`. */
export function eventFromMessage(m: PbEvent): BridleEvent {
  const h = m.header ?? {};
  const base: EventBase = {
    type: 'exec',
    ts: new Date(tsFromPb(h.ts)).toISOString(),
    host: h.host ?? '',
    session: h.session ?? '',
    exec_id: h.exec_id ?? '',
    parent_exec_id: h.parent_exec_id ?? '',
    pid: h.pid ?? 0,
    ppid: h.ppid ?? 0,
    uid: h.uid ?? 0,
    seq: num(h.seq),
  };
  const verdict = VERDICT_NAMES[h.verdict ?? 0];
  if (verdict) base.verdict = verdict;
  opt(base, 'rule', h.rule);
  opt(base, 'policy', h.policy);
  const kind = m.body;
  const b = (kind ? m[kind] : undefined) as Record<string, any> | undefined;
  if (!kind || !b) throw new Error('event has no body');
  switch (kind) {
    case 'session_start': {
      const ev = { ...base, type: 'session_start', origin: b.origin, backend: b.backend, mode: b.mode } as SessionStartEvent;
      opt(ev, 'agent', b.agent);
      opt(ev, 'path', b.path);
      if (b.argv?.length) ev.argv = b.argv;
      return ev;
    }
    case 'session_end': {
      const ev = { ...base, type: 'session_end' } as SessionEndEvent;
      if (has(b, 'exit_code')) ev.exit_code = b.exit_code;
      if (has(b, 'signal')) ev.signal = b.signal;
      const counts = b.counts as Record<string, Int64> | undefined;
      if (counts && Object.keys(counts).length) {
        ev.counts = {};
        for (const [k, v] of Object.entries(counts)) ev.counts[k] = num(v);
      }
      return ev;
    }
    case 'exec': {
      const ev = { ...base, type: 'exec', path: b.path, argv: b.argv ?? [] } as ExecEvent;
      opt(ev, 'script', b.script);
      opt(ev, 'via_loader', b.via_loader);
      opt(ev, 'fileless', b.fileless);
      opt(ev, 'cwd', b.cwd);
      return ev;
    }
    case 'exit': {
      const ev = { ...base, type: 'exit' } as ExitEvent;
      if (has(b, 'exit_code')) ev.exit_code = b.exit_code;
      if (has(b, 'signal')) ev.signal = b.signal;
      return ev;
    }
    case 'connect': {
      const ev = {
        ...base, type: 'connect', proto: NET_PROTO_NAMES[b.proto] ?? 'other', family: FAMILY_NAMES[b.family] ?? 'inet',
        daddr: b.daddr, dport: b.dport,
      } as ConnectEvent;
      opt(ev, 'op', b.op);
      return ev;
    }
    case 'dns': {
      const ev = { ...base, type: 'dns', name: b.name, answers: b.answers ?? [] } as DnsEvent;
      if (has(b, 'ttl')) ev.ttl = b.ttl;
      return ev;
    }
    case 'tool_call': {
      const ev = { ...base, type: 'tool_call', server: b.server, tool: b.tool } as ToolCallEvent;
      if (b.arguments) {
        try {
          ev.arguments = JSON.parse(b.arguments);
        } catch {
          ev.arguments = b.arguments;
        }
      }
      if (has(b, 'latency_ms')) ev.latency_ms = b.latency_ms;
      opt(ev, 'is_error', b.is_error);
      opt(ev, 'reason', b.reason);
      return ev;
    }
    case 'violation': {
      const ev = { ...base, type: 'violation', what: b.what } as ViolationEvent;
      opt(ev, 'detail', b.detail);
      return ev;
    }
    case 'loss':
      return { ...base, type: 'loss', where: b.where, count: num(b.count) } as LossEvent;
    case 'policy': {
      const ev = { ...base, type: 'policy', action: b.action } as PolicyEvent;
      opt(ev, 'detail', b.detail);
      return ev;
    }
    case 'other': {
      const rest = JSON.parse(b.json || '{}') as Record<string, unknown>;
      if (typeof rest !== 'object' || rest === null || Array.isArray(rest)) throw new Error('event "other" body is not a JSON object');
      return { ...rest, ...base, type: b.type } as unknown as BridleEvent;
    }
    default:
      throw new Error(`unknown event body "${kind}"`);
  }
}

export function decodeEvent(bytes: Uint8Array): BridleEvent {
  return eventFromMessage(EventMsg.decode(bytes) as unknown as PbEvent);
}
