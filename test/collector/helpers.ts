// Reusable pieces for collector tests (and the lead's end-to-end tests from real BPF sessions):
//   startTestCollector(t)  an in-process collector with mutual TLS on 127.0.0.1:0, its PKI, a query client;
//                          shut down and its directory removed when the test ends, pass or fail.
//   SyntheticHost          events with realistic lineage (sessions, process trees, connects, verdicts).
//   spawnFixture(t, …)     a child process (fixtures/*.ts) killed by pid when the test ends.
import type { TestContext } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import pino from 'pino';
import { startCollector, type Collector, type CollectorOptions } from '../../src/collector/server.js';
import { createQueryClient, type QueryClient } from '../../src/collector/client.js';
import { initPki, issueCert, type PkiInit } from '../../src/collector/certs.js';
import type { TlsFiles } from '../../src/collector/tls.js';
import type { BridleEvent, ConnectEvent, ExecEvent, ExitEvent, SessionEndEvent, SessionStartEvent, ToolCallEvent, Verdict } from '../../src/events/types.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
export const TSX = join(REPO, 'node_modules/tsx/dist/esm/index.mjs');

const stacks = new WeakMap<TestContext, Array<() => unknown>>();

/**
 * Runs `fn` when the test ends, pass or fail, in reverse order of registration (like `defer`): what was
 * set up last is torn down first, so a shipper closes before its directory is removed.
 */
export function defer(t: TestContext, fn: () => unknown): void {
  let stack = stacks.get(t);
  if (!stack) {
    const s: Array<() => unknown> = [];
    stacks.set(t, (stack = s));
    t.after(async () => {
      let first: unknown;
      while (s.length) {
        try {
          await s.pop()!();
        } catch (err) {
          first ??= err;
        }
      }
      if (first) throw first;
    });
  }
  stack.push(fn);
}

/** A temp directory removed when the test ends. */
export function tempDir(t: TestContext, prefix = 'bridle-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  defer(t, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const quietLog = (): pino.Logger => pino({ level: process.env.BRIDLE_TEST_LOG ?? 'silent' });

export interface TestPki extends PkiInit {
  /** Certificate files for an agent on `host` (issued on first use). */
  agent(host: string): Promise<TlsFiles>;
  /** TLS files of the query client certificate (role query). */
  queryTls: TlsFiles;
}

export async function makePki(dir: string): Promise<TestPki> {
  const pki = await initPki(dir);
  const issued = new Map<string, TlsFiles>();
  return {
    ...pki,
    queryTls: pki.query,
    async agent(host: string) {
      let files = issued.get(host);
      if (!files) {
        files = await issueCert(dir, { role: 'agent', name: host });
        issued.set(host, files);
      }
      return files;
    },
  };
}

export interface TestCollector {
  address: string;
  port: number;
  dir: string;
  dbPath: string;
  pki: TestPki;
  token: string;
  /** Query client authenticated with the token (over mTLS with the query certificate). */
  query: QueryClient;
  collector: Collector;
  /** A query client with other credentials (closed at the end of the test). */
  client(opts?: { token?: string; tls?: TlsFiles | 'none' }): QueryClient;
  close(): Promise<void>;
}

export async function startTestCollector(
  t: TestContext,
  opts: { insecure?: boolean; dir?: string; collector?: Partial<CollectorOptions> } = {},
): Promise<TestCollector> {
  const dir = opts.dir ?? tempDir(t, 'bridle-collector-');
  const pki = await makePki(join(dir, 'certs'));
  const dbPath = join(dir, 'collector.db');
  const collector = await startCollector({
    listen: '127.0.0.1:0',
    dbPath,
    ...(opts.insecure ? { insecure: true } : { tls: pki.collector }),
    queryTokens: [pki.token],
    log: quietLog(),
    ...opts.collector,
  });
  const clients: QueryClient[] = [];
  const client = (o: { token?: string; tls?: TlsFiles | 'none' } = {}): QueryClient => {
    const tls = o.tls === 'none' ? undefined : (o.tls ?? pki.queryTls);
    const c = createQueryClient({
      collector: collector.address,
      ...(opts.insecure ? { insecure: true } : tls ? { tls } : { insecure: true }),
      ...(o.token !== undefined ? { token: o.token } : {}),
    });
    clients.push(c);
    return c;
  };
  const query = client({ token: pki.token });
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const c of clients) c.close();
    await collector.close();
  };
  defer(t, close);
  return { address: collector.address, port: collector.port, dir, dbPath, pki, token: pki.token, query, collector, client, close };
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then throws with `what`). */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ---- synthetic events with realistic lineage ----

/**
 * Builds events the way the sensor reports them: `exec_id` = host:boot:pid:start, children point at the
 * image that forked them, a session's first event is session_start naming its root process.
 */
export class SyntheticHost {
  private pid: number;
  private clock: number;
  readonly boot = 'b00t5eed0001';
  constructor(
    readonly host: string,
    opts: { startPid?: number; startMs?: number } = {},
  ) {
    this.pid = opts.startPid ?? 4000;
    this.clock = opts.startMs ?? Date.now() - 60_000;
  }

  private tick(): string {
    this.clock += 1;
    return new Date(this.clock).toISOString();
  }

  private base(session: string, execId: string, parent: string, pid: number, ppid: number) {
    return { ts: this.tick(), host: this.host, session, exec_id: execId, parent_exec_id: parent, pid, ppid, uid: 1000, policy: 'ci-default' };
  }

  newExecId(pid: number): string {
    return `${this.host}:${this.boot}:${pid}:${this.clock * 1000 + pid}`;
  }

  /** session_start + the root's exec. The root's parent is the process that launched the agent (outside the session). */
  startSession(session: string, opts: { agent?: string; path?: string; argv?: string[]; launcher?: string } = {}): { root: Proc; events: BridleEvent[] } {
    const pid = ++this.pid;
    const execId = this.newExecId(pid);
    const launcher = opts.launcher ?? `${this.host}:${this.boot}:1000:1`;
    const path = opts.path ?? '/usr/local/bin/claude';
    const argv = opts.argv ?? ['claude', '--print'];
    const start: SessionStartEvent = {
      ...this.base(session, execId, launcher, pid, 1000), type: 'session_start', origin: 'run', agent: opts.agent ?? 'claude-code',
      backend: 'sigkill', mode: 'enforce', path, argv,
    };
    const exec: ExecEvent = { ...this.base(session, execId, launcher, pid, 1000), type: 'exec', path, argv, verdict: 'allow', rule: 'default' };
    return { root: { execId, pid, session }, events: [start, exec] };
  }

  /** A child of `parent` that execs `path`. */
  spawn(parent: Proc, path: string, argv: string[], verdict: Verdict = 'allow', rule = verdict === 'allow' ? 'exec.allow[0]' : 'exec.deny[0]'): { proc: Proc; event: ExecEvent } {
    const pid = ++this.pid;
    const execId = this.newExecId(pid);
    const event: ExecEvent = { ...this.base(parent.session, execId, parent.execId, pid, parent.pid), type: 'exec', path, argv, verdict, rule };
    return { proc: { execId, pid, session: parent.session, parentExecId: parent.execId, ppid: parent.pid }, event };
  }

  connect(p: Proc, daddr: string, dport: number, verdict: Verdict = 'allow', rule = verdict === 'allow' ? 'network.allow[0]' : 'network.default'): ConnectEvent {
    return {
      ...this.base(p.session, p.execId, p.parentExecId ?? '', p.pid, p.ppid ?? 0), type: 'connect', proto: 'tcp',
      family: daddr.includes(':') ? 'inet6' : 'inet', daddr, dport, verdict, rule, op: 'connect',
    };
  }

  exit(p: Proc, exitCode = 0, signal?: number): ExitEvent {
    const ev: ExitEvent = { ...this.base(p.session, p.execId, p.parentExecId ?? '', p.pid, p.ppid ?? 0), type: 'exit', exit_code: exitCode };
    if (signal !== undefined) ev.signal = signal;
    return ev;
  }

  toolCall(p: Proc, server: string, tool: string, args: unknown, verdict: Verdict = 'allow'): ToolCallEvent {
    return { ...this.base(p.session, p.execId, p.parentExecId ?? '', p.pid, p.ppid ?? 0), type: 'tool_call', server, tool, arguments: args, verdict, rule: 'mcp' };
  }

  endSession(root: Proc, exitCode = 0): SessionEndEvent {
    return { ...this.base(root.session, root.execId, '', root.pid, 1000), type: 'session_end', exit_code: exitCode, counts: { exec: 3 } };
  }
}

export interface Proc {
  execId: string;
  pid: number;
  session: string;
  parentExecId?: string;
  ppid?: number;
}

/**
 * A typical incident: claude → bash → {git (allowed, connects to github), curl (allowed, connects to the
 * metadata address and is denied), nc (denied at exec)}; plus python → pip, an unrelated subtree.
 */
export function incidentSession(h: SyntheticHost, session: string) {
  const events: BridleEvent[] = [];
  const { root, events: start } = h.startSession(session);
  events.push(...start);
  const bash = h.spawn(root, '/usr/bin/bash', ['bash', '-c', 'make deploy']);
  events.push(bash.event);
  const git = h.spawn(bash.proc, '/usr/bin/git', ['git', 'push']);
  events.push(git.event, h.connect(git.proc, '140.82.112.3', 443), h.exit(git.proc, 0));
  const curl = h.spawn(bash.proc, '/usr/bin/curl', ['curl', 'http://169.254.169.254/latest/meta-data']);
  events.push(curl.event, h.connect(curl.proc, '169.254.169.254', 80, 'deny', 'network.deny[0]'), h.exit(curl.proc, 7));
  const nc = h.spawn(bash.proc, '/usr/bin/nc', ['nc', '-l', '4444'], 'deny', 'exec.deny[0]');
  events.push(nc.event, h.exit(nc.proc, 137, 9));
  events.push(h.exit(bash.proc, 2));
  const py = h.spawn(root, '/usr/bin/python3', ['python3', '-m', 'pip', 'install', 'x']);
  events.push(py.event, h.connect(py.proc, '151.101.0.223', 443), h.toolCall(root, 'github', 'create_issue', { repo: 'acme/x', title: 't' }));
  events.push(h.exit(py.proc, 0), h.exit(root, 0), h.endSession(root, 0));
  return { events, root, bash: bash.proc, git: git.proc, curl: curl.proc, nc: nc.proc, py: py.proc };
}

// ---- child processes ----

export interface Fixture {
  child: ChildProcess;
  pid: number;
  /** Resolves with the first JSON line on stdout that passes `pred`. */
  line<T = any>(pred?: (v: any) => boolean, timeoutMs?: number): Promise<T>;
  /** Every JSON line seen so far. */
  lines: any[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

/** Runs test/collector/fixtures/<name>.ts in a child process; it is killed (SIGKILL, by pid) when the test ends. */
export function spawnFixture(t: TestContext, name: string, env: Record<string, string>): Fixture {
  const child = spawn(process.execPath, ['--import', TSX, join(FIXTURES, `${name}.ts`)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid!;
  const lines: any[] = [];
  let err = '';
  const listeners = new Set<(v: any) => void>();
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  createInterface({ input: child.stdout! }).on('line', (l) => {
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      return;
    }
    lines.push(v);
    for (const f of listeners) f(v);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  let alive = true;
  void exited.then(() => (alive = false));
  defer(t, () => {
    if (alive) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  return {
    child,
    pid,
    lines,
    stderr: () => err,
    exited,
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (alive) process.kill(pid, signal);
    },
    line(pred = () => true, timeoutMs = 20_000) {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(f);
          reject(new Error(`fixture ${name} (pid ${pid}): no matching line within ${timeoutMs} ms; stderr:\n${err}`));
        }, timeoutMs);
        const f = (v: any): void => {
          if (!pred(v)) return;
          clearTimeout(timer);
          listeners.delete(f);
          resolve(v);
        };
        listeners.add(f);
        void exited.then(({ code, signal }) => {
          if (!listeners.has(f)) return;
          clearTimeout(timer);
          listeners.delete(f);
          reject(new Error(`fixture ${name} (pid ${pid}) exited (${code ?? signal}) before the expected line; stderr:\n${err}`));
        });
      });
    },
  };
}
