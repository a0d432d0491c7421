// BridleEvent ⇄ protobuf (proto/bridle/v1/events.proto). The .proto files are the schema; protobufjs loads
// them at run time (keepCase, so field names are the NDJSON names) and this file is the one place that
// maps between the TS event types and the wire messages. Every other module encodes and decodes events
// through encodeEvent / decodeEvent.
//
// The `*_KEYS` tables below list every field of every event type. They are typed so that adding a field
// to src/events/types.ts without mapping it here is a compile error (`npm run typecheck`), instead of a
// field silently dropped on the way to the collector.
import protobuf from 'protobufjs';
import { join, sep } from 'node:path';
import { REPO_ROOT } from '../root.js';
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
export const PROTO_DIR = join(REPO_ROOT, 'proto') + sep;
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

/** Reference encoder through protobufjs (the fast path below must produce what this decodes to). */
export function encodeEventReflect(ev: BridleEvent): Uint8Array {
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
      const ev = Object.assign(base, { type: 'session_start', origin: b.origin, backend: b.backend, mode: b.mode }) as SessionStartEvent;
      opt(ev, 'agent', b.agent);
      opt(ev, 'path', b.path);
      if (b.argv?.length) ev.argv = b.argv;
      return ev;
    }
    case 'session_end': {
      const ev = Object.assign(base, { type: 'session_end' }) as SessionEndEvent;
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
      const ev = Object.assign(base, { type: 'exec', path: b.path, argv: b.argv ?? [] }) as ExecEvent;
      opt(ev, 'script', b.script);
      opt(ev, 'via_loader', b.via_loader);
      opt(ev, 'fileless', b.fileless);
      opt(ev, 'cwd', b.cwd);
      return ev;
    }
    case 'exit': {
      const ev = Object.assign(base, { type: 'exit' }) as ExitEvent;
      if (has(b, 'exit_code')) ev.exit_code = b.exit_code;
      if (has(b, 'signal')) ev.signal = b.signal;
      return ev;
    }
    case 'connect': {
      const ev = Object.assign(base, {
        type: 'connect', proto: NET_PROTO_NAMES[b.proto] ?? 'other', family: FAMILY_NAMES[b.family] ?? 'inet',
        daddr: b.daddr, dport: b.dport,
      }) as ConnectEvent;
      opt(ev, 'op', b.op);
      return ev;
    }
    case 'dns': {
      const ev = Object.assign(base, { type: 'dns', name: b.name, answers: b.answers ?? [] }) as DnsEvent;
      if (has(b, 'ttl')) ev.ttl = b.ttl;
      return ev;
    }
    case 'tool_call': {
      const ev = Object.assign(base, { type: 'tool_call', server: b.server, tool: b.tool }) as ToolCallEvent;
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
      const ev = Object.assign(base, { type: 'violation', what: b.what }) as ViolationEvent;
      opt(ev, 'detail', b.detail);
      return ev;
    }
    case 'loss':
      return Object.assign(base, { type: 'loss', where: b.where, count: num(b.count) }) as LossEvent;
    case 'policy': {
      const ev = Object.assign(base, { type: 'policy', action: b.action }) as PolicyEvent;
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

/** Reference decoder through protobufjs. */
export function decodeEventReflect(bytes: Uint8Array): BridleEvent {
  return eventFromMessage(EventMsg.decode(bytes) as unknown as PbEvent);
}

/** Decodes one bridle.v1.Event (fast path); throws on malformed bytes. */
export function decodeEvent(bytes: Uint8Array): BridleEvent {
  return decodeEventFast(bytes).ev;
}

// ---- fast path ----
//
// encodeEvent / decodeEvent run for every event on the agent and the collector (100,000 a second), so
// they read and write the wire format directly instead of going through protobufjs's generic message
// objects (which cost several allocations and a Date per event). The field numbers below are those of
// events.proto; test/collector/proto.test.ts checks each against the loaded schema and round-trips every
// event type through both paths, so the two cannot drift apart.

/** Field numbers (events.proto). */
/** Type code of an event: the Event.body field number of the type (stable, never reused); 99 = a type this schema does not know. */
export function typeCode(type: string): number {
  return Object.hasOwn(F.event, type) && type !== 'header' ? F.event[type as keyof typeof F.event] : F.event.other;
}

export const F = {
  event: { header: 1, session_start: 10, session_end: 11, exec: 12, exit: 13, connect: 14, dns: 15, tool_call: 16, violation: 17, loss: 18, policy: 19, other: 99 },
  header: { ts: 1, host: 2, session: 3, exec_id: 4, parent_exec_id: 5, pid: 6, ppid: 7, uid: 8, seq: 9, verdict: 10, rule: 11, policy: 12 },
  timestamp: { seconds: 1, nanos: 2 },
  session_start: { origin: 1, agent: 2, backend: 3, mode: 4, path: 5, argv: 6 },
  session_end: { exit_code: 1, signal: 2, counts: 3 },
  exec: { path: 1, argv: 2, script: 3, via_loader: 4, fileless: 5, cwd: 6 },
  exit: { exit_code: 1, signal: 2 },
  connect: { proto: 1, family: 2, daddr: 3, dport: 4, op: 5 },
  dns: { name: 1, answers: 2, ttl: 3 },
  tool_call: { server: 1, tool: 2, arguments: 3, latency_ms: 4, is_error: 5, reason: 6 },
  violation: { what: 1, detail: 2 },
  loss: { where: 1, count: 2 },
  policy: { action: 1, detail: 2 },
  other: { type: 1, json: 2 },
} as const;

const BODY_NAMES: Record<number, EventType | 'other'> = {};
for (const [name, id] of Object.entries(F.event)) if (name !== 'header') BODY_NAMES[id] = name as EventType | 'other';

/** A growable output buffer with the protobuf primitives the event encoder needs. */
export class WireWriter {
  buf: Buffer;
  pos = 0;
  constructor(size = 4096) {
    this.buf = Buffer.allocUnsafe(size);
  }
  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n + 1024));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  /** Unsigned varint of a non-negative integer below 2^53. */
  varint(v: number): void {
    this.ensure(10);
    const b = this.buf;
    let p = this.pos;
    while (v > 0x7fffffff) {
      b[p++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    while (v > 0x7f) {
      b[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[p++] = v;
    this.pos = p;
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  uint(field: number, v: number | undefined): void {
    if (!v) return;
    this.tag(field, 0);
    this.varint(v);
  }
  /** A proto3 `optional` integer: written when defined, zero included. */
  optUint(field: number, v: number | undefined | null): void {
    if (v == null) return;
    this.tag(field, 0);
    this.varint(v >>> 0);
  }
  optSint(field: number, v: number | undefined | null): void {
    if (v == null) return;
    this.tag(field, 0);
    this.varint(((v << 1) ^ (v >> 31)) >>> 0);
  }
  bool(field: number, v: boolean | undefined): void {
    if (!v) return;
    this.tag(field, 0);
    this.varint(1);
  }
  double(field: number, v: number | undefined | null): void {
    if (v == null) return;
    this.tag(field, 1);
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  /** A string field; empty strings are skipped unless `always` (repeated elements). */
  str(field: number, s: string | undefined, always = false): void {
    if (!s) {
      if (!always) return;
      s = '';
    }
    this.tag(field, 2);
    const len = s.length;
    if (len < 128) {
      // Short strings are mostly ASCII: copied here, a call into native code costs more than the copy.
      this.ensure(len + 1);
      const b = this.buf;
      const at = this.pos + 1;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[at + i] = c;
      }
      if (i === len) {
        b[this.pos] = len;
        this.pos = at + len;
        return;
      }
    }
    const n = Buffer.byteLength(s);
    this.varint(n);
    this.ensure(n);
    this.pos += (this.buf as FastBuffer).utf8Write(s, this.pos, n);
  }
  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** Starts a length-delimited sub-message; returns the mark to pass to end(). */
  begin(field: number): number {
    this.tag(field, 2);
    this.ensure(1);
    return this.pos++;
  }
  end(mark: number): void {
    const len = this.pos - mark - 1;
    if (len < 128) {
      this.buf[mark] = len;
      return;
    }
    let size = 1;
    for (let v = len; v > 0x7f; v = Math.floor(v / 128)) size++;
    this.ensure(size);
    this.buf.copyWithin(mark + size, mark + 1, this.pos);
    const end = this.pos + size - 1;
    this.pos = mark;
    this.varint(len);
    this.pos = end;
  }
}

/** Node's Buffer has these (undocumented, stable since v0.x) methods: no argument checks, no allocation. */
type FastBuffer = Buffer & { utf8Write(s: string, offset: number, max: number): number; utf8Slice(start: number, end: number): string };

/** Appends the encoding of one bridle.v1.Event for `ev` to `w`. */
export function writeEvent(w: WireWriter, ev: BridleEvent): void {
  const h = w.begin(F.event.header);
  const ms = Math.max(0, isoToMs(ev.ts));
  const t = w.begin(F.header.ts);
  const seconds = Math.floor(ms / 1000);
  w.uint(F.timestamp.seconds, seconds);
  w.uint(F.timestamp.nanos, (ms - seconds * 1000) * 1_000_000);
  w.end(t);
  w.str(F.header.host, ev.host);
  w.str(F.header.session, ev.session);
  w.str(F.header.exec_id, ev.exec_id);
  w.str(F.header.parent_exec_id, ev.parent_exec_id);
  w.uint(F.header.pid, ev.pid >>> 0);
  w.uint(F.header.ppid, ev.ppid >>> 0);
  w.uint(F.header.uid, ev.uid >>> 0);
  w.uint(F.header.seq, ev.seq);
  w.uint(F.header.verdict, ev.verdict ? VERDICTS[ev.verdict] : 0);
  w.str(F.header.rule, ev.rule);
  w.str(F.header.policy, ev.policy);
  w.end(h);
  switch (ev.type) {
    case 'exec': {
      const b = w.begin(F.event.exec);
      w.str(F.exec.path, ev.path);
      for (const a of ev.argv ?? []) w.str(F.exec.argv, a, true);
      w.str(F.exec.script, ev.script);
      w.bool(F.exec.via_loader, ev.via_loader);
      w.bool(F.exec.fileless, ev.fileless);
      w.str(F.exec.cwd, ev.cwd);
      w.end(b);
      return;
    }
    case 'connect': {
      const b = w.begin(F.event.connect);
      w.uint(F.connect.proto, NET_PROTO[ev.proto] ?? 4);
      w.uint(F.connect.family, FAMILY[ev.family] ?? 0);
      w.str(F.connect.daddr, ev.daddr);
      w.uint(F.connect.dport, ev.dport >>> 0);
      w.str(F.connect.op, ev.op);
      w.end(b);
      return;
    }
    case 'exit': {
      const b = w.begin(F.event.exit);
      w.optSint(F.exit.exit_code, ev.exit_code);
      w.optUint(F.exit.signal, ev.signal);
      w.end(b);
      return;
    }
    case 'session_start': {
      const b = w.begin(F.event.session_start);
      w.str(F.session_start.origin, ev.origin);
      w.str(F.session_start.agent, ev.agent);
      w.str(F.session_start.backend, ev.backend);
      w.str(F.session_start.mode, ev.mode);
      w.str(F.session_start.path, ev.path);
      for (const a of ev.argv ?? []) w.str(F.session_start.argv, a, true);
      w.end(b);
      return;
    }
    case 'session_end': {
      const b = w.begin(F.event.session_end);
      w.optSint(F.session_end.exit_code, ev.exit_code);
      w.optUint(F.session_end.signal, ev.signal);
      for (const [k, v] of Object.entries(ev.counts ?? {})) {
        const e = w.begin(F.session_end.counts);
        w.str(1, k, true);
        w.uint(2, v);
        w.end(e);
      }
      w.end(b);
      return;
    }
    case 'dns': {
      const b = w.begin(F.event.dns);
      w.str(F.dns.name, ev.name);
      for (const a of ev.answers ?? []) w.str(F.dns.answers, a, true);
      w.optUint(F.dns.ttl, ev.ttl);
      w.end(b);
      return;
    }
    case 'tool_call': {
      const b = w.begin(F.event.tool_call);
      w.str(F.tool_call.server, ev.server);
      w.str(F.tool_call.tool, ev.tool);
      if (ev.arguments !== undefined) w.str(F.tool_call.arguments, JSON.stringify(ev.arguments));
      w.double(F.tool_call.latency_ms, ev.latency_ms);
      w.bool(F.tool_call.is_error, ev.is_error);
      w.str(F.tool_call.reason, ev.reason);
      w.end(b);
      return;
    }
    case 'violation': {
      const b = w.begin(F.event.violation);
      w.str(F.violation.what, ev.what);
      w.str(F.violation.detail, ev.detail);
      w.end(b);
      return;
    }
    case 'loss': {
      const b = w.begin(F.event.loss);
      w.str(F.loss.where, ev.where);
      w.uint(F.loss.count, ev.count);
      w.end(b);
      return;
    }
    case 'policy': {
      const b = w.begin(F.event.policy);
      w.str(F.policy.action, ev.action);
      w.str(F.policy.detail, ev.detail);
      w.end(b);
      return;
    }
    default: {
      const other = ev as BridleEvent;
      const b = w.begin(F.event.other);
      w.str(F.other.type, String((other as { type: unknown }).type));
      w.str(F.other.json, otherJson(other));
      w.end(b);
    }
  }
}

const scratch = new WireWriter(64 * 1024);

/** One event's bytes (a bridle.v1.Event), in a fresh buffer of exactly that size. */
export function encodeEvent(ev: BridleEvent): Buffer {
  scratch.pos = 0;
  writeEvent(scratch, ev);
  return Buffer.from(scratch.buf.subarray(0, scratch.pos));
}

/** Cursor over protobuf bytes; throws WireError on anything malformed. */
class WireReader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }
  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError('truncated varint');
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    throw new WireError('varint too long');
  }
  sint32(): number {
    const n = this.varint() >>> 0;
    return (n >>> 1) ^ -(n & 1);
  }
  int32(): number {
    return this.varint() | 0;
  }
  len(): number {
    const n = this.varint();
    if (this.pos + n > this.end) throw new WireError('length past the end of the message');
    return n;
  }
  string(): string {
    const n = this.len();
    const s = (this.buf as FastBuffer).utf8Slice(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  double(): number {
    if (this.pos + 8 > this.end) throw new WireError('truncated double');
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  /** A sub-message: returns its end offset; the caller reads until pos reaches it. */
  sub(): number {
    const n = this.len();
    return this.pos + n;
  }
  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2: {
        // (not `this.pos += this.len()`: that adds to pos as it was before len() read the length)
        const n = this.len();
        this.pos += n;
        return;
      }
      case 5:
        this.pos += 4;
        break;
      default:
        throw new WireError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new WireError('truncated field');
  }
}

export class WireError extends Error {
  override name = 'WireError';
}

function expectWire(tag: number, wire: number): void {
  if ((tag & 7) !== wire) throw new WireError(`field ${tag >>> 3}: wire type ${tag & 7}, expected ${wire}`);
}

/** Lean decoding: where the header's policy is (read only for session_start, once the body's type is known). */
const leanPolicy = { start: -1, end: -1 };

function readHeader(r: WireReader, end: number, ev: Record<string, unknown>, lean: boolean): number {
  let ms = 0;
  while (r.pos < end) {
    const tag = r.varint();
    switch (tag >>> 3) {
      case F.header.ts: {
        expectWire(tag, 2);
        const e = r.sub();
        let s = 0;
        let ns = 0;
        while (r.pos < e) {
          const t = r.varint();
          if (t >>> 3 === 1) s = r.varint();
          else if (t >>> 3 === 2) ns = r.varint();
          else r.skip(t & 7);
        }
        ms = s * 1000 + Math.floor(ns / 1_000_000);
        break;
      }
      case F.header.host:
        expectWire(tag, 2);
        ev.host = r.string();
        break;
      case F.header.session:
        expectWire(tag, 2);
        ev.session = r.string();
        break;
      case F.header.exec_id:
        expectWire(tag, 2);
        ev.exec_id = r.string();
        break;
      case F.header.parent_exec_id:
        expectWire(tag, 2);
        ev.parent_exec_id = r.string();
        break;
      case F.header.pid:
        ev.pid = r.varint() >>> 0;
        break;
      case F.header.ppid:
        ev.ppid = r.varint() >>> 0;
        break;
      case F.header.uid:
        ev.uid = r.varint() >>> 0;
        break;
      case F.header.seq:
        ev.seq = r.varint();
        break;
      case F.header.verdict: {
        const v = VERDICT_NAMES[r.varint()];
        if (v) ev.verdict = v;
        break;
      }
      case F.header.rule:
        if (lean) skipStr(r, tag);
        else {
          expectWire(tag, 2);
          opt(ev, 'rule', r.string());
        }
        break;
      case F.header.policy:
        if (lean) {
          expectWire(tag, 2);
          const n = r.len();
          // like opt(): the last non-empty one counts
          if (n) {
            leanPolicy.start = r.pos;
            leanPolicy.end = r.pos + n;
          }
          r.pos += n;
        } else {
          expectWire(tag, 2);
          opt(ev, 'policy', r.string());
        }
        break;
      default:
        r.skip(tag & 7);
    }
  }
  if (r.pos !== end) throw new WireError('header overruns its length');
  return ms;
}

/** A length-delimited string field (a closure per field would cost an allocation each). */
function str(r: WireReader, tag: number): string {
  expectWire(tag, 2);
  return r.string();
}

/** A string field passed over: checked like str() reads it (the full decoder must accept what was kept), not decoded. */
function skipStr(r: WireReader, tag: number): void {
  expectWire(tag, 2);
  r.skip(2);
}

/**
 * Reads one body message into `ev` (which already has its type set). `lean`: only the fields a store
 * indexes and a live filter matches on (see decodeForStore); the others are checked as the full decoder
 * reads them, without being decoded.
 */
function readBody(r: WireReader, end: number, kind: EventType | 'other', ev: Record<string, any>, lean: boolean): void {
  while (r.pos < end) {
    const tag = r.varint();
    const f = tag >>> 3;
    const wire = tag & 7;
    switch (kind) {
      case 'exec':
        if (f === F.exec.path) ev.path = str(r, tag);
        else if (f === F.exec.argv) ev.argv.push(str(r, tag));
        else if (f === F.exec.script) lean ? skipStr(r, tag) : opt(ev, 'script', str(r, tag));
        else if (f === F.exec.via_loader) r.varint() !== 0 && !lean && (ev.via_loader = true);
        else if (f === F.exec.fileless) r.varint() !== 0 && !lean && (ev.fileless = true);
        else if (f === F.exec.cwd) lean ? skipStr(r, tag) : opt(ev, 'cwd', str(r, tag));
        else r.skip(wire);
        break;
      case 'connect':
        if (f === F.connect.proto) {
          const v = r.varint();
          if (!lean) ev.proto = NET_PROTO_NAMES[v] ?? 'other';
        } else if (f === F.connect.family) {
          const v = r.varint();
          if (!lean) ev.family = FAMILY_NAMES[v] ?? 'inet';
        } else if (f === F.connect.daddr) ev.daddr = str(r, tag);
        else if (f === F.connect.dport) ev.dport = r.varint() >>> 0;
        else if (f === F.connect.op) lean ? skipStr(r, tag) : opt(ev, 'op', str(r, tag));
        else r.skip(wire);
        break;
      case 'exit':
      case 'session_end':
        if (f === 1) ev.exit_code = r.sint32();
        else if (f === 2) ev.signal = r.varint() >>> 0;
        else if (f === F.session_end.counts && kind === 'session_end') {
          expectWire(tag, 2);
          const e = r.sub();
          let k = '';
          let v = 0;
          while (r.pos < e) {
            const t = r.varint();
            if (t >>> 3 === 1) {
              if (lean) skipStr(r, t);
              else {
                expectWire(t, 2);
                k = r.string();
              }
            } else if (t >>> 3 === 2) v = r.varint();
            else r.skip(t & 7);
          }
          if (!lean) (ev.counts ??= {})[k] = v;
        } else r.skip(wire);
        break;
      case 'session_start':
        if (f === F.session_start.origin) ev.origin = str(r, tag);
        else if (f === F.session_start.agent) opt(ev, 'agent', str(r, tag));
        else if (f === F.session_start.backend) ev.backend = str(r, tag);
        else if (f === F.session_start.mode) ev.mode = str(r, tag);
        else if (f === F.session_start.path) opt(ev, 'path', str(r, tag));
        else if (f === F.session_start.argv) (ev.argv ??= []).push(str(r, tag));
        else r.skip(wire);
        break;
      case 'dns':
        if (lean && (f === F.dns.name || f === F.dns.answers)) skipStr(r, tag);
        else if (f === F.dns.name) ev.name = str(r, tag);
        else if (f === F.dns.answers) ev.answers.push(str(r, tag));
        else if (f === F.dns.ttl) {
          const v = r.varint() >>> 0;
          if (!lean) ev.ttl = v;
        }
        else r.skip(wire);
        break;
      case 'tool_call':
        if (lean && (f === F.tool_call.server || f === F.tool_call.tool || f === F.tool_call.arguments || f === F.tool_call.reason)) skipStr(r, tag);
        else if (f === F.tool_call.server) ev.server = str(r, tag);
        else if (f === F.tool_call.tool) ev.tool = str(r, tag);
        else if (f === F.tool_call.arguments) {
          const a = str(r, tag);
          if (a) {
            try {
              ev.arguments = JSON.parse(a);
            } catch {
              ev.arguments = a;
            }
          }
        } else if (f === F.tool_call.latency_ms) {
          expectWire(tag, 1);
          const v = r.double();
          if (!lean) ev.latency_ms = v;
        } else if (f === F.tool_call.is_error) r.varint() !== 0 && !lean && (ev.is_error = true);
        else if (f === F.tool_call.reason) opt(ev, 'reason', str(r, tag));
        else r.skip(wire);
        break;
      case 'violation':
        if (lean && (f === F.violation.what || f === F.violation.detail)) skipStr(r, tag);
        else if (f === F.violation.what) ev.what = str(r, tag);
        else if (f === F.violation.detail) opt(ev, 'detail', str(r, tag));
        else r.skip(wire);
        break;
      case 'loss':
        if (f === F.loss.where) lean ? skipStr(r, tag) : (ev.where = str(r, tag));
        else if (f === F.loss.count) ev.count = r.varint();
        else r.skip(wire);
        break;
      case 'policy':
        if (lean && (f === F.policy.action || f === F.policy.detail)) skipStr(r, tag);
        else if (f === F.policy.action) ev.action = str(r, tag);
        else if (f === F.policy.detail) opt(ev, 'detail', str(r, tag));
        else r.skip(wire);
        break;
      case 'other':
        if (f === F.other.type) ev.__type = str(r, tag);
        else if (f === F.other.json) ev.__json = str(r, tag);
        else r.skip(wire);
        break;
    }
  }
  if (r.pos !== end) throw new WireError('body overruns its length');
}

/** Fresh defaults per type, so a field absent on the wire reads as its proto3 default (lean: of the fields kept). */
function bodyDefaults(kind: EventType | 'other', lean: boolean): Record<string, unknown> {
  if (lean) {
    switch (kind) {
      case 'exec':
        return { path: '', argv: [] };
      case 'connect':
        return { daddr: '', dport: 0 };
      case 'session_start':
        return { origin: '', backend: '', mode: '' };
      case 'loss':
        return { count: 0 };
      default:
        return {};
    }
  }
  switch (kind) {
    case 'exec':
      return { path: '', argv: [] };
    case 'connect':
      return { proto: 'other', family: 'inet', daddr: '', dport: 0 };
    case 'session_start':
      return { origin: '', backend: '', mode: '' };
    case 'dns':
      return { name: '', answers: [] };
    case 'tool_call':
      return { server: '', tool: '' };
    case 'violation':
      return { what: '' };
    case 'loss':
      return { where: '', count: 0 };
    case 'policy':
      return { action: '' };
    default:
      return {};
  }
}

export interface DecodedEvent {
  ev: BridleEvent;
  /** Epoch ms of the event's time (decodeForStore leaves ev.ts empty). */
  tsMs: number;
}

/** Decodes one bridle.v1.Event; throws WireError (or Error) on malformed bytes or an event without a body. */
export function decodeEventFast(bytes: Uint8Array): DecodedEvent {
  return decode(bytes, false);
}

/**
 * The collector's ingest decoding: accepts and refuses exactly what decodeEventFast does, but sets only
 * what a store indexes and a live filter matches on (matchEvent): the header without `rule` (and `policy`
 * but for session_start), `ts` left empty (use tsMs), and of the bodies exec path and argv, session_start,
 * exit and session_end codes, the connect address and port, the loss count. The rest of each event
 * stays in its bytes, which are what is stored and sent. Formatting the date and the strings nobody
 * reads were most of the decoding's cost and of the garbage it left (bench/collector.bench.ts).
 */
export function decodeForStore(bytes: Uint8Array): DecodedEvent {
  return decode(bytes, true);
}

function decode(bytes: Uint8Array, lean: boolean): DecodedEvent {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new WireReader(buf, 0, buf.length);
  const ev: Record<string, any> = { type: '', ts: '', host: '', session: '', exec_id: '', parent_exec_id: '', pid: 0, ppid: 0, uid: 0, seq: 0 };
  let ms = 0;
  let kind: EventType | 'other' | undefined;
  let bodyStart = -1;
  let bodyEnd = -1;
  leanPolicy.start = -1;
  while (r.pos < r.end) {
    const tag = r.varint();
    const f = tag >>> 3;
    if (f === F.event.header) {
      expectWire(tag, 2);
      const end = r.sub();
      ms = readHeader(r, end, ev, lean);
    } else if (BODY_NAMES[f]) {
      expectWire(tag, 2);
      // The body may come before the header on the wire: remember where it is, read it after.
      kind = BODY_NAMES[f];
      bodyEnd = r.sub();
      bodyStart = r.pos;
      r.pos = bodyEnd;
    } else r.skip(tag & 7);
  }
  if (!kind) throw new WireError('event has no body');
  // A time JavaScript cannot represent (±8.64e15 ms) would be stored and then break every full decoding.
  if (!(Math.abs(ms) <= 8.64e15)) throw new WireError('timestamp out of range');
  // Events of a type this build does not know are read whole: their JSON body is checked.
  const leanBody = lean && kind !== 'other';
  Object.assign(ev, bodyDefaults(kind, leanBody));
  ev.type = kind;
  readBody(new WireReader(buf, bodyStart, bodyEnd), bodyEnd, kind, ev, leanBody);
  // the policy a session started under is what a store keeps of it (the other events' bytes keep theirs)
  if (lean && kind === 'session_start' && leanPolicy.start >= 0) ev.policy = (buf as FastBuffer).utf8Slice(leanPolicy.start, leanPolicy.end);
  if (!lean) ev.ts = new Date(ms).toISOString();
  if (kind === 'other') {
    const rest = JSON.parse(ev.__json || '{}') as Record<string, unknown>;
    if (typeof rest !== 'object' || rest === null || Array.isArray(rest)) throw new WireError('event "other" body is not a JSON object');
    const type = ev.__type as string;
    delete ev.__type;
    delete ev.__json;
    return { ev: { ...rest, ...ev, type } as unknown as BridleEvent, tsMs: ms };
  }
  return { ev: ev as BridleEvent, tsMs: ms };
}
