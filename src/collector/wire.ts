// gRPC plumbing for bridle.v1.Collector: message types from proto/bridle/v1/collector.proto (loaded by
// src/events/proto.ts) and service definitions for @grpc/grpc-js built from them.
//
// "Raw views": a `repeated Event events` field has the same wire bytes as `repeated bytes events`. The
// collector stores each event's bytes as the agent encoded them and sends stored events back out without
// decoding and re-encoding them; the agent encodes each event once. For that, this file derives message
// types that differ from the .proto ones only in declaring those fields as `bytes` (same numbers).
// Clients decode responses with the real types, so other languages see plain proto messages.
import protobuf from 'protobufjs';
import * as grpc from '@grpc/grpc-js';
import { root, WireWriter } from '../events/proto.js';

const T = (name: string): protobuf.Type => root.lookupType(`bridle.v1.${name}`);

/** A copy of `src` named `name` in package bridle.v1.raw, with some fields retyped (same numbers). */
function view(ns: protobuf.Namespace, name: string, src: protobuf.Type, retype: Record<string, string>): protobuf.Type {
  const t = new protobuf.Type(name);
  const oneofOf = new Map<string, string>();
  for (const o of src.oneofsArray) {
    // proto3 `optional` fields live in synthetic one-field oneofs named "_field"; keep them as such.
    for (const f of o.fieldsArray) oneofOf.set(f.name, o.name);
  }
  for (const f of src.fieldsArray) {
    const type = retype[f.name] ?? (f.resolvedType ? f.resolvedType.fullName.slice(1) : f.type);
    t.add(new protobuf.Field(f.name, f.id, type, f.repeated ? 'repeated' : f.options?.proto3_optional ? 'optional' : undefined));
  }
  for (const o of src.oneofsArray) t.add(new protobuf.OneOf(o.name, o.fieldsArray.map((f) => f.name)));
  ns.add(t);
  return t;
}

const rawNs = root.define('bridle.v1.raw');
const EventBatchRaw = view(rawNs, 'EventBatch', T('EventBatch'), { events: 'bytes' });
const IngestRequestRaw = view(rawNs, 'IngestRequest', T('IngestRequest'), { batch: 'bridle.v1.raw.EventBatch' });
const ProcessNodeRaw = view(rawNs, 'ProcessNode', T('ProcessNode'), { events: 'bytes' });
const LineageResponseRaw = view(rawNs, 'LineageResponse', T('LineageResponse'), { processes: 'bridle.v1.raw.ProcessNode' });
const ProcessMatchRaw = view(rawNs, 'ProcessMatch', T('ProcessMatch'), { evidence: 'bytes' });
const ProcessListRaw = view(rawNs, 'ProcessList', T('ProcessList'), { matches: 'bridle.v1.raw.ProcessMatch' });
root.resolveAll();

export const pb = {
  Event: T('Event'),
  IngestRequest: T('IngestRequest'),
  IngestResponse: T('IngestResponse'),
  EventBatch: T('EventBatch'),
  SubscribeRequest: T('SubscribeRequest'),
  EventQuery: T('EventQuery'),
  LineageRequest: T('LineageRequest'),
  LineageResponse: T('LineageResponse'),
  SessionQuery: T('SessionQuery'),
  SessionList: T('SessionList'),
  HostQuery: T('HostQuery'),
  HostList: T('HostList'),
  ProcessQuery: T('ProcessQuery'),
  ProcessList: T('ProcessList'),
  raw: { EventBatch: EventBatchRaw, IngestRequest: IngestRequestRaw, LineageResponse: LineageResponseRaw, ProcessList: ProcessListRaw, ProcessNode: ProcessNodeRaw },
};

// ---- TS shapes of the messages the code builds or reads (field names as in the .proto) ----

import type { Int64, PbTimestamp } from '../events/proto.js';

export interface WireHello {
  host: string;
  agent_version?: string;
  spool_id?: string;
}
export interface WireBatchRaw {
  first_seq: Int64;
  last_seq: Int64;
  events: Uint8Array[];
}
export interface WireIngestRequestRaw {
  kind?: 'hello' | 'batch';
  hello?: WireHello;
  batch?: WireBatchRaw;
}
export interface WireWelcome {
  host: string;
  last_seq: Int64;
  max_batch_bytes: number;
  max_event_bytes: number;
}
export interface WireAck {
  last_seq: Int64;
  stored?: number;
  duplicates?: number;
  rejected?: number;
  error?: string;
}
export interface WireIngestResponse {
  kind?: 'welcome' | 'ack';
  welcome?: WireWelcome;
  ack?: WireAck;
}
export interface WireEventFilter {
  hosts?: string[];
  session?: string;
  types?: string[];
  verdicts?: number[];
  exec_id?: string;
  since?: PbTimestamp | null;
  until?: PbTimestamp | null;
  daddr?: string;
  dport?: number;
}
export interface WireSubscribeRequest {
  filter?: WireEventFilter | null;
  backfill?: number;
}
export interface WireEventQuery {
  filter?: WireEventFilter | null;
  limit?: number;
}
export interface WireLineageRequest {
  exec_id: string;
  max_descendants?: number;
}
export interface WireSession {
  host: string;
  session: string;
  agent: string;
  origin: string;
  backend: string;
  mode: string;
  policy: string;
  uid: number;
  root_exec_id: string;
  start?: PbTimestamp | null;
  end?: PbTimestamp | null;
  exit_code?: number | null;
  signal?: number | null;
  events: Int64;
  denials: Int64;
  would_deny: Int64;
  lost: Int64;
  path: string;
  argv: string[];
}
export interface WireSessionQuery {
  hosts?: string[];
  since?: PbTimestamp | null;
  with_denials?: boolean;
  session?: string;
  limit?: number;
}
export interface WireHost {
  host: string;
  first_seen?: PbTimestamp | null;
  last_seen?: PbTimestamp | null;
  last_seq: Int64;
  events: Int64;
  lost: Int64;
  rejected: Int64;
}
export interface WireProcessQuery {
  daddr?: string;
  dport?: number;
  path?: string;
  since?: PbTimestamp | null;
  until?: PbTimestamp | null;
  hosts?: string[];
  limit?: number;
}
export const RELATIONS = ['unspecified', 'ancestor', 'target', 'descendant'] as const;

// ---- service definitions ----

const identity = (b: Buffer): Buffer => b;
const encoder =
  (t: protobuf.Type) =>
  (msg: object): Buffer => {
    const u = t.encode(msg).finish();
    return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  };
const decoder =
  (t: protobuf.Type) =>
  (buf: Buffer): any =>
    t.decode(buf);

function method(name: string, requestStream: boolean, responseStream: boolean, req: protobuf.Type, res: protobuf.Type | 'raw', reqRaw: boolean) {
  return {
    path: `/bridle.v1.Collector/${name}`,
    requestStream,
    responseStream,
    requestSerialize: encoder(req),
    // The server decodes requests itself (so a malformed message gets a clear answer, not a broken call).
    requestDeserialize: reqRaw ? identity : decoder(req),
    responseSerialize: res === 'raw' ? identity : encoder(res),
    responseDeserialize: decoder(res === 'raw' ? pb.Event : res),
  };
}

/** What the server registers: requests arrive as bytes, events leave as stored bytes. */
export const collectorServerDefinition = {
  Ingest: method('Ingest', true, true, pb.IngestRequest, pb.IngestResponse, true),
  Subscribe: method('Subscribe', false, true, pb.SubscribeRequest, 'raw', true),
  QueryEvents: method('QueryEvents', false, true, pb.EventQuery, 'raw', true),
  Lineage: method('Lineage', false, false, pb.LineageRequest, LineageResponseRaw, true),
  ListSessions: method('ListSessions', false, false, pb.SessionQuery, pb.SessionList, true),
  ListHosts: method('ListHosts', false, false, pb.HostQuery, pb.HostList, true),
  FindProcesses: method('FindProcesses', false, false, pb.ProcessQuery, ProcessListRaw, true),
} satisfies grpc.ServiceDefinition;

/** What clients use: plain bridle.v1 messages both ways (the shipper encodes batches through pb.raw). */
export const collectorClientDefinition = {
  Ingest: { ...method('Ingest', true, true, pb.IngestRequest, pb.IngestResponse, false), requestSerialize: identity },
  Subscribe: method('Subscribe', false, true, pb.SubscribeRequest, pb.Event, false),
  QueryEvents: method('QueryEvents', false, true, pb.EventQuery, pb.Event, false),
  Lineage: method('Lineage', false, false, pb.LineageRequest, pb.LineageResponse, false),
  ListSessions: method('ListSessions', false, false, pb.SessionQuery, pb.SessionList, false),
  ListHosts: method('ListHosts', false, false, pb.HostQuery, pb.HostList, false),
  FindProcesses: method('FindProcesses', false, false, pb.ProcessQuery, pb.ProcessList, false),
} satisfies grpc.ServiceDefinition;

export const CollectorClient = grpc.makeGenericClientConstructor(collectorClientDefinition, 'Collector');

/** Encodes one IngestRequest{batch} from already-encoded events. */
export function encodeBatchRequest(firstSeq: number, lastSeq: number, events: Uint8Array[]): Buffer {
  const u = IngestRequestRaw.encode({ batch: { first_seq: firstSeq, last_seq: lastSeq, events } }).finish();
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
/** Field number of EventBatch.events, and of IngestRequest.batch. */
export const BATCH_EVENTS_FIELD = T('EventBatch').fields.events!.id;
const INGEST_BATCH_FIELD = T('IngestRequest').fields.batch!.id;
const BATCH_FIRST_FIELD = T('EventBatch').fields.first_seq!.id;
const BATCH_LAST_FIELD = T('EventBatch').fields.last_seq!.id;

/**
 * The bytes that go before `bodyLength` bytes of already-encoded `EventBatch.events` fields to make an
 * IngestRequest{batch}: the shipper encodes events straight into its batch buffer and adds this at the end.
 */
export function batchRequestPrefix(firstSeq: number, lastSeq: number, bodyLength: number): Buffer {
  const inner = new WireWriter(32);
  inner.uint(BATCH_FIRST_FIELD, firstSeq);
  inner.uint(BATCH_LAST_FIELD, lastSeq);
  const w = new WireWriter(48);
  w.tag(INGEST_BATCH_FIELD, 2);
  w.varint(inner.pos + bodyLength);
  w.ensure(inner.pos);
  inner.buf.copy(w.buf, w.pos, 0, inner.pos);
  w.pos += inner.pos;
  return Buffer.from(w.buf.subarray(0, w.pos));
}

export function encodeHelloRequest(hello: WireHello): Buffer {
  const u = pb.IngestRequest.encode({ hello }).finish();
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
export function decodeIngestRequest(buf: Buffer): WireIngestRequestRaw {
  return IngestRequestRaw.decode(buf) as unknown as WireIngestRequestRaw;
}

/** Limits the collector enforces (and tells the agent in Welcome). */
export const LIMITS = {
  /** One batch (IngestRequest) at most; larger ones are refused whole and acknowledged as rejected. */
  maxBatchBytes: 8 * 1024 * 1024,
  /** One event at most. */
  maxEventBytes: 256 * 1024,
  /** Transport limit: above this grpc-js ends the call (RESOURCE_EXHAUSTED) and the agent reconnects. */
  maxMessageBytes: 64 * 1024 * 1024,
};
