// Benchmark: what the MCP proxy adds to a tools/call, side by side in one run.
//   node --import tsx bench/mcp.bench.ts [--calls N] [--rounds R] [--json]
// Latency: the same raw JSON-RPC client sends sequential tools/call requests to the toy server directly
// and through `bridle mcp` (stdio, the real CLI, events to an NDJSON file), alternating in rounds so both
// see the same machine state; p50/p99 for each and the difference. Throughput: calls per second through
// one proxy with 32 calls in flight. Decision: the cost of decide() alone. Target: added p50 < 1 ms.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileServer, decide, type ToolDef } from '../src/mcp/engine.js';
import { parsePolicy } from '../src/policy/load.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TOY = join(ROOT, 'test/mcp/fixtures/toy-server.mjs');
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const CALLS = arg('--calls', 500);
const ROUNDS = arg('--rounds', 6);
const THROUGHPUT_CALLS = arg('--throughput-calls', 5000);
const JSON_OUT = process.argv.includes('--json');

const POLICY = `version: 1
name: bench
mcp:
  servers:
    toy:
      tools:
        allow: [get_issue, "list_*", create_issue]
        deny: [delete_repository]
      redact: [token]
      rules:
        - tool: create_issue
          when: "args.repo.startsWith('acme/') && size(args.title) < 200"
          args:
            priority: { min: 0, max: 5, optional: true }
`;

/** A newline-JSON peer with request/answer matching by id. */
class Peer {
  private buf = '';
  private waiting = new Map<number, (t: bigint) => void>();
  constructor(readonly child: ChildProcessWithoutNullStreams) {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      this.buf += c;
      let nl;
      while ((nl = this.buf.indexOf('\n')) !== -1) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const t = process.hrtime.bigint();
        const m = /"id":(\d+)/.exec(line);
        if (!m) continue;
        const w = this.waiting.get(Number(m[1]));
        if (w) {
          this.waiting.delete(Number(m[1]));
          w(t);
        }
      }
    });
  }
  /** Sends a request; resolves with the round-trip time in ms. */
  call(id: number, method: string, params: unknown): Promise<number> {
    return new Promise((res) => {
      const t0 = process.hrtime.bigint();
      this.waiting.set(id, (t) => res(Number(t - t0) / 1e6));
      this.child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }
  async init(): Promise<void> {
    await this.call(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } });
    this.child.stdin.write('{"jsonrpc":"2.0","method":"notifications/initialized"}\n');
  }
  stop(): void {
    try {
      process.kill(this.child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** A Streamable HTTP client over one keep-alive connection: POST a request, time the JSON answer. */
class HttpPeer {
  private agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private sid = '';
  constructor(readonly url: URL) {}
  call(id: number, method: string, params: unknown): Promise<number> {
    const body = JSON.stringify({ jsonrpc: '2.0', id, method, params });
    const t0 = process.hrtime.bigint();
    return new Promise((res, rej) => {
      const req = http.request(this.url, {
        method: 'POST', agent: this.agent,
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'content-length': Buffer.byteLength(body), ...(this.sid ? { 'mcp-session-id': this.sid } : {}) },
      }, (r) => {
        const sid = r.headers['mcp-session-id'];
        if (typeof sid === 'string') this.sid = sid;
        r.resume();
        r.on('end', () => res(Number(process.hrtime.bigint() - t0) / 1e6));
      });
      req.on('error', rej);
      req.end(body);
    });
  }
  async init(): Promise<void> {
    await this.call(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } });
  }
  stop(): void {
    this.agent.destroy();
  }
}

/** Waits for a line matching `re` on a child's stderr. */
function stderrMatch(child: ChildProcessWithoutNullStreams, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((res, rej) => {
    let text = '';
    const timer = setTimeout(() => rej(new Error(`timed out waiting for ${re}: ${text}`)), 20000);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (c: string) => {
      text += c;
      const m = re.exec(text);
      if (m) {
        clearTimeout(timer);
        res(m);
      }
    });
  });
}

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const f3 = (x: number): string => x.toFixed(3);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-bench-'));
  const policyFile = join(dir, 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  const peers: Peer[] = [];
  const cleanup = (): void => {
    for (const p of peers) p.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  try {
    const direct = new Peer(spawn(process.execPath, [TOY], { stdio: 'pipe' }));
    const proxied = new Peer(
      spawn(process.execPath, ['--import', join(ROOT, 'node_modules/tsx/dist/esm/index.mjs'), join(ROOT, 'src/cli/main.ts'), 'mcp', '--policy', policyFile, '--server', 'toy',
        '--events', join(dir, 'events.ndjson'), '--pins', join(dir, 'pins.json'), '--log-level', 'warn', '--', process.execPath, TOY], { stdio: 'pipe' }),
    );
    peers.push(direct, proxied);
    proxied.child.stderr.pipe(process.stderr);
    await direct.init();
    await proxied.init();

    const calls: [string, unknown][] = [
      ['get_issue', { repo: 'acme/web', number: 7 }],
      ['create_issue', { repo: 'acme/web', title: 'a bug', labels: ['bug'], priority: 2 }],
      ['list_issues', { repo: 'acme/web' }],
    ];
    let id = 1;
    const measure = async (p: Peer | HttpPeer, n: number): Promise<number[]> => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const [name, args] = calls[i % calls.length]!;
        out.push(await p.call(id++, 'tools/call', { name, arguments: args }));
      }
      return out;
    };
    // Warm up both (JIT, the proxy's first tools/list, pinning).
    await measure(direct, 300);
    await measure(proxied, 300);
    const d: number[] = [];
    const x: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      d.push(...(await measure(direct, CALLS)));
      x.push(...(await measure(proxied, CALLS)));
    }

    // Throughput: THROUGHPUT_CALLS calls, 32 in flight.
    const throughput = async (p: Peer | HttpPeer): Promise<number> => {
      const t0 = performance.now();
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < THROUGHPUT_CALLS) {
          const [name, args] = calls[next++ % calls.length]!;
          await p.call(id++, 'tools/call', { name, arguments: args });
        }
      };
      await Promise.all(Array.from({ length: 32 }, worker));
      return THROUGHPUT_CALLS / ((performance.now() - t0) / 1000);
    };
    const tpDirect = await throughput(direct);
    const tpProxy = await throughput(proxied);

    // The same over Streamable HTTP: the toy server's HTTP mode, directly and through `bridle mcp --listen`.
    const toyHttp = spawn(process.execPath, [TOY, '--http'], { stdio: 'pipe' });
    peers.push(new Peer(toyHttp));
    const upPort = Number((await stderrMatch(toyHttp, /PORT (\d+)/))[1]);
    const proxyHttp = spawn(process.execPath, ['--import', join(ROOT, 'node_modules/tsx/dist/esm/index.mjs'), join(ROOT, 'src/cli/main.ts'), 'mcp', '--policy', policyFile, '--server', 'toy',
      '--events', join(dir, 'events-http.ndjson'), '--pins', join(dir, 'pins.json'), '--listen', '127.0.0.1:0', '--upstream', `http://127.0.0.1:${upPort}/mcp`], { stdio: 'pipe' });
    peers.push(new Peer(proxyHttp));
    const proxyUrl = (await stderrMatch(proxyHttp, /"url":"([^"]+)"/))[1]!;
    const hd = new HttpPeer(new URL(`http://127.0.0.1:${upPort}/mcp`));
    const hx = new HttpPeer(new URL(proxyUrl));
    await hd.init();
    await hx.init();
    await measure(hd, 300);
    await measure(hx, 300);
    const hdl: number[] = [];
    const hxl: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      hdl.push(...(await measure(hd, CALLS)));
      hxl.push(...(await measure(hx, CALLS)));
    }
    const tpHttpDirect = await throughput(hd);
    const tpHttpProxy = await throughput(hx);
    hd.stop();
    hx.stop();

    // The decision alone.
    const policy = parsePolicy(POLICY, 'bench.yaml');
    const s = compileServer(policy.mcp.servers.toy!, policy.mode);
    const obj = (props: object, required: string[]) => ({ type: 'object', properties: props, required });
    const tools = new Map<string, ToolDef>([
      ['create_issue', { name: 'create_issue', inputSchema: obj({ repo: { type: 'string' }, title: { type: 'string' }, labels: { type: 'array', items: { type: 'string' } }, priority: { type: 'number' } }, ['repo', 'title']) }],
    ]);
    const input = { tool: 'create_issue', args: { repo: 'acme/web', title: 'a bug', labels: ['bug'], priority: 2 }, tools };
    for (let i = 0; i < 20000; i++) decide(s, input);
    const N = 100000;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) decide(s, input);
    const decideUs = ((performance.now() - t0) * 1000) / N;

    const res = {
      calls: d.length,
      direct_p50_ms: pct(d, 50), direct_p99_ms: pct(d, 99),
      proxy_p50_ms: pct(x, 50), proxy_p99_ms: pct(x, 99),
      added_p50_ms: pct(x, 50) - pct(d, 50), added_p99_ms: pct(x, 99) - pct(d, 99),
      direct_calls_per_s: Math.round(tpDirect), proxy_calls_per_s: Math.round(tpProxy),
      http_direct_p50_ms: pct(hdl, 50), http_direct_p99_ms: pct(hdl, 99),
      http_proxy_p50_ms: pct(hxl, 50), http_proxy_p99_ms: pct(hxl, 99),
      http_added_p50_ms: pct(hxl, 50) - pct(hdl, 50), http_added_p99_ms: pct(hxl, 99) - pct(hdl, 99),
      http_direct_calls_per_s: Math.round(tpHttpDirect), http_proxy_calls_per_s: Math.round(tpHttpProxy),
      decide_us: decideUs,
    };
    if (JSON_OUT) {
      process.stdout.write(JSON.stringify({ bench: 'mcp', ...res }) + '\n');
    } else {
      const lines = [
        `MCP proxy overhead — ${res.calls} sequential tools/call each way (stdio, toy server, events to NDJSON)`,
        '',
        '                 p50 ms    p99 ms',
        `  direct        ${f3(res.direct_p50_ms).padStart(7)}   ${f3(res.direct_p99_ms).padStart(7)}`,
        `  via bridle    ${f3(res.proxy_p50_ms).padStart(7)}   ${f3(res.proxy_p99_ms).padStart(7)}`,
        `  added         ${f3(res.added_p50_ms).padStart(7)}   ${f3(res.added_p99_ms).padStart(7)}   (target: p50 < 1 ms: ${res.added_p50_ms < 1 ? 'met' : 'NOT met'})`,
        '',
        `throughput, 32 in flight, ${THROUGHPUT_CALLS} calls: direct ${res.direct_calls_per_s} calls/s, through one proxy ${res.proxy_calls_per_s} calls/s`,
        '',
        `Streamable HTTP (toy server, JSON answers, keep-alive), ${hdl.length} sequential calls each way`,
        '                 p50 ms    p99 ms',
        `  direct        ${f3(res.http_direct_p50_ms).padStart(7)}   ${f3(res.http_direct_p99_ms).padStart(7)}`,
        `  via bridle    ${f3(res.http_proxy_p50_ms).padStart(7)}   ${f3(res.http_proxy_p99_ms).padStart(7)}`,
        `  added         ${f3(res.http_added_p50_ms).padStart(7)}   ${f3(res.http_added_p99_ms).padStart(7)}`,
        `throughput, 32 in flight: direct ${res.http_direct_calls_per_s} calls/s, through one proxy ${res.http_proxy_calls_per_s} calls/s`,
        '',
        `decide() alone (allow list + CEL + args + inputSchema): ${res.decide_us.toFixed(2)} µs per call`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
  } finally {
    cleanup();
    process.off('exit', cleanup);
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack}\n`);
    process.exit(1);
  },
);
