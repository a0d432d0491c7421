// JSON-RPC 2.0 framing and the MCP method vocabulary the proxy knows. Messages are handled as parsed
// objects; what the proxy forwards to a server is re-serialised from the object it decided on (so a
// parser difference such as duplicate keys cannot make the server see something else).

export type Id = string | number;

export interface JsonRpcMessage {
  jsonrpc: '2.0';
  id?: Id | null;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;
export const INVALID_PARAMS = -32602;
export const INTERNAL_ERROR = -32603;

/** Requests a client may send to a server (MCP 2025-11-25 and earlier). */
export const CLIENT_REQUESTS = new Set([
  'initialize', 'ping',
  'tools/list', 'tools/call',
  'resources/list', 'resources/templates/list', 'resources/read', 'resources/subscribe', 'resources/unsubscribe',
  'prompts/list', 'prompts/get',
  'completion/complete', 'logging/setLevel',
  'tasks/get', 'tasks/result', 'tasks/list', 'tasks/cancel',
]);

/** Notifications a client may send to a server. */
export const CLIENT_NOTIFICATIONS = new Set([
  'notifications/initialized', 'notifications/cancelled', 'notifications/progress',
  'notifications/roots/list_changed', 'notifications/tasks/status',
]);

export function isId(v: unknown): v is Id {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v));
}

export function errorResponse(id: Id | null, code: number, message: string, data?: unknown): JsonRpcMessage {
  return { jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined ? { data } : {}) } };
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Splits a byte stream into newline-delimited messages (MCP stdio framing). A line longer than `max`
 * bytes is not buffered: its bytes are dropped up to the next newline and `onOversized` is told its size.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = false;
  private discarded = 0;

  constructor(
    private readonly max: number,
    private readonly onLine: (line: string) => void,
    private readonly onOversized: (bytes: number) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl === -1 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (this.discarding) this.discarded += piece.length;
      else if (this.size + piece.length > this.max) {
        this.discarding = true;
        this.discarded = this.size + piece.length;
        this.parts = [];
        this.size = 0;
      } else if (piece.length) {
        this.parts.push(piece);
        this.size += piece.length;
      }
      if (nl === -1) break;
      this.finishLine();
      start = nl + 1;
    }
  }

  /** Flushes a last line that had no newline (end of stream). */
  end(): void {
    if (this.size || this.discarding) this.finishLine();
  }

  private finishLine(): void {
    if (this.discarding) {
      const n = this.discarded;
      this.discarding = false;
      this.discarded = 0;
      this.onOversized(n);
      return;
    }
    const buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    let line = buf.toString('utf8');
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() !== '') this.onLine(line);
  }
}
