// The Streamable HTTP proxy end to end: `bridle mcp --listen --upstream` in front of the reference
// "everything" server (SSE answers) and the toy server (JSON answers), driven by the SDK client.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectHttp, EVERYTHING_HTTP, readEvents, startHttpBridle, startPortServer, tempDir, TOY, until, writePolicy } from './helpers.js';

const POLICY = `
version: 1
name: http
mcp:
  max_message_bytes: 4096
  servers:
    everything:
      tools:
        allow: [echo, "get-*"]
        deny: [get-env]
      rules:
        - tool: echo
          when: "!args.message.contains('secret')"
    toy:
      tools:
        allow: [get_issue, "list_*", query]
        deny: [delete_repository]
      rules:
        - tool: query
          sql: read-only
`;

test('http: the everything server through the proxy: filtered list, identical results, denials, events', async (t) => {
  const dir = tempDir(t);
  const { port } = await startPortServer(t, [EVERYTHING_HTTP]);
  const upstream = `http://127.0.0.1:${port}/mcp`;
  const { url, events } = await startHttpBridle(t, { policy: writePolicy(dir, POLICY), server: 'everything', dir, upstream });
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
  const client = await connectHttp(t, url);
  const direct = await connectHttp(t, upstream);

  const all = (await direct.listTools()).tools.map((x) => x.name);
  const shown = (await client.listTools()).tools.map((x) => x.name);
  assert.ok(all.includes('get-env'));
  assert.deepEqual(shown, all.filter((n) => n === 'echo' || (n.startsWith('get-') && n !== 'get-env')));

  for (const [name, args] of [['echo', { message: 'hello' }], ['get-sum', { a: 1, b: 2 }], ['get-tiny-image', {}]] as const) {
    assert.equal(JSON.stringify(await client.callTool({ name, arguments: args })), JSON.stringify(await direct.callTool({ name, arguments: args })), name);
  }
  const denied = await client.callTool({ name: 'get-env', arguments: {} });
  assert.equal(denied.isError, true);
  assert.equal((denied._meta as any)['bridle/decision'].rule, 'mcp.servers.everything.tools.deny[0]');
  const cond = await client.callTool({ name: 'echo', arguments: { message: 'the secret is 42' } });
  assert.equal(cond.isError, true);
  assert.equal((cond._meta as any)['bridle/decision'].rule, 'mcp.servers.everything.rules[0]');
  const schema = await client.callTool({ name: 'get-sum', arguments: { a: 'one', b: 2 } });
  assert.equal((schema._meta as any)['bridle/decision'].rule, 'mcp.servers.everything.schema');

  const ev = await until(() => {
    const e = readEvents(events).filter((x) => x.type === 'tool_call');
    return e.length >= 6 ? e : undefined;
  });
  assert.deepEqual(ev.map((e) => [e.tool, e.verdict]), [['echo', 'allow'], ['get-sum', 'allow'], ['get-tiny-image', 'allow'], ['get-env', 'deny'], ['echo', 'deny'], ['get-sum', 'deny']]);
});

test('http: denied calls never reach the server; malformed, batched, oversized and foreign-host requests are refused', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const { port } = await startPortServer(t, [TOY, '--http'], { TOY_LOG: log });
  const { url } = await startHttpBridle(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, upstream: `http://127.0.0.1:${port}/mcp` });
  const client = await connectHttp(t, url);
  assert.deepEqual((await client.listTools()).tools.map((x) => x.name), ['get_issue', 'list_issues', 'query']);
  const d = await client.callTool({ name: 'delete_repository', arguments: { repo: 'acme/x' } });
  assert.equal(d.isError, true);
  const q = await client.callTool({ name: 'query', arguments: { sql: 'WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x' } });
  assert.equal((q._meta as any)['bridle/decision'].rule, 'mcp.servers.toy.rules[0]');
  const ok = await client.callTool({ name: 'query', arguments: { sql: 'SELECT * FROM t -- ; DELETE FROM t' } });
  assert.equal(ok.isError, undefined);
  const reached = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call');
  assert.deepEqual(reached.map((m) => m.params.name), ['query']);
  assert.equal(reached[0].params.arguments.sql, 'SELECT * FROM t -- ; DELETE FROM t');

  const post = (body: string, headers: Record<string, string> = {}) =>
    fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers } });
  let r = await post('{"jsonrpc":"2.0","id":1,');
  assert.equal(r.status, 400);
  assert.equal(((await r.json()) as any).error.code, -32700);
  r = await post(JSON.stringify([{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_issue', arguments: {} } }, { jsonrpc: '2.0', id: 2, method: 'ping' }]));
  const batch = (await r.json()) as any[];
  assert.deepEqual(batch.map((m) => [m.id, m.error.data.rule]), [[1, 'mcp.protocol.batch'], [2, 'mcp.protocol.batch']]);
  r = await post(JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list', params: { pad: 'x'.repeat(5000) } }));
  assert.equal(r.status, 413);
  assert.equal(((await r.json()) as any).error.data.rule, 'mcp.protocol.oversized');
  r = await post(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'TOOLS/CALL', params: { name: 'delete_repository' } }));
  assert.equal(((await r.json()) as any).error.code, -32601);
  r = await post(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'ping' }), { origin: 'https://evil.example' });
  assert.equal(r.status, 403);
  const u = new URL(url);
  const foreign = await new Promise<number>((resolve, reject) => {
    import('node:http').then(({ request }) => {
      const req = request({ host: '127.0.0.1', port: u.port, path: u.pathname, method: 'POST', headers: { host: 'evil.example', 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end('{"jsonrpc":"2.0","id":6,"method":"ping"}');
    }, reject);
  });
  assert.equal(foreign, 403, 'DNS rebinding: a foreign Host is refused');
  r = await fetch(url.replace(/\/mcp$/, '/other'), { method: 'POST', body: '{}' });
  assert.equal(r.status, 404);

  const after = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call' || /call/i.test(m.method ?? ''));
  assert.equal(after.length, 1, 'still only the one allowed call reached the server');
  // and the proxy still serves
  assert.equal((await client.callTool({ name: 'get_issue', arguments: { repo: 'a', number: 1 } })).isError, undefined);
  assert.ok(existsSync(log));
  // A client that calls before listing: the proxy lists the tools itself, over HTTP, in that session.
  const fresh = await connectHttp(t, url);
  const first = await fresh.callTool({ name: 'get_issue', arguments: { repo: 'a', number: 2 } });
  assert.equal(first.isError, undefined);
  const wrongCase = await fresh.callTool({ name: 'Get_Issue', arguments: { repo: 'a', number: 2 } });
  assert.equal((wrongCase._meta as any)['bridle/decision'].rule, 'mcp.protocol.tool_case');
});

test('http: an answer reaches the client only through the checks: content types by media type, ids exactly', async (t) => {
  const dir = tempDir(t);
  // an upstream whose answers the test chooses: content type, and the id it echoes
  let contentType = 'application/json';
  let echoId: (id: unknown) => unknown = (id) => id;
  const { createServer } = await import('node:http');
  const up = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const m = JSON.parse(body);
      res.writeHead(200, { 'content-type': contentType });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: echoId(m.id), result: {} }));
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', () => r()));
  t.after(() => new Promise<void>((r) => up.close(() => r())));
  const { url } = await startHttpBridle(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, upstream: `http://127.0.0.1:${(up.address() as { port: number }).port}/mcp` });
  let n = 0;
  const ping = async () => {
    const r = await fetch(url, { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: ++n, method: 'ping' }), headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' } });
    return { status: r.status, body: (await r.json()) as any };
  };
  contentType = 'Application/JSON; charset=utf-8';
  let r = await ping();
  assert.deepEqual([r.status, r.body.id, r.body.result], [200, n, {}], 'read as JSON whatever its letter case');
  contentType = 'text/plain';
  r = await ping();
  assert.equal(r.status, 502, 'another type is not passed on unread');
  contentType = 'application/json';
  echoId = (id) => String(id);
  r = await ping();
  assert.equal(r.status, 502, 'an answer under "1" for request 1 is not passed on');
});
