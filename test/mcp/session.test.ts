// McpSession in process, with a scripted server: what is forwarded, answered, filtered and logged.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { Governor, McpSession } from '../../src/mcp/session.js';
import { MemorySink } from '../../src/mcp/sinks.js';
import { PinStore } from '../../src/mcp/pins.js';
import { parsePolicy } from '../../src/policy/load.js';
import { tempDir } from './helpers.js';

const TOOLS = [
  { name: 'get_issue', inputSchema: { type: 'object' } },
  { name: 'list_issues', inputSchema: { type: 'object' } },
  { name: 'delete_repository', inputSchema: { type: 'object' } },
];

function setup(opts: { mode?: string; answer?: (m: any) => unknown; pins?: PinStore; listTimeoutMs?: number } = {}) {
  const policy = parsePolicy(`version: 1
name: s
mode: ${opts.mode ?? 'enforce'}
mcp:
  servers:
    gh:
      tools:
        allow: [get_issue, "list_*"]
        deny: [delete_repository]
`, 'p.yaml');
  const sink = new MemorySink();
  const gov = new Governor({ policy, server: 'gh', sink, identity: { session: 's1', exec_id: 'e1', pid: 4242 }, listTimeoutMs: opts.listTimeoutMs ?? 2000, ...(opts.pins ? { pins: opts.pins } : {}) });
  const sent: any[] = [];
  // The scripted server answers the proxy's own requests on the next tick.
  const session: McpSession = new McpSession(gov, (json) => {
    const m = JSON.parse(json);
    sent.push(m);
    const r = opts.answer ? opts.answer(m) : { jsonrpc: '2.0', id: m.id, result: { tools: TOOLS } };
    if (r !== undefined) setImmediate(() => session.fromServer(JSON.stringify(r)));
  });
  return { session, sink, sent, gov };
}

const call = (id: unknown, name: string, args: unknown = {}) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });

test('session: a call before any tools/list makes the proxy list the tools itself', async () => {
  const { session, sent, sink } = setup();
  const out = await session.fromClient(call(1, 'get_issue', { n: 1 }));
  assert.equal(sent.length, 1);
  assert.equal(sent[0].method, 'tools/list');
  assert.match(sent[0].id, /^bridle-[0-9a-f]{12}-1$/);
  assert.deepEqual(JSON.parse(out.forward!), { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_issue', arguments: { n: 1 } } });
  assert.equal(session.fromServer('{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'), '{"jsonrpc":"2.0","id":1,"result":{"content":[]}}');
  const ev = sink.events[0]!;
  assert.equal(ev.type, 'tool_call');
  assert.deepEqual(
    { session: ev.session, exec_id: ev.exec_id, pid: ev.pid, verdict: ev.verdict, is_error: (ev as any).is_error },
    { session: 's1', exec_id: 'e1', pid: 4242, verdict: 'allow', is_error: false },
  );
});

test('session: the proxy\'s own answers are not passed to the client', async () => {
  const { session, sent } = setup({ answer: () => undefined });
  const p = session.fromClient(call(1, 'get_issue'));
  await new Promise((r) => setImmediate(r));
  const own = sent[0];
  assert.equal(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: own.id, result: { tools: TOOLS } })), null);
  assert.ok((await p).forward);
});

test('session: a server that cannot list its tools makes calls fail closed', async () => {
  const err = setup({ answer: (m) => ({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: 'nope' } }) });
  let out = await err.session.fromClient(call(1, 'get_issue'));
  assert.equal(out.forward, undefined);
  assert.match(JSON.parse(out.replies[0]!).result.content[0].text, /could not list the server's tools.*nope/);
  const silent = setup({ answer: () => undefined, listTimeoutMs: 50 });
  out = await silent.session.fromClient(call(1, 'get_issue'));
  assert.equal(out.forward, undefined);
  assert.match(JSON.parse(out.replies[0]!).result.content[0].text, /no answer to tools\/list within 50 ms/);
  assert.equal((silent.sink.events[0] as any).rule, 'mcp.error');
});

test('session: tools/list answers are filtered, also page by page', async () => {
  const { session } = setup();
  await session.fromClient(JSON.stringify({ jsonrpc: '2.0', id: 'a', method: 'tools/list' }));
  const out = session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 'a', result: { tools: TOOLS.slice(0, 2), nextCursor: 'p2' } }));
  assert.deepEqual(JSON.parse(out!).result, { tools: TOOLS.slice(0, 2), nextCursor: 'p2' });
  assert.equal(out, JSON.stringify({ jsonrpc: '2.0', id: 'a', result: { tools: TOOLS.slice(0, 2), nextCursor: 'p2' } }), 'unfiltered pages pass byte for byte');
  await session.fromClient(JSON.stringify({ jsonrpc: '2.0', id: 'b', method: 'tools/list', params: { cursor: 'p2' } }));
  const page2 = session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 'b', result: { tools: [TOOLS[2], { name: 'other' }, { nameless: true }] } }));
  assert.deepEqual(JSON.parse(page2!).result.tools, []);
});

test('session: monitor mode lists everything and forwards would_deny calls', async () => {
  const { session, sink } = setup({ mode: 'monitor' });
  const out = await session.fromClient(call(1, 'delete_repository'));
  assert.ok(out.forward);
  session.fromServer('{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}');
  assert.equal(sink.events[0]!.verdict, 'would_deny');
  assert.equal((sink.events[0] as any).is_error, true);
});

test('session: duplicate pending ids are refused; a cancelled call is logged with what the server answers; close logs unanswered calls', async () => {
  const { session, sink } = setup();
  assert.ok((await session.fromClient(call(1, 'get_issue'))).forward);
  const dup = await session.fromClient(call(1, 'list_issues'));
  assert.equal(JSON.parse(dup.replies[0]!).error.data.rule, 'mcp.protocol.duplicate_id');
  const cancel = await session.fromClient(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1 } }));
  assert.ok(cancel.forward);
  // the id stays taken until the server answers (a server may finish a cancelled call)
  assert.equal(JSON.parse((await session.fromClient(call(1, 'list_issues'))).replies[0]!).error.data.rule, 'mcp.protocol.duplicate_id');
  const before = sink.events.length;
  assert.ok(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 1, result: { content: [] } })));
  assert.equal(sink.events.length, before + 1);
  assert.match((sink.events.at(-1) as any).reason, /cancelled by the client/);
  assert.ok((await session.fromClient(call(2, 'list_issues'))).forward);
  session.close('test over');
  assert.match((sink.events.at(-1) as any).reason, /no answer: test over/);
  assert.equal((sink.events.at(-1) as any).tool, 'list_issues');
});

test('session: an answer whose id matches no pending request, or matches only loosely ("6" for 6), is dropped', async () => {
  const { session, sink } = setup();
  assert.ok((await session.fromClient(call(6, 'get_issue'))).forward);
  assert.equal(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: '6', result: { content: [{ type: 'text', text: 'forged' }] } })), null);
  assert.equal(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 999, result: {} })), null);
  assert.ok(sink.events.some((e: any) => e.type === 'violation' && /matched no request/.test(e.detail ?? '')));
  // the real answer still goes through, and is the one logged
  assert.ok(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 6, result: { content: [] } })));
  // answers to other requests the client made pass
  assert.ok((await session.fromClient(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'resources/list', params: {} }))).forward);
  assert.ok(session.fromServer(JSON.stringify({ jsonrpc: '2.0', id: 7, result: { resources: [] } })));
});

test('session: notifications/tools/list_changed makes the next call re-list the tools', async () => {
  let tools = TOOLS;
  const { session, sent } = setup({ answer: (m) => ({ jsonrpc: '2.0', id: m.id, result: { tools } }) });
  assert.ok((await session.fromClient(call(1, 'get_issue'))).forward);
  assert.equal(sent.length, 1);
  assert.ok((await session.fromClient(call(2, 'get_issue'))).forward);
  assert.equal(sent.length, 1, 'no re-list while nothing changed');
  tools = [{ name: 'list_issues', inputSchema: { type: 'object' } }];
  assert.equal(session.fromServer('{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'), '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}');
  const out = await session.fromClient(call(3, 'get_issue'));
  assert.equal(sent.length, 2);
  assert.equal(JSON.parse(out.replies[0]!).result._meta['bridle/decision'].rule, 'mcp.protocol.unknown_tool');
});

test('session: unparsable or batched server output is dropped, not passed on', () => {
  const { session } = setup();
  assert.equal(session.fromServer('garbage'), null);
  assert.equal(session.fromServer('[{"jsonrpc":"2.0","id":1,"result":{}}]'), null);
  assert.equal(session.fromServer('{"jsonrpc":"2.0","method":"notifications/message","params":{}}'), '{"jsonrpc":"2.0","method":"notifications/message","params":{}}');
});

test('session: a pin change found by the proxy\'s own listing blocks the tool and is reported once', async (t) => {
  const dir = tempDir(t);
  const store = join(dir, 'pins.json');
  const first = setup({ pins: new PinStore(store, 'gh') });
  assert.ok((await first.session.fromClient(call(1, 'get_issue'))).forward);
  const changed = TOOLS.map((x) => (x.name === 'get_issue' ? { ...x, description: 'now with exfiltration' } : x));
  const second = setup({ pins: new PinStore(store, 'gh'), answer: (m) => ({ jsonrpc: '2.0', id: m.id, result: { tools: changed } }) });
  const out = await second.session.fromClient(call(1, 'get_issue'));
  assert.equal(JSON.parse(out.replies[0]!).result._meta['bridle/decision'].rule, 'mcp.servers.gh.pin');
  await second.session.fromClient(call(2, 'get_issue'));
  const v = second.sink.events.filter((e) => e.type === 'violation');
  assert.equal(v.length, 1);
  assert.match((v[0] as any).detail, /tool 'get_issue' changed since pinned .*\(description\)/);
});

test('session: a tools/list answer reaches the client as the proxy read it (duplicate keys cannot say two things)', async () => {
  const { session } = setup();
  assert.ok((await session.fromClient(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }))).forward);
  const twoFaced = '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_issue","description":"evil","description":"benign","inputSchema":{"type":"object"}}]}}';
  const out = session.fromServer(twoFaced)!;
  assert.ok(!out.includes('evil'), 'the first of the duplicate keys is not passed on');
  assert.equal(JSON.parse(out).result.tools[0].description, 'benign');
});
