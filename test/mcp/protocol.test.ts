// Fail closed on the wire: malformed JSON-RPC, batches, unknown methods, notifications that carry tool
// calls, oversized messages and parser-differential tricks are refused with a clear error, never reach the
// server (the toy server logs everything it receives), and never stop the proxy.
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { rawProxy, readEvents, tempDir, TOY, until, writePolicy } from './helpers.js';

const POLICY = `
version: 1
name: proto
mcp:
  max_message_bytes: 2048
  servers:
    toy:
      tools:
        allow: [get_issue, list_issues]
        deny: [delete_repository]
`;

function received(log: string): any[] {
  if (!existsSync(log)) return [];
  return readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

test('protocol: malformed input is refused with JSON-RPC errors, reaches nothing, and the proxy keeps working', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const p = rawProxy(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log } });
  await p.initialize();
  const before = received(log).length;

  p.write('{"jsonrpc":"2.0","id":1,"method":"tools/call",\n');
  let m = await p.nextJson();
  assert.equal(m.error.code, -32700);
  assert.equal(m.id, null);
  assert.equal(m.error.data.rule, 'mcp.protocol.parse');

  p.write('not json at all\n');
  assert.equal((await p.nextJson()).error.code, -32700);

  p.send([{ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'get_issue', arguments: { repo: 'a', number: 1 } } }, { jsonrpc: '2.0', id: 3, method: 'ping' }]);
  const b1 = await p.nextJson();
  const b2 = await p.nextJson();
  assert.deepEqual([b1.id, b2.id], [2, 3]);
  assert.equal(b1.error.code, -32600);
  assert.match(b1.error.message, /batches are not accepted/);
  assert.equal(b1.error.data.rule, 'mcp.protocol.batch');

  p.send([]);
  assert.equal((await p.nextJson()).error.data.rule, 'mcp.protocol.batch');

  m = await p.request(4, 'tools/Call', { name: 'delete_repository', arguments: { repo: 'acme/x' } });
  assert.equal(m.error.code, -32601);
  assert.match(m.error.message, /did you mean 'tools\/call'/);

  m = await p.request(5, 'tools/execute', { name: 'delete_repository', arguments: {} });
  assert.equal(m.error.code, -32601);
  assert.equal(m.error.data.rule, 'mcp.protocol.unknown_method');

  p.send({ jsonrpc: '2.0', method: 'tools/call', params: { name: 'delete_repository', arguments: { repo: 'x' } } });
  m = await p.nextJson();
  assert.equal(m.error.code, -32600);
  assert.match(m.error.message, /must be a request with an id/);

  p.send({ jsonrpc: '2.0', method: 'notifications/something_new' });
  p.send({ id: 6, method: 'ping' });
  m = await p.nextJson();
  assert.equal(m.id, 6);
  assert.match(m.error.message, /"jsonrpc" must be "2.0"/);

  for (const [id, msg, re] of [
    [null, { jsonrpc: '2.0', id: null, method: 'tools/call', params: { name: 'get_issue' } }, /id must be a string or a number/],
    [null, { jsonrpc: '2.0', id: { x: 1 }, method: 'ping' }, /id must be a string or a number/],
    [7, { jsonrpc: '2.0', id: 7, method: 'tools/call', params: ['get_issue'] }, /"params" must be an object/],
    [8, { jsonrpc: '2.0', id: 8, method: 'tools/call', params: { arguments: {} } }, /needs params\.name/],
    [9, { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 42 } }, /needs params\.name/],
    [10, { jsonrpc: '2.0', id: 10, method: 7 }, /"method" must be a string/],
    [11, { jsonrpc: '2.0', id: 11, method: 'ping', result: {} }, /cannot carry both/],
    [null, { jsonrpc: '2.0', result: {} }, /must be a response with an id/],
    [null, 42, /must be an object/],
  ] as const) {
    p.send(msg);
    const r = await p.nextJson();
    assert.equal(r.id, id, JSON.stringify(msg));
    assert.match(r.error.message, re, JSON.stringify(msg));
  }

  // Oversized: 3000 bytes against a 2048 limit, in several writes.
  const big = JSON.stringify({ jsonrpc: '2.0', id: 12, method: 'tools/call', params: { name: 'get_issue', arguments: { repo: 'x'.repeat(3000), number: 1 } } });
  p.write(big.slice(0, 1000));
  p.write(big.slice(1000, 2500));
  p.write(big.slice(2500) + '\n');
  m = await p.nextJson();
  assert.equal(m.error.data.rule, 'mcp.protocol.oversized');
  assert.match(m.error.message, /exceeds the limit of 2048 bytes/);

  // Nothing above reached the server; the proxy still serves.
  const ok = await p.request(13, 'tools/call', { name: 'get_issue', arguments: { repo: 'acme/x', number: 1 } });
  assert.match(ok.result.content[0].text, /^get_issue ran/);
  const got = received(log).slice(before);
  assert.deepEqual(got.filter((x) => x.method !== 'tools/list' && x.method !== 'notifications/initialized').map((x) => [x.method, x.id]), [['tools/call', 13]]);

  const ev = await until(() => {
    const e = readEvents(p.events);
    return e.some((x) => x.type === 'tool_call' && x.verdict === 'allow') ? e : undefined;
  });
  assert.ok(ev.some((e) => e.type === 'tool_call' && e.rule === 'mcp.protocol.batch' && e.tool === 'get_issue'));
  assert.ok(ev.some((e) => e.type === 'tool_call' && e.rule === 'mcp.protocol.unknown_method' && e.tool === 'delete_repository'));
  assert.ok(ev.some((e) => e.type === 'violation' && /oversized|exceeds/.test(e.detail)));
});

test('protocol: the server sees exactly what was decided (duplicate keys cannot smuggle another tool name)', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const p = rawProxy(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log } });
  await p.initialize();
  // JSON.parse keeps the last duplicate; a first-wins server would run the first. The proxy decides on
  // the last and forwards its own serialisation, so the server cannot see delete_repository.
  p.write('{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"delete_repository","name":"get_issue","arguments":{"repo":"a","number":1}}}\n');
  const a = await p.waitFor((m) => m.id === 20);
  assert.match(a.result.content[0].text, /^get_issue ran/);
  p.write('{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"get_issue","name":"delete_repository","arguments":{"repo":"a"}}}\n');
  const b = await p.waitFor((m) => m.id === 21);
  assert.equal(b.result.isError, true);
  assert.match(b.result.content[0].text, /tools\.deny\[0\]/);
  p.write('{"jsonrpc":"2.0","id":22,"method":"tools/call","method":"ping"}\n');
  await p.waitFor((m) => m.id === 22);
  const calls = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"id":2'));
  assert.ok(calls.every((l) => !l.includes('delete_repository')), calls.join('\n'));
  assert.equal(calls.filter((l) => l.includes('"id":20')).length, 1);
});

test('protocol: a client hang-up ends the server; a dying server ends the proxy with its status', async (t) => {
  const dir = tempDir(t);
  const p = rawProxy(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, cmd: [process.execPath, TOY] });
  await p.initialize();
  p.child.stdin.end();
  assert.equal(await p.exited, 0);
  const q = rawProxy(t, { policy: writePolicy(dir, POLICY), server: 'toy', dir, cmd: [process.execPath, '-e', 'process.stdin.once("data", () => process.exit(3))'] });
  q.send({ jsonrpc: '2.0', id: 1, method: 'ping' });
  assert.equal(await q.exited, 3);
});
