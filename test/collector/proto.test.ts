// The hand-written event codec (encodeEvent / decodeEventFast) against the schema as protobufjs loads it
// from proto/bridle/v1/events.proto: the field numbers agree, and every event type reads back the same
// whichever encoder wrote it and whichever decoder reads it. Strings cover the encoder's short-ASCII path
// and its edges: empty, 127 and 128 characters, non-ASCII at the start and at the end, astral characters.
// The collector's lean decoding (decodeForStore) accepts and refuses the same bytes and agrees on what it keeps.
import assert from 'node:assert/strict';
import test from 'node:test';
import type protobuf from 'protobufjs';
import { decodeEventFast, decodeEventReflect, decodeForStore, encodeEvent, encodeEventReflect, EventMsg, F } from '../../src/events/proto.js';
import type { BridleEvent } from '../../src/events/types.js';

test('field numbers of the fast codec are those of events.proto', () => {
  const check = (type: protobuf.Type, ids: Record<string, number>, where: string): void => {
    for (const [name, id] of Object.entries(ids)) {
      const field = type.fields[name];
      assert.ok(field, `${where}.${name}: no such field in ${type.fullName}`);
      assert.equal(field.id, id, `${where}.${name}: ${id} in proto.ts, ${field.id} in ${type.fullName}`);
    }
    // And no field of the schema is missing from the table (a new field must be taught to the fast path).
    for (const name of Object.keys(type.fields)) assert.ok(name in ids, `${type.fullName}.${name} is not in F.${where}`);
  };
  check(EventMsg, F.event, 'event');
  const header = EventMsg.fields.header!.resolve().resolvedType as protobuf.Type;
  check(header, F.header, 'header');
  check(header.fields.ts!.resolve().resolvedType as protobuf.Type, F.timestamp, 'timestamp');
  for (const body of Object.keys(F.event).filter((k) => k !== 'header') as Array<Exclude<keyof typeof F.event, 'header'>>) {
    check(EventMsg.fields[body]!.resolve().resolvedType as protobuf.Type, F[body], body);
  }
});

const ascii127 = 'a'.repeat(127);
const STRINGS = ['', 'x', ascii127, `${ascii127}b`, 'é' + 'a'.repeat(126), `${'a'.repeat(126)}é`, 'café', '日本語のパス', '🔑 key', `${'z'.repeat(200)}🔑`, 'a'.repeat(5000)];

function samples(s: string, i: number): BridleEvent[] {
  const base = {
    ts: new Date(1_700_000_000_000 + i * 1_001).toISOString(), host: `host-${s}`, session: `s-${s}`, exec_id: `e:${s}`, parent_exec_id: `p:${s}`,
    pid: 4_000_000_000 + i, ppid: 1, uid: 1000, seq: 2 ** 40 + i, verdict: 'deny' as const, rule: `exec.deny[${i}]`, policy: s,
  };
  return [
    { ...base, type: 'session_start', origin: 'run', agent: s, backend: 'sigkill', mode: 'enforce', path: `/bin/${s}`, argv: [s, '', s] },
    { ...base, type: 'session_end', exit_code: -3, signal: 9, counts: { [s || 'k']: 7, exec: 2 ** 33 } },
    { ...base, type: 'exec', path: `/usr/bin/${s}`, argv: ['', s, 'x'], script: s, via_loader: true, fileless: true, cwd: s },
    { ...base, type: 'exit', exit_code: 0, signal: 0 },
    { ...base, type: 'connect', proto: 'udp', family: 'inet6', daddr: '::1', dport: 65535, op: s },
    { ...base, type: 'dns', name: s, answers: ['127.0.0.1', s], ttl: 0 },
    { ...base, type: 'tool_call', server: s, tool: s, arguments: { path: s, n: 1 }, latency_ms: 1.5, is_error: true, reason: s },
    { ...base, type: 'violation', what: s, detail: s },
    { ...base, type: 'loss', where: s, count: 2 ** 35 },
    { ...base, type: 'policy', action: 'rejected', detail: s },
  ];
}

test('every event type reads back the same through both encoders and both decoders', () => {
  let n = 0;
  STRINGS.forEach((s, i) => {
    for (const ev of samples(s, i)) {
      const fast = Buffer.from(encodeEvent(ev));
      const reflect = Buffer.from(encodeEventReflect(ev));
      const what = `${ev.type} with ${JSON.stringify(s.slice(0, 20))} (${s.length} chars)`;
      // Each decoder reads the same event from either encoding...
      assert.deepEqual(decodeEventFast(fast).ev, decodeEventFast(reflect).ev, `fast decoder, ${what}`);
      assert.deepEqual(decodeEventReflect(fast), decodeEventReflect(reflect), `protobufjs decoder, ${what}`);
      // ...and the two decoders agree, and the event is the one that was written.
      const back = decodeEventFast(fast).ev;
      assert.deepEqual(back, decodeEventReflect(fast), `decoders disagree, ${what}`);
      for (const [k, v] of Object.entries(ev)) {
        const got = (back as unknown as Record<string, unknown>)[k];
        // proto3 does not carry an empty optional string: it reads back absent.
        if (v === '' && got === undefined) continue;
        assert.deepEqual(got, v, `${what}: field ${k}`);
      }
      n++;
    }
  });
  assert.equal(n, STRINGS.length * 10);
});

/** A protobuf varint of a non-negative integer below 2^53. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 127) {
    out.push((n % 128) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** What decodeForStore keeps, per type (besides the header without rule); what stores and live filters read. */
const KEPT: Record<string, string[]> = {
  session_start: ['origin', 'agent', 'backend', 'mode', 'path', 'argv', 'policy'],
  session_end: ['exit_code', 'signal'],
  exec: ['path', 'argv'],
  exit: ['exit_code', 'signal'],
  connect: ['daddr', 'dport'],
  loss: ['count'],
};
const HEADER = ['type', 'host', 'session', 'exec_id', 'parent_exec_id', 'pid', 'ppid', 'uid', 'seq', 'verdict'];

test('the lean decoding keeps what stores and live filters read, equal to the full decoding', () => {
  STRINGS.forEach((s, i) => {
    for (const ev of samples(s, i)) {
      const bytes = encodeEvent(ev);
      const full = decodeEventFast(bytes);
      const lean = decodeForStore(bytes);
      assert.equal(lean.tsMs, full.tsMs);
      const l = lean.ev as unknown as Record<string, unknown>;
      const f = full.ev as unknown as Record<string, unknown>;
      for (const k of [...HEADER, ...(KEPT[ev.type] ?? [])]) assert.deepEqual(l[k], f[k], `${ev.type}.${k}`);
      for (const k of Object.keys(l)) assert.ok(k === 'ts' || HEADER.includes(k) || KEPT[ev.type]?.includes(k), `${ev.type}: ${k} is kept but not listed`);
      assert.equal(l.rule, undefined);
      if (ev.type !== 'session_start') assert.equal(l.policy, undefined, `${ev.type}: policy is read for session_start only`);
    }
  });
});

test('the lean decoding refuses exactly what the full decoding refuses (every truncation, byte changes)', () => {
  const outcome = (decodeFn: (b: Uint8Array) => unknown, b: Buffer): string => {
    try {
      decodeFn(b);
      return 'ok';
    } catch (err) {
      return `refused: ${(err as Error).message}`;
    }
  };
  let cases = 0;
  let refused = 0;
  for (const ev of [...samples('café', 1), ...samples('', 2)]) {
    const bytes = Buffer.from(encodeEvent(ev));
    const variants: Buffer[] = [];
    for (let n = 0; n < bytes.length; n++) variants.push(bytes.subarray(0, n));
    for (let i = 0; i < bytes.length; i++) {
      for (const v of [0x00, 0x02, 0x05, 0x7f, 0xff]) {
        const b = Buffer.from(bytes);
        b[i] = v;
        variants.push(b);
      }
    }
    for (const b of variants) {
      const full = outcome(decodeEventFast, b);
      assert.equal(outcome(decodeForStore, b), full, `${ev.type}: ${b.toString('hex')}`);
      cases++;
      if (full !== 'ok') refused++;
    }
  }
  assert.ok(refused > cases / 10, `the variants include refused ones (${refused} of ${cases})`);
});

test('fields this build does not know (from a newer agent) are passed over, at every level', () => {
  // one unknown field of each wire type: varint, fixed64, length-delimited (two lengths), fixed32
  const unknown = Buffer.from([
    ...varint((40 << 3) | 0), ...varint(300),
    ...varint((41 << 3) | 1), 1, 2, 3, 4, 5, 6, 7, 8,
    ...varint((42 << 3) | 2), 3, 0x61, 0x62, 0x63,
    ...varint((43 << 3) | 2), ...varint(200), ...new Array(200).fill(0x7a),
    ...varint((44 << 3) | 5), 1, 2, 3, 4,
  ]);
  /** The top-level fields of an encoded event: [field number, payload]. */
  const fields = (b: Buffer): Array<[number, Buffer]> => {
    const out: Array<[number, Buffer]> = [];
    let p = 0;
    const rd = (): number => {
      let v = 0;
      for (let mul = 1; ; mul *= 128) {
        const x = b[p++]!;
        v += (x & 0x7f) * mul;
        if (x < 0x80) return v;
      }
    };
    while (p < b.length) {
      const tag = rd();
      assert.equal(tag & 7, 2, 'top-level fields of an event are messages');
      const n = rd();
      out.push([tag >>> 3, b.subarray(p, p + n)]);
      p += n;
    }
    return out;
  };
  const wrap = (field: number, payload: Buffer): Buffer => Buffer.concat([Buffer.from([...varint((field << 3) | 2), ...varint(payload.length)]), payload]);
  for (const ev of samples('café', 3)) {
    const plain = Buffer.from(encodeEvent(ev));
    const grown = Buffer.concat([
      unknown,
      ...fields(plain).map(([f, payload]) => wrap(f, Buffer.concat([unknown, payload, unknown]))),
      unknown,
    ]);
    assert.deepEqual(decodeEventFast(grown), decodeEventFast(plain), `${ev.type}: full decoding`);
    assert.deepEqual(decodeForStore(grown), decodeForStore(plain), `${ev.type}: lean decoding`);
    assert.deepEqual(decodeEventReflect(grown), decodeEventReflect(plain), `${ev.type}: protobufjs`);
  }
});

test('an event time JavaScript cannot represent is refused by both decodings (it would break every later read)', () => {
  const event = (seconds: number): Buffer => {
    const ts = [0x08, ...varint(seconds)];
    const header = [0x0a, ts.length, ...ts, 0x12, 1, 0x68];
    return Buffer.from([0x0a, header.length, ...header, 0x6a, 0]); // header (ts, host "h"), an empty exit body
  };
  assert.equal(decodeEventFast(event(1_700_000_000)).ev.type, 'exit', 'the hand-made event is well formed');
  assert.equal(decodeForStore(event(1_700_000_000)).tsMs, 1_700_000_000_000);
  for (const seconds of [8.64e12 + 1, 2 ** 52]) {
    assert.throws(() => decodeEventFast(event(seconds)), /timestamp out of range/);
    assert.throws(() => decodeForStore(event(seconds)), /timestamp out of range/);
  }
});
