// The hand-written event codec (encodeEvent / decodeEventFast) against the schema as protobufjs loads it
// from proto/bridle/v1/events.proto: the field numbers agree, and every event type reads back the same
// whichever encoder wrote it and whichever decoder reads it. Strings cover the encoder's short-ASCII path
// and its edges: empty, 127 and 128 characters, non-ASCII at the start and at the end, astral characters.
import assert from 'node:assert/strict';
import test from 'node:test';
import type protobuf from 'protobufjs';
import { decodeEventFast, decodeEventReflect, encodeEvent, encodeEventReflect, EventMsg, F } from '../../src/events/proto.js';
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
