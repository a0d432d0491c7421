// One MCP client↔server conversation through the proxy, independent of the transport. The transport hands
// every client message to fromClient (which says what to forward and what to answer) and every server
// message to fromServer (which says what to pass on). Tool lists are filtered here, tool calls decided
// (engine.ts), definitions pinned (pins.ts), and tool_call events emitted to the EventSink.
//
// Fail closed: anything the proxy cannot parse or does not know (batches, unknown methods, malformed
// messages, oversized messages, tool names it has not seen listed) is refused with a clear JSON-RPC
// error or tool error, and never forwarded. Nothing here throws to the transport.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { EventSink, ToolCallEvent, Verdict, ViolationEvent } from '../events/types.js';
import type { Policy } from '../policy/types.js';
import { credentialPaths, homeDirs } from '../policy/compile.js';
import { compileServer, decide, decideResource, redactArgs, visible, visibleResource, type CompiledServer, type Decision, type ToolDef } from './engine.js';
import {
  CLIENT_NOTIFICATIONS, CLIENT_REQUESTS, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR,
  errorResponse, isId, isObject, type Id, type JsonRpcMessage,
} from './jsonrpc.js';
import type { PinStore } from './pins.js';
import { loadSqlParser } from './sql.js';

/** Who the proxy is, for events. The agent wires the kernel's session and exec id here. */
export interface Identity {
  session: string;
  exec_id: string;
  pid: number;
}

/** The pino methods the proxy uses (a pino logger fits). */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

export interface GovernorOptions {
  policy: Policy;
  /** The server's name in policy.mcp.servers. */
  server: string;
  sink: EventSink;
  identity?: Partial<Identity>;
  /** Pin store for this server; without one, definitions are not pinned. */
  pins?: PinStore;
  log?: Logger;
  /** How long the proxy waits for its own tools/list to the server (ms). */
  listTimeoutMs?: number;
}

/** Per-proxy state shared by all sessions (HTTP has one session per Mcp-Session-Id). */
export class Governor {
  readonly compiled: CompiledServer;
  readonly maxMessageBytes: number;
  readonly log: Logger;
  readonly listTimeoutMs: number;
  /** Tools whose definition differs from its pin: name → what changed. */
  readonly changed = new Map<string, string>();
  /** Resolves when what decisions need is loaded (the SQL parser, when a rule uses sql:). */
  readonly ready: Promise<void>;
  private readonly base: Omit<ToolCallEvent, 'type' | 'ts' | 'server' | 'tool'>;

  constructor(readonly opts: GovernorOptions) {
    const sp = opts.policy.mcp.servers[opts.server];
    if (!sp) {
      const known = Object.keys(opts.policy.mcp.servers);
      throw new Error(`server '${opts.server}' is not in the policy's mcp.servers (${known.length ? `known: ${known.join(', ')}` : 'the policy names no MCP server'})`);
    }
    // a file: resource beneath a credential file or directory is denied like an open of it in a session
    const homes = homeDirs();
    const creds = opts.policy.credentials.files.deny.flatMap((p, i) => credentialPaths(p, homes).map((path) => ({ id: `credentials.files.deny[${i}]`, path })));
    this.compiled = compileServer(sp, opts.policy.mode, opts.policy.mcp.redact, creds);
    // Until the parser is loaded, sql: read-only denies; calls wait for it instead.
    this.ready = sp.rules.some((r) => r.sql) ? loadSqlParser().catch((err: Error) => this.log.error({ err: err.message }, 'cannot load the SQL parser; sql: rules will deny')) : Promise.resolve();
    this.maxMessageBytes = opts.policy.mcp.maxMessageBytes;
    this.log = opts.log ?? silentLogger;
    this.listTimeoutMs = opts.listTimeoutMs ?? 10_000;
    const id = opts.identity ?? {};
    this.base = {
      host: hostname(),
      session: id.session ?? '',
      exec_id: id.exec_id ?? '',
      parent_exec_id: '',
      pid: id.pid ?? process.pid,
      ppid: process.ppid,
      uid: process.getuid?.() ?? -1,
      policy: opts.policy.name,
    };
  }

  get server(): string {
    return this.opts.server;
  }

  emitToolCall(tool: string, args: unknown, verdict: Verdict, rule: string, reason: string, extra: { latency_ms?: number; is_error?: boolean } = {}): void {
    const ev: ToolCallEvent = {
      type: 'tool_call',
      ts: new Date().toISOString(),
      ...this.base,
      verdict,
      rule,
      server: this.server,
      tool,
      arguments: redactArgs(this.compiled, args),
      reason,
      ...extra,
    };
    this.emit(ev);
  }

  emitViolation(what: string, detail: string): void {
    const ev: ViolationEvent = { type: 'violation', ts: new Date().toISOString(), ...this.base, what, detail };
    this.emit(ev);
  }

  private emit(ev: ToolCallEvent | ViolationEvent): void {
    try {
      this.opts.sink.emit(ev);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'event sink failed');
    }
  }

  /** Records a listing against the pins; returns nothing, updates `changed` and reports new changes. */
  observePins(defs: ToolDef[]): void {
    const pins = this.opts.pins;
    if (!pins || this.compiled.policy.pin === 'off') return;
    let obs;
    try {
      obs = pins.observe(defs);
    } catch (err) {
      // nothing could be compared: every tool of the listing counts as changed (fail closed)
      this.log.error({ err: (err as Error).message, store: pins.path }, 'could not check MCP tool pins');
      for (const d of defs) if (typeof d?.name === 'string') this.changed.set(d.name, `pins could not be checked: ${(err as Error).message}`);
      return;
    }
    if (obs.saveError) this.log.error({ err: obs.saveError.message, store: pins.path }, 'could not save MCP tool pins');
    for (const d of defs) if (typeof d.name === 'string' && !obs.changed.some((c) => c.tool === d.name)) this.changed.delete(d.name);
    for (const c of obs.changed) this.changed.set(c.tool, `${c.fields.join(', ')} changed; pinned ${c.pinned.first_seen}`);
    for (const c of obs.fresh) {
      const blocked = this.compiled.policy.pin === 'block';
      const detail = `MCP server '${this.server}': tool '${c.tool}' changed since pinned at ${c.pinned.first_seen} (${c.fields.join(', ')}); sha256 ${c.pinned.sha256.slice(0, 12)} → ${c.current.sha256.slice(0, 12)}; ${blocked ? 'blocked' : 'reported only (pin: report)'}`;
      this.log.warn({ server: this.server, tool: c.tool, fields: c.fields, blocked, store: pins.path }, 'MCP tool definition changed since pinned');
      this.emitViolation('mcp_tool_changed', detail);
    }
    for (const c of obs.repinned) this.log.info({ server: this.server, tool: c.tool, fields: c.fields }, 'MCP tool re-pinned');
    if (obs.added.length) this.log.debug({ server: this.server, tools: obs.added }, 'MCP tools pinned');
  }
}

/** What the transport does with one client message. Strings are single JSON texts (no newline). */
export interface ClientOutcome {
  /** Send this to the server. */
  forward?: string;
  /** Send these back to the client. */
  replies: string[];
}

interface PendingCall {
  kind: 'call';
  tool: string;
  args: unknown;
  t0: number;
  decision: Decision;
  /** The client cancelled it; the server may still answer, and what it answers is logged. */
  cancelled?: boolean;
}
interface PendingList {
  kind: 'list';
  firstPage: boolean;
}
/** Any other request forwarded: its answer is passed on, and only an answer to a request is. */
interface PendingOther {
  kind: 'other';
}
/** A tools/call being decided: its id is taken before anything is awaited. */
interface PendingDeciding {
  kind: 'deciding';
}
/** resources/read or resources/subscribe, allowed (or would_deny): logged with the server's answer. */
interface PendingResource {
  kind: 'resource';
  method: string;
  uri: string;
  t0: number;
  decision: Decision;
}
/** resources/list: the answer shows only the resources the policy lets the client read. */
interface PendingResourceList {
  kind: 'resource_list';
}

const now = (): number => performance.now();
const ms = (t0: number): number => Math.round((now() - t0) * 1000) / 1000;
const keyOf = (id: Id): string => (typeof id === 'number' ? `n${id}` : `s${id}`);

export class McpSession {
  private tools: Map<string, ToolDef> | undefined;
  private stale = false;
  private lastRefresh = 0;
  private refreshing: Promise<void> | undefined;
  private readonly pending = new Map<string, PendingCall | PendingList | PendingOther | PendingDeciding | PendingResource | PendingResourceList>();
  private readonly own = new Map<string, { resolve(m: JsonRpcMessage): void; timer: NodeJS.Timeout }>();
  private seq = 0;
  private readonly ownPrefix = `bridle-${randomBytes(6).toString('hex')}-`;
  private closed = false;

  /** sendToServer carries the proxy's own requests (tools/list) to the server; answers come via fromServer. */
  constructor(
    readonly gov: Governor,
    private readonly sendToServer: (json: string) => void | Promise<void>,
  ) {}

  // ---- client → server ------------------------------------------------------------------------

  /** A message that exceeded the size limit (its bytes were not kept). */
  oversized(bytes: number): ClientOutcome {
    const msg = `bridle: message of ${bytes} bytes exceeds the limit of ${this.gov.maxMessageBytes} bytes (mcp.max_message_bytes); not forwarded`;
    this.gov.log.warn({ bytes, limit: this.gov.maxMessageBytes }, 'oversized MCP message refused');
    this.gov.emitViolation('mcp_protocol', `MCP server '${this.gov.server}': ${msg}`);
    return { replies: [JSON.stringify(errorResponse(null, INVALID_REQUEST, msg, { rule: 'mcp.protocol.oversized' }))] };
  }

  async fromClient(text: string): Promise<ClientOutcome> {
    try {
      return await this.fromClientInner(text);
    } catch (err) {
      this.gov.log.error({ err: (err as Error).stack }, 'internal error handling a client message');
      return { replies: [JSON.stringify(errorResponse(null, INTERNAL_ERROR, `bridle: internal error; message not forwarded: ${(err as Error).message}`, { rule: 'mcp.error' }))] };
    }
  }

  private refuse(id: Id | null, code: number, rule: string, message: string): ClientOutcome {
    this.gov.log.warn({ rule, id }, message);
    this.gov.emitViolation('mcp_protocol', `MCP server '${this.gov.server}': ${message}`);
    return { replies: [JSON.stringify(errorResponse(id, code, `bridle: ${message}`, { rule }))] };
  }

  private async fromClientInner(text: string): Promise<ClientOutcome> {
    if (Buffer.byteLength(text) > this.gov.maxMessageBytes) return this.oversized(Buffer.byteLength(text));
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return this.refuse(null, PARSE_ERROR, 'mcp.protocol.parse', `malformed JSON (${(err as Error).message}); not forwarded`);
    }
    if (Array.isArray(msg)) return this.batch(msg);
    if (!isObject(msg)) return this.refuse(null, INVALID_REQUEST, 'mcp.protocol.invalid', 'a JSON-RPC message must be an object; not forwarded');
    const id = isId(msg.id) ? msg.id : null;
    if (msg.jsonrpc !== '2.0') return this.refuse(id, INVALID_REQUEST, 'mcp.protocol.invalid', `"jsonrpc" must be "2.0"; not forwarded`);
    if ('params' in msg && msg.params !== undefined && !isObject(msg.params)) {
      return this.refuse(id, INVALID_REQUEST, 'mcp.protocol.invalid', '"params" must be an object; not forwarded');
    }

    // A response from the client to a server-initiated request (sampling, elicitation, roots).
    if (!('method' in msg)) {
      const ok = isId(msg.id) && ('result' in msg) !== ('error' in msg);
      if (!ok) return this.refuse(null, INVALID_REQUEST, 'mcp.protocol.invalid', 'a message without "method" must be a response with an id and exactly one of result, error; not forwarded');
      return { forward: JSON.stringify(msg), replies: [] };
    }
    if (typeof msg.method !== 'string') return this.refuse(id, INVALID_REQUEST, 'mcp.protocol.invalid', '"method" must be a string; not forwarded');
    if ('result' in msg || 'error' in msg) return this.refuse(id, INVALID_REQUEST, 'mcp.protocol.invalid', 'a message cannot carry both "method" and "result"/"error"; not forwarded');
    const method = msg.method;
    const params = (msg.params ?? {}) as Record<string, unknown>;

    // Notifications.
    if (!('id' in msg)) {
      if (method === 'tools/call') {
        this.gov.emitToolCall(String(params.name ?? ''), params.arguments, 'deny', 'mcp.protocol.invalid', 'tools/call sent as a notification (no id)');
        return this.refuse(null, INVALID_REQUEST, 'mcp.protocol.invalid', 'tools/call must be a request with an id; this notification was dropped');
      }
      if (!CLIENT_NOTIFICATIONS.has(method)) {
        this.gov.log.warn({ method }, 'unknown MCP notification dropped');
        this.gov.emitViolation('mcp_protocol', `MCP server '${this.gov.server}': unknown notification '${method}' dropped`);
        return { replies: [] };
      }
      if (method === 'notifications/cancelled' && isId(params.requestId)) this.cancelled(params.requestId);
      return { forward: JSON.stringify(msg), replies: [] };
    }

    // Requests.
    if (!isId(msg.id)) return this.refuse(null, INVALID_REQUEST, 'mcp.protocol.invalid', 'a request id must be a string or a number; not forwarded');
    const rid = msg.id;
    const key = keyOf(rid);
    if (this.pending.has(key) || this.own.has(key)) {
      return this.refuse(rid, INVALID_REQUEST, 'mcp.protocol.duplicate_id', `request id ${JSON.stringify(rid)} is already in use by an unanswered request; not forwarded`);
    }
    if (!CLIENT_REQUESTS.has(method)) {
      const lower = method.toLowerCase();
      const near = [...CLIENT_REQUESTS].find((m) => m.toLowerCase() === lower);
      if (typeof params.name === 'string' || near === 'tools/call') {
        this.gov.emitToolCall(String(params.name ?? ''), params.arguments, 'deny', 'mcp.protocol.unknown_method', `unknown method '${method}'`);
      }
      const hint = near ? ` (methods are case-sensitive: did you mean '${near}'?)` : '';
      return this.refuse(rid, METHOD_NOT_FOUND, 'mcp.protocol.unknown_method', `method '${method}' is not a known MCP method${hint}; denied`);
    }
    if (method === 'tools/list') {
      this.pending.set(key, { kind: 'list', firstPage: params.cursor === undefined });
      return { forward: JSON.stringify(msg), replies: [] };
    }
    if (method === 'tools/call') return this.toolCall(msg as unknown as JsonRpcMessage & { id: Id }, params);
    if (method === 'resources/read' || method === 'resources/subscribe') return this.resourceRequest(rid, method, params, msg);
    if (method === 'resources/list') {
      this.pending.set(key, { kind: 'resource_list' });
      return { forward: JSON.stringify(msg), replies: [] };
    }
    this.pending.set(key, { kind: 'other' });
    return { forward: JSON.stringify(msg), replies: [] };
  }

  private batch(items: unknown[]): ClientOutcome {
    const ids: Id[] = [];
    for (const it of items) {
      if (!isObject(it)) continue;
      if (isId(it.id) && typeof it.method === 'string') ids.push(it.id);
      if (it.method === 'tools/call') {
        const p = isObject(it.params) ? it.params : {};
        this.gov.emitToolCall(String(p.name ?? ''), p.arguments, 'deny', 'mcp.protocol.batch', 'JSON-RPC batch refused');
      }
    }
    const message = 'JSON-RPC batches are not accepted (MCP removed batching in 2025-06-18); send one message at a time. Nothing in this batch was forwarded';
    this.gov.log.warn({ size: items.length }, 'JSON-RPC batch refused');
    this.gov.emitViolation('mcp_protocol', `MCP server '${this.gov.server}': batch of ${items.length} refused`);
    const data = { rule: 'mcp.protocol.batch' };
    if (ids.length === 0) return { replies: [JSON.stringify(errorResponse(null, INVALID_REQUEST, `bridle: ${message}`, data))] };
    return { replies: ids.map((id) => JSON.stringify(errorResponse(id, INVALID_REQUEST, `bridle: ${message}`, data))) };
  }

  private async toolCall(msg: JsonRpcMessage & { id: Id }, params: Record<string, unknown>): Promise<ClientOutcome> {
    const t0 = now();
    const name = params.name;
    if (typeof name !== 'string' || name === '') {
      this.gov.emitToolCall(String(name ?? ''), params.arguments, 'deny', 'mcp.protocol.invalid', 'params.name must be a non-empty string');
      return this.refuse(msg.id, INVALID_PARAMS, 'mcp.protocol.invalid', 'tools/call needs params.name, a non-empty string; not forwarded');
    }
    let decision: Decision;
    // the id is taken now: another request with it while this one waits is refused as a duplicate
    const key = keyOf(msg.id);
    this.pending.set(key, { kind: 'deciding' });
    await this.gov.ready;
    const listErr = await this.ensureTools(name);
    if (listErr) {
      const verdict = this.gov.compiled.mode === 'monitor' ? 'would_deny' : 'deny';
      decision = { verdict, rule: 'mcp.error', reason: `could not list the server's tools to check this call: ${listErr}` };
    } else {
      decision = decide(this.gov.compiled, { tool: name, args: params.arguments, tools: this.tools!, changed: this.gov.changed });
    }
    if (decision.verdict === 'deny') {
      this.pending.delete(key);
      this.gov.emitToolCall(name, params.arguments, 'deny', decision.rule, decision.reason, { latency_ms: ms(t0), is_error: true });
      this.gov.log.info({ tool: name, rule: decision.rule, reason: decision.reason }, 'MCP tool call denied');
      return { replies: [JSON.stringify(deniedResult(msg.id, this.gov.server, name, decision))] };
    }
    if (decision.verdict === 'would_deny') this.gov.log.warn({ tool: name, rule: decision.rule, reason: decision.reason }, 'MCP tool call would be denied (monitor mode)');
    this.pending.set(key, { kind: 'call', tool: name, args: params.arguments, t0, decision });
    return { forward: JSON.stringify(msg), replies: [] };
  }

  /**
   * Reading or subscribing to a resource: decided by its URI (decideResource) and logged as a tool_call
   * event whose tool is the method and whose arguments are the params. A denied one is answered with an
   * error naming the rule and never reaches the server.
   */
  private resourceRequest(id: Id, method: string, params: Record<string, unknown>, msg: Record<string, unknown>): ClientOutcome {
    const t0 = now();
    const d = decideResource(this.gov.compiled, params.uri);
    const uri = typeof params.uri === 'string' ? params.uri : String(params.uri ?? '');
    if (d.verdict === 'deny') {
      this.gov.emitToolCall(method, { uri: params.uri }, 'deny', d.rule, d.reason, { latency_ms: ms(t0), is_error: true });
      this.gov.log.info({ method, uri, rule: d.rule, reason: d.reason }, 'MCP resource request denied');
      const text = `bridle denied ${method} of '${uri}' on MCP server '${this.gov.server}'. Rule: ${d.rule}. Reason: ${d.reason}. The request was not sent to the server.`;
      return { replies: [JSON.stringify(errorResponse(id, INVALID_PARAMS, text, { rule: d.rule, reason: d.reason, verdict: d.verdict }))] };
    }
    if (d.verdict === 'would_deny') this.gov.log.warn({ method, uri, rule: d.rule, reason: d.reason }, 'MCP resource request would be denied (monitor mode)');
    this.pending.set(keyOf(id), { kind: 'resource', method, uri, t0, decision: d });
    return { forward: JSON.stringify(msg), replies: [] };
  }

  /** The call stays pending: a server may finish it anyway, and its answer is what gets logged. */
  private cancelled(requestId: Id): void {
    const p = this.pending.get(keyOf(requestId));
    if (p?.kind === 'call') p.cancelled = true;
  }

  /** Makes sure the tool list is known and current enough to judge a call to `name`. Returns an error text. */
  private async ensureTools(name: string): Promise<string | undefined> {
    const need = !this.tools || this.stale || (!this.tools.has(name) && now() - this.lastRefresh > 250);
    if (!need) return undefined;
    try {
      this.refreshing ??= this.refreshTools().finally(() => {
        this.refreshing = undefined;
      });
      await this.refreshing;
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  }

  private async refreshTools(): Promise<void> {
    const all: ToolDef[] = [];
    let cursor: unknown;
    for (let page = 0; page < 100; page++) {
      const res = await this.request('tools/list', cursor === undefined ? {} : { cursor });
      if (res.error) throw new Error(`the server answered tools/list with error ${res.error.code}: ${res.error.message}`);
      const r = res.result as { tools?: unknown; nextCursor?: unknown } | undefined;
      if (!r || !Array.isArray(r.tools)) throw new Error('the server answered tools/list without a tools array');
      all.push(...(r.tools.filter(validTool)));
      cursor = r.nextCursor;
      if (typeof cursor !== 'string' || cursor === '') break;
    }
    this.ingest(all, true);
  }

  /** Sends the proxy's own request to the server; resolves with its response. */
  private request(method: string, params: object): Promise<JsonRpcMessage> {
    if (this.closed) return Promise.reject(new Error('the session is closed'));
    const id = `${this.ownPrefix}${++this.seq}`;
    const key = keyOf(id);
    return new Promise<JsonRpcMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.own.delete(key);
        reject(new Error(`no answer to ${method} within ${this.gov.listTimeoutMs} ms`));
      }, this.gov.listTimeoutMs);
      this.own.set(key, { resolve, timer });
      Promise.resolve()
        .then(() => this.sendToServer(JSON.stringify({ jsonrpc: '2.0', id, method, params })))
        .catch((err: Error) => {
          clearTimeout(timer);
          this.own.delete(key);
          reject(new Error(`could not send ${method} to the server: ${err.message}`));
        });
    });
  }

  private ingest(defs: ToolDef[], replace: boolean): void {
    this.gov.observePins(defs);
    if (replace || !this.tools) this.tools = new Map();
    for (const d of defs) this.tools.set(d.name, d);
    this.stale = false;
    this.lastRefresh = now();
  }

  // ---- server → client ------------------------------------------------------------------------

  /** Returns the text to pass to the client, or null to drop the message. */
  fromServer(text: string): string | null {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.gov.log.warn({ bytes: text.length }, 'server sent a message that is not JSON; dropped');
      return null;
    }
    if (!isObject(msg)) {
      this.gov.log.warn({}, 'server sent a JSON-RPC batch or a non-object; dropped');
      return null;
    }
    try {
      return this.fromServerInner(text, msg);
    } catch (err) {
      this.gov.log.error({ err: (err as Error).stack }, 'internal error handling a server message; dropped');
      return null;
    }
  }

  private fromServerInner(text: string, msg: Record<string, unknown>): string | null {
    if (typeof msg.method === 'string') {
      if (msg.method === 'notifications/tools/list_changed') this.stale = true;
      return text;
    }
    if (!isId(msg.id)) return text;
    const key = keyOf(msg.id);
    const own = this.own.get(key);
    if (own) {
      clearTimeout(own.timer);
      this.own.delete(key);
      own.resolve(msg as unknown as JsonRpcMessage);
      return null;
    }
    const p = this.pending.get(key);
    if (!p || p.kind === 'deciding') {
      // No request of the client's has this id (of this type: "6" is not 6): a client that matched it
      // loosely would take it for an answer the proxy never saw, unchecked and unlogged.
      this.gov.log.warn({ id: msg.id }, 'server answered no pending request (id unknown, or of another type); dropped');
      this.gov.emitViolation('mcp_protocol', `MCP server '${this.gov.server}': an answer with id ${JSON.stringify(msg.id)} matched no request; dropped`);
      return null;
    }
    this.pending.delete(key);
    if (p.kind === 'other') return text;
    if (p.kind === 'resource') {
      this.gov.emitToolCall(p.method, { uri: p.uri }, p.decision.verdict, p.decision.rule, p.decision.reason, { latency_ms: ms(p.t0), is_error: 'error' in msg });
      return text;
    }
    if (p.kind === 'resource_list') {
      const result = msg.result;
      if (!isObject(result) || !Array.isArray(result.resources)) return text;
      const shown = result.resources.filter((r) => isObject(r) && visibleResource(this.gov.compiled, r.uri));
      if (shown.length === result.resources.length) return JSON.stringify(msg);
      this.gov.log.debug({ hidden: result.resources.length - shown.length }, 'resources hidden by policy');
      return JSON.stringify({ ...msg, result: { ...result, resources: shown } });
    }
    if (p.kind === 'call') {
      const result = msg.result as { isError?: unknown } | undefined;
      const isError = 'error' in msg || result?.isError === true;
      const reason = p.cancelled ? `${p.decision.reason}; cancelled by the client` : p.decision.reason;
      this.gov.emitToolCall(p.tool, p.args, p.decision.verdict, p.decision.rule, reason, { latency_ms: ms(p.t0), is_error: isError });
      return text;
    }
    // tools/list answer: remember the tools, pin them, show only what the policy allows.
    const result = msg.result;
    if (!isObject(result) || !Array.isArray(result.tools)) return text;
    const defs = result.tools as unknown[];
    const good = defs.filter(validTool);
    this.ingest(good, p.firstPage && (result.nextCursor === undefined || result.nextCursor === null));
    // The client gets the listing as the proxy read it, written anew: the server's own bytes could say
    // something else to a parser that keeps the first of two duplicate keys.
    const shown = good.filter((t) => visible(this.gov.compiled, t.name, this.gov.changed));
    if (shown.length === defs.length) return JSON.stringify(msg);
    this.gov.log.debug({ hidden: good.filter((t) => !shown.includes(t)).map((t) => t.name) }, 'tools hidden by policy');
    return JSON.stringify({ ...msg, result: { ...result, tools: shown } });
  }

  /** Ends the session: calls still waiting for an answer are logged as unanswered. */
  close(reason = 'the session ended'): void {
    if (this.closed) return;
    this.closed = true;
    for (const [key, p] of this.pending) {
      if (p.kind === 'call') {
        this.gov.emitToolCall(p.tool, p.args, p.decision.verdict, p.decision.rule, `${p.decision.reason}; no answer: ${reason}`, { latency_ms: ms(p.t0), is_error: true });
      } else if (p.kind === 'resource') {
        this.gov.emitToolCall(p.method, { uri: p.uri }, p.decision.verdict, p.decision.rule, `${p.decision.reason}; no answer: ${reason}`, { latency_ms: ms(p.t0), is_error: true });
      }
      this.pending.delete(key);
    }
    for (const [key, o] of this.own) {
      clearTimeout(o.timer);
      this.own.delete(key);
      o.resolve({ jsonrpc: '2.0', id: null, error: { code: INTERNAL_ERROR, message: reason } });
    }
  }
}

function validTool(t: unknown): t is ToolDef {
  return isObject(t) && typeof t.name === 'string' && t.name !== '';
}

/** The answer to a denied call: a tool error the model can read (and act on), plus the decision in _meta. */
export function deniedResult(id: Id, server: string, tool: string, d: Decision): JsonRpcMessage {
  const text =
    `bridle denied this call to tool '${tool}' on MCP server '${server}'. Rule: ${d.rule}. Reason: ${d.reason}. ` +
    'The call was not sent to the server. Do not retry it in another form; use an allowed tool or ask the user.';
  return {
    jsonrpc: '2.0',
    id,
    result: { content: [{ type: 'text', text }], isError: true, _meta: { 'bridle/decision': { verdict: d.verdict, rule: d.rule, reason: d.reason } } },
  };
}
