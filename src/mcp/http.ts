// The Streamable HTTP proxy: listens where the agent's MCP config points (http://127.0.0.1:PORT/<path>)
// and forwards to the real server's URL. POST bodies (client messages) go through the session before
// they are forwarded; the server's answers, JSON or SSE streams, go through it on the way back. GET (the
// server's SSE stream) and DELETE (session end) are forwarded. One McpSession per Mcp-Session-Id.
//
// The listener refuses requests whose Host or Origin is not this loopback address (DNS rebinding).
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { StringDecoder } from 'node:string_decoder';
import { errorResponse, INTERNAL_ERROR, isId, isObject } from './jsonrpc.js';
import { Governor, McpSession, type GovernorOptions } from './session.js';

export interface HttpProxyOptions extends GovernorOptions {
  /** Where to listen; port 0 picks a free port. Loopback addresses are strongly advised. */
  listen: { host: string; port: number };
  /** The server's Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp. */
  upstream: string;
}

export interface HttpProxy {
  /** The URL to give the agent (same path as the upstream endpoint). */
  url: string;
  port: number;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length']);

/** Headers passed from the client to the server. */
function forwardHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

/** The media type of a Content-Type header, lower-cased, without parameters ('' when none). */
function mediaType(v: string | string[] | undefined): string {
  return String(Array.isArray(v) ? v[0] : v ?? '').split(';')[0]!.trim().toLowerCase();
}

/** Headers passed from the server back to the client. */
function backHeaders(h: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

const isLoopbackName = (h: string): boolean => h === 'localhost' || h === '127.0.0.1' || h === '[::1]' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);

/** Incremental text/event-stream parser: yields whole events as their raw lines. */
class SseSplitter {
  private buf = '';
  private lines: string[] = [];
  constructor(private readonly onEvent: (lines: string[]) => void) {}
  push(text: string): void {
    this.buf += text;
    let m: RegExpExecArray | null;
    const re = /\r\n|\r|\n/g;
    let last = 0;
    while ((m = re.exec(this.buf))) {
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(last, m.index);
      last = m.index + m[0].length;
      if (line === '') {
        if (this.lines.length) this.onEvent(this.lines);
        this.lines = [];
      } else this.lines.push(line);
    }
    this.buf = this.buf.slice(last);
  }
  end(): void {
    if (this.buf) this.lines.push(this.buf);
    this.buf = '';
    if (this.lines.length) this.onEvent(this.lines);
    this.lines = [];
  }
}

/** Runs each event's data through `filter`; unchanged events are written as they came. */
function rewriteEvent(lines: string[], filter: (data: string) => string | null): string | null {
  const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
  if (data.length === 0) return `${lines.join('\n')}\n\n`;
  const text = data.join('\n');
  const out = filter(text);
  if (out === null) return null;
  if (out === text) return `${lines.join('\n')}\n\n`;
  const rest = lines.filter((l) => !l.startsWith('data:'));
  return `${[...rest, `data: ${out}`].join('\n')}\n\n`;
}

export async function startHttpProxy(opts: HttpProxyOptions): Promise<HttpProxy> {
  const gov = new Governor(opts);
  const log = gov.log;
  const upstream = new URL(opts.upstream);
  if (upstream.protocol !== 'http:' && upstream.protocol !== 'https:') throw new Error(`--upstream must be an http or https URL, not ${opts.upstream}`);
  const mod = upstream.protocol === 'https:' ? https : http;
  const agent = new mod.Agent({ keepAlive: true });
  const path = upstream.pathname || '/';

  interface Sess {
    session: McpSession;
    /** Headers of the client's last request, reused for the proxy's own requests. */
    headers: Record<string, string | string[]>;
  }
  const sessions = new Map<string, Sess>();

  /** Bounded: sessions a client never ended (no DELETE) are dropped oldest first. */
  const MAX_SESSIONS = 10_000;
  const remember = (sid: string, s: Sess): void => {
    sessions.set(sid, s);
    if (sessions.size > MAX_SESSIONS) {
      const [oldest, old] = sessions.entries().next().value!;
      sessions.delete(oldest);
      old.session.close('too many sessions; the oldest was dropped');
    }
  };

  const newSess = (): Sess => {
    const s: Sess = { session: undefined as unknown as McpSession, headers: {} };
    s.session = new McpSession(gov, (json) => ownRequest(s, json));
    return s;
  };

  /** The proxy's own request (tools/list): POST it and feed every answer to the session. */
  const ownRequest = (s: Sess, json: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      const headers: Record<string, string | string[]> = { ...s.headers };
      delete headers['last-event-id'];
      headers['content-type'] = 'application/json';
      headers.accept = 'application/json, text/event-stream';
      const req = mod.request(upstream, { method: 'POST', agent, headers: { ...headers, 'content-length': String(Buffer.byteLength(json)) } }, (res) => {
        const ct = mediaType(res.headers['content-type']);
        res.setEncoding('utf8');
        if (ct === 'text/event-stream') {
          const sse = new SseSplitter((lines) => void rewriteEvent(lines, (d) => s.session.fromServer(d)));
          res.on('data', (t: string) => sse.push(t));
          res.on('end', () => sse.end());
        } else {
          let body = '';
          res.on('data', (t: string) => (body += t));
          res.on('end', () => {
            if (ct === 'application/json') s.session.fromServer(body);
          });
        }
        res.on('error', () => undefined);
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`the server answered HTTP ${res.statusCode}`));
        else resolve();
      });
      req.on('error', reject);
      req.end(json);
    });

  const sessionFor = (req: IncomingMessage, isInitialize: boolean): { s: Sess; register: boolean } => {
    const sid = req.headers['mcp-session-id'];
    const key = typeof sid === 'string' ? sid : '';
    if (!isInitialize) {
      const found = sessions.get(key);
      if (found) return { s: found, register: false };
    }
    return { s: newSess(), register: true };
  };

  const reply = (res: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // DNS-rebinding guard: only loopback names may address a loopback listener.
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    if (isLoopbackName(opts.listen.host) && !isLoopbackName(host)) {
      reply(res, 403, errorResponse(null, -32000, `bridle: Host '${req.headers.host}' refused (only loopback names may reach this proxy)`));
      return;
    }
    const origin = req.headers.origin;
    if (origin) {
      let oh = '';
      try {
        oh = new URL(origin).hostname;
      } catch {
        /* refused below */
      }
      if (!isLoopbackName(oh)) {
        reply(res, 403, errorResponse(null, -32000, `bridle: Origin '${origin}' refused`));
        return;
      }
    }
    const reqPath = (req.url ?? '/').split('?')[0];
    if (reqPath !== path) {
      reply(res, 404, errorResponse(null, -32000, `bridle: the MCP endpoint of this proxy is ${path}`));
      return;
    }
    if (req.method === 'POST') return post(req, res);
    if (req.method === 'GET' || req.method === 'DELETE') return passThrough(req, res);
    res.writeHead(405, { allow: 'GET, POST, DELETE' }).end();
  };

  const post = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // Read the body, refusing past the limit without buffering it.
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    for await (const c of req as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > gov.maxMessageBytes) over = true;
      else chunks.push(c);
    }
    const sidHeader = req.headers['mcp-session-id'];
    if (over) {
      const s = sessions.get(typeof sidHeader === 'string' ? sidHeader : '') ?? newSess();
      const out = s.session.oversized(size);
      reply(res, 413, JSON.parse(out.replies[0]!));
      return;
    }
    const body = Buffer.concat(chunks, size).toString('utf8');
    let isInit = false;
    let reqId: unknown;
    try {
      const peek = JSON.parse(body) as unknown;
      if (isObject(peek)) {
        isInit = peek.method === 'initialize';
        reqId = 'method' in peek ? peek.id : undefined;
      }
    } catch {
      /* the session refuses it */
    }
    const { s, register } = sessionFor(req, isInit);
    s.headers = forwardHeaders(req.headers);
    const out = await s.session.fromClient(body);
    if (out.forward === undefined) {
      if (out.replies.length === 0) {
        res.writeHead(202).end();
        return;
      }
      // Refusals of a request with an id are JSON-RPC answers (200); of an unidentifiable message, 400.
      const parsed = out.replies.map((r) => JSON.parse(r) as { id?: unknown; error?: unknown });
      const status = parsed.length === 1 && parsed[0]!.error !== undefined && !isId(parsed[0]!.id) ? 400 : 200;
      reply(res, status, parsed.length === 1 ? parsed[0] : parsed);
      return;
    }
    const headers = { ...s.headers, 'content-length': String(Buffer.byteLength(out.forward)) };
    const up = mod.request(upstream, { method: 'POST', agent, headers }, (ures) => {
      const sid = ures.headers['mcp-session-id'] ?? sidHeader;
      if (register && (ures.statusCode ?? 500) < 400) {
        // A server without session ids (stateless) gets one shared session, keyed ''.
        if (typeof sid === 'string') remember(sid, s);
        else if (isInit && !sessions.has('')) remember('', s);
      }
      relay(ures, res, s.session, isId(reqId) ? reqId : undefined);
    });
    up.on('error', (err) => upstreamFailed(res, s.session, isId(reqId) ? reqId : undefined, err));
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    up.end(out.forward);
  };

  const upstreamFailed = (res: ServerResponse, session: McpSession, id: string | number | undefined, err: Error): void => {
    log.error({ upstream: upstream.href, err: err.message }, 'MCP upstream request failed');
    const msg = errorResponse(id ?? null, INTERNAL_ERROR, `bridle: the MCP server at ${upstream.origin} could not be reached: ${err.message}`);
    if (id !== undefined) session.fromServer(JSON.stringify(msg)); // closes the pending call with is_error
    if (!res.headersSent) reply(res, 502, msg);
    else res.destroy();
  };

  /** Passes the server's answer back through the session (JSON body or SSE stream). */
  const relay = (ures: IncomingMessage, res: ServerResponse, session: McpSession, id: string | number | undefined): void => {
    const status = ures.statusCode ?? 502;
    const ct = mediaType(ures.headers['content-type']);
    const headers = backHeaders(ures.headers);
    if (status >= 400 && id !== undefined) {
      // The call never ran (or failed in transport): close it in the session so it is logged.
      session.fromServer(JSON.stringify(errorResponse(id, INTERNAL_ERROR, `HTTP ${status} from the server`)));
    }
    if (ct === 'text/event-stream' && status < 400) {
      res.writeHead(status, headers);
      res.flushHeaders();
      const dec = new StringDecoder('utf8');
      const sse = new SseSplitter((lines) => {
        const ev = rewriteEvent(lines, (d) => session.fromServer(d));
        if (ev !== null) res.write(ev);
      });
      ures.on('data', (c: Buffer) => sse.push(dec.write(c)));
      ures.on('end', () => {
        sse.push(dec.end());
        sse.end();
        res.end();
      });
      ures.on('error', () => res.destroy());
      res.on('close', () => ures.destroy());
      return;
    }
    if (ct === 'application/json' && status < 400) {
      const chunks: Buffer[] = [];
      ures.on('data', (c: Buffer) => chunks.push(c));
      ures.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const out = session.fromServer(text);
        if (out === null) {
          reply(res, 502, errorResponse(id ?? null, INTERNAL_ERROR, 'bridle: the server sent an answer the proxy could not accept'));
          return;
        }
        res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(out)) });
        res.end(out);
      });
      ures.on('error', () => res.destroy());
      return;
    }
    if (status < 400) {
      // Any other body (another type, a type in other letter case a client still reads as JSON) would
      // reach the client unchecked: only an empty answer (202 Accepted, 204 No Content) passes.
      ures.resume();
      ures.on('end', () => {
        if (status === 202 || status === 204) {
          res.writeHead(status, headers);
          res.end();
        } else {
          log.warn({ status, contentType: ures.headers['content-type'] }, 'MCP server answered with a content type the proxy does not read; refused');
          reply(res, 502, errorResponse(id ?? null, INTERNAL_ERROR, `bridle: the server answered with content type '${String(ures.headers['content-type'] ?? '')}', neither application/json nor text/event-stream`));
        }
      });
      return;
    }
    res.writeHead(status, headers);
    ures.pipe(res);
  };

  const passThrough = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const sid = req.headers['mcp-session-id'];
    const s = sessions.get(typeof sid === 'string' ? sid : '');
    const up = mod.request(upstream, { method: req.method, agent, headers: forwardHeaders(req.headers) }, (ures) => {
      if (req.method === 'DELETE' && (ures.statusCode ?? 500) < 300 && typeof sid === 'string' && s) {
        s.session.close('the client ended the session');
        sessions.delete(sid);
      }
      // A stream of a session the proxy does not know goes through a session of its own, which passes
      // notifications and drops answers to requests it never saw.
      relay(ures, res, s ? s.session : newSess().session, undefined);
    });
    up.on('error', (err) => {
      log.error({ upstream: upstream.href, err: err.message }, 'MCP upstream request failed');
      if (!res.headersSent) reply(res, 502, errorResponse(null, INTERNAL_ERROR, `bridle: the MCP server could not be reached: ${err.message}`));
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      log.error({ err: err.stack }, 'internal error in the HTTP proxy');
      if (!res.headersSent) reply(res, 500, errorResponse(null, INTERNAL_ERROR, `bridle: internal error: ${err.message}`));
      else res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.listen.port;
  const hostPart = opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host;
  return {
    url: `http://${hostPart}:${port}${path}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of new Set(sessions.values())) s.session.close('the proxy stopped');
        sessions.clear();
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
