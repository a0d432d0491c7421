// Shared helpers for the MCP proxy tests: temp dirs, policies, the bridle CLI as an MCP server for the
// official SDK client, and a raw line client for byte-level and malformed-input tests. Every process a
// helper starts is ended by pid in t.after, even when the test fails.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { killPid } from '../helpers/proc.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const TSX = join(ROOT, 'node_modules/tsx/dist/esm/index.mjs');
export const MAIN = join(ROOT, 'src/cli/main.ts');
export const TOY = join(ROOT, 'test/mcp/fixtures/toy-server.mjs');
export const EVERYTHING = join(ROOT, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
export const FILESYSTEM = join(ROOT, 'node_modules/@modelcontextprotocol/server-filesystem/dist/index.js');
export const EVERYTHING_HTTP = join(ROOT, 'test/mcp/fixtures/everything-http.mjs');

/** The command line that runs `bridle ARGS` from this checkout. */
export function bridleCmd(args: string[]): { command: string; args: string[] } {
  return { command: process.execPath, args: ['--import', TSX, MAIN, ...args] };
}

export function tempDir(t: TestContext): string {
  const d = mkdtempSync(join(tmpdir(), 'bridle-mcp-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export function writePolicy(dir: string, yaml: string, name = 'policy.yaml'): string {
  const p = join(dir, name);
  writeFileSync(p, yaml);
  return p;
}

export { killPid };

export function readEvents(file: string): Record<string, any>[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

export function readLog(file: string): Record<string, any>[] {
  return readEvents(file);
}

/** Log lines (pino JSON) a child wrote on stderr. */
export function collectStderr(stream: NodeJS.ReadableStream | null | undefined): { lines: Record<string, any>[]; text: () => string } {
  const lines: Record<string, any>[] = [];
  let buf = '';
  let all = '';
  stream?.setEncoding?.('utf8');
  stream?.on('data', (c: string) => {
    all += c;
    buf += c;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const l = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        lines.push(JSON.parse(l));
      } catch {
        /* not a log record */
      }
    }
  });
  return { lines, text: () => all };
}

export interface Proxied {
  client: Client;
  transport: StdioClientTransport;
  events: string;
  stderr: ReturnType<typeof collectStderr>;
}

/** An SDK client talking to `bridle mcp ... -- server` over stdio. */
export async function connectProxy(
  t: TestContext,
  o: { policy: string; server: string; dir: string; cmd: string[]; flags?: string[]; env?: Record<string, string> },
): Promise<Proxied> {
  const events = join(o.dir, `events-${Math.random().toString(36).slice(2)}.ndjson`);
  const { command, args } = bridleCmd([
    'mcp', '--policy', o.policy, '--server', o.server, '--events', events, '--pins', join(o.dir, 'pins.json'),
    '--log-level', 'debug', ...(o.flags ?? []), '--', ...o.cmd,
  ]);
  const transport = new StdioClientTransport({ command, args, stderr: 'pipe', env: { ...(process.env as Record<string, string>), ...(o.env ?? {}) } });
  const stderr = collectStderr(transport.stderr as unknown as NodeJS.ReadableStream);
  const client = new Client({ name: 'bridle-test', version: '1.0.0' });
  t.after(async () => {
    const serverPid = stderr.lines.find((l) => l.msg === 'MCP server started')?.server_pid as number | undefined;
    const proxyPid = transport.pid;
    await client.close().catch(() => undefined);
    killPid(proxyPid);
    killPid(serverPid);
  });
  try {
    await client.connect(transport);
  } catch (err) {
    await new Promise((r) => setTimeout(r, 200));
    throw new Error(`could not connect through bridle mcp: ${(err as Error).message}\nstderr: ${stderr.text().slice(-3000)}`);
  }
  return { client, transport, events, stderr };
}

/** An SDK client talking to a server directly over stdio (the reference for byte-for-byte checks). */
export async function connectDirect(t: TestContext, cmd: string[], env?: Record<string, string>): Promise<Client> {
  const transport = new StdioClientTransport({ command: cmd[0]!, args: cmd.slice(1), stderr: 'pipe', env: { ...(process.env as Record<string, string>), ...(env ?? {}) } });
  const client = new Client({ name: 'bridle-test', version: '1.0.0' });
  t.after(async () => {
    const pid = transport.pid;
    await client.close().catch(() => undefined);
    killPid(pid);
  });
  await client.connect(transport);
  return client;
}

export async function connectHttp(t: TestContext, url: string): Promise<Client> {
  const client = new Client({ name: 'bridle-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  t.after(async () => {
    await transport.terminateSession().catch(() => undefined);
    await client.close().catch(() => undefined);
  });
  await client.connect(transport);
  return client;
}

/** A process speaking newline-delimited JSON on stdin/stdout, read line by line. */
export class LineChild {
  readonly lines: string[] = [];
  private waiters: (() => void)[] = [];
  readonly stderr: ReturnType<typeof collectStderr>;
  private buf = '';
  exited: Promise<number | null>;

  constructor(t: TestContext, readonly child: ChildProcessWithoutNullStreams) {
    this.stderr = collectStderr(child.stderr);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      this.buf += c;
      let nl;
      while ((nl = this.buf.indexOf('\n')) !== -1) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.exited = new Promise((res) => child.on('close', (code) => res(code)));
    t.after(() => {
      const serverPid = this.stderr.lines.find((l) => l.msg === 'MCP server started')?.server_pid as number | undefined;
      killPid(child.pid);
      killPid(serverPid);
    });
  }

  static spawn(t: TestContext, command: string, args: string[], env?: Record<string, string>): LineChild {
    return new LineChild(t, spawn(command, args, { stdio: 'pipe', env: { ...process.env, ...(env ?? {}) } }));
  }

  write(text: string | Buffer): void {
    this.child.stdin.write(text);
  }

  send(msg: unknown): void {
    this.write(JSON.stringify(msg) + '\n');
  }

  /** The next line, waiting up to `ms`. */
  async next(ms = 5000): Promise<string> {
    const deadline = Date.now() + ms;
    while (this.lines.length === 0) {
      if (Date.now() > deadline) throw new Error(`no line within ${ms} ms; stderr: ${this.stderr.text().slice(-2000)}`);
      await new Promise<void>((res) => {
        const timer = setTimeout(res, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          res();
        });
      });
    }
    return this.lines.shift()!;
  }

  async nextJson(ms = 5000): Promise<any> {
    return JSON.parse(await this.next(ms));
  }

  /** Sends a request and returns the answer with the same id (other lines are kept for later). */
  async request(id: number | string, method: string, params: unknown = {}, ms = 5000): Promise<any> {
    this.send({ jsonrpc: '2.0', id, method, params });
    return this.waitFor((m) => m.id === id && !('method' in m), ms);
  }

  async waitFor(pred: (m: any) => boolean, ms = 5000): Promise<any> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.lines.findIndex((l) => {
        try {
          return pred(JSON.parse(l));
        } catch {
          return false;
        }
      });
      if (i >= 0) return JSON.parse(this.lines.splice(i, 1)[0]!);
      if (Date.now() > deadline) throw new Error(`no matching message within ${ms} ms; got ${JSON.stringify(this.lines)}; stderr: ${this.stderr.text().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  async initialize(): Promise<any> {
    const r = await this.request(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } }, 15000);
    this.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    return r;
  }
}

/** `bridle mcp` over stdio driven by raw lines. */
export function rawProxy(t: TestContext, o: { policy: string; server: string; dir: string; cmd: string[]; flags?: string[]; env?: Record<string, string> }): LineChild & { events: string } {
  const events = join(o.dir, `events-${Math.random().toString(36).slice(2)}.ndjson`);
  const { command, args } = bridleCmd([
    'mcp', '--policy', o.policy, '--server', o.server, '--events', events, '--pins', join(o.dir, 'pins.json'),
    '--log-level', 'debug', ...(o.flags ?? []), '--', ...o.cmd,
  ]);
  const c = LineChild.spawn(t, command, args, o.env) as LineChild & { events: string };
  c.events = events;
  return c;
}

/** Waits until `pred` holds, polling. */
export async function until<T>(f: () => T | undefined, ms = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts a process that prints "PORT <n>" on stderr when listening; resolves with the port. */
export async function startPortServer(t: TestContext, args: string[], env?: Record<string, string>): Promise<{ port: number; child: LineChild }> {
  const c = LineChild.spawn(t, process.execPath, args, env);
  const port = await until(() => {
    const m = /PORT (\d+)/.exec(c.stderr.text());
    return m ? Number(m[1]) : undefined;
  }, 15000, `PORT from ${args.join(' ')}`);
  return { port, child: c };
}

/** Starts `bridle mcp --listen 127.0.0.1:0 --upstream URL`; resolves with the URL it serves. */
export async function startHttpBridle(
  t: TestContext,
  o: { policy: string; server: string; dir: string; upstream: string; flags?: string[] },
): Promise<{ url: string; events: string; child: LineChild }> {
  const events = join(o.dir, `events-${Math.random().toString(36).slice(2)}.ndjson`);
  const { command, args } = bridleCmd([
    'mcp', '--policy', o.policy, '--server', o.server, '--events', events, '--pins', join(o.dir, 'pins.json'),
    '--listen', '127.0.0.1:0', '--upstream', o.upstream, ...(o.flags ?? []),
  ]);
  const child = LineChild.spawn(t, command, args);
  const url = await until(() => child.stderr.lines.find((l) => typeof l.url === 'string')?.url as string | undefined, 15000, 'the proxy URL');
  return { url, events, child };
}
