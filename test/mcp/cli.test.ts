// `bridle mcp` as a command: help that teaches, clear usage errors, policy errors with file:line:col,
// monitor mode end to end, and events on stderr when no --events file is given.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseFlags, parseListen } from '../../src/cli/commands/mcp.js';
import { bridleCmd, connectProxy, LineChild, readEvents, tempDir, TOY, until, writePolicy } from './helpers.js';

function run(t: Parameters<typeof LineChild.spawn>[0], args: string[]): LineChild {
  const { command, args: a } = bridleCmd(args);
  return LineChild.spawn(t, command, a);
}

test('cli: --help shows usage, every flag and an MCP client config example', async (t) => {
  const c = run(t, ['mcp', '--help']);
  assert.equal(await c.exited, 0);
  await until(() => c.lines.length > 10 || undefined);
  const text = c.lines.join('\n');
  for (const s of ['usage: bridle mcp --policy FILE --server NAME', '--listen HOST:PORT', '--upstream URL', '--events FILE', '--pins FILE', '--repin', '--log-level', '"mcpServers"', 'mode: monitor']) {
    assert.ok(text.includes(s), `help lacks ${s}`);
  }
});

test('cli: flag errors are usage errors (exit 2) that say what to do', async (t) => {
  assert.throws(() => parseFlags(['--server', 's', '--', 'x']), /--policy FILE is required/);
  assert.throws(() => parseFlags(['--policy', 'p', '--', 'x']), /--server NAME is required/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's']), /after '--'/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's', '--listen', '127.0.0.1:1']), /needs both --listen/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's', '--listen', '127.0.0.1:1', '--upstream', 'http://x', '--', 'y']), /not both/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's', '--frobnicate', '--', 'x']), /unknown flag '--frobnicate'/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's', 'node', 'server.js']), /unexpected argument 'node'/);
  assert.throws(() => parseFlags(['--policy', 'p', '--server', 's', '--log-level', 'loud', '--', 'x']), /--log-level must be/);
  const f = parseFlags(['--policy=p.yaml', '--server', 's', '--repin', '--', 'node', 'srv.js', '--server', 'x']);
  assert.deepEqual([f.policy, f.server, f.repin, f.command], ['p.yaml', 's', true, ['node', 'srv.js', '--server', 'x']]);
  assert.deepEqual(parseListen('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseListen('[::1]:8931'), { host: '::1', port: 8931 });
  assert.throws(() => parseListen('8931'), /HOST:PORT/);
  const c = run(t, ['mcp', '--policy', 'p.yaml']);
  assert.equal(await c.exited, 2);
  assert.match(c.stderr.text(), /--server NAME is required[\s\S]*bridle mcp --help/);
});

test('cli: an invalid policy is refused with file:line:col before anything starts', async (t) => {
  const dir = tempDir(t);
  const p = writePolicy(dir, 'version: 1\nname: x\nmcp:\n  servers:\n    s:\n      rules:\n        - tool: t\n          when: "args.("\n');
  const c = run(t, ['mcp', '--policy', p, '--server', 's', '--', process.execPath, TOY]);
  assert.equal(await c.exited, 2);
  assert.match(c.stderr.text(), /policy\.yaml:8:17: mcp\.servers\.s\.rules\[0\]\.when: the CEL expression does not compile/);
  assert.doesNotMatch(c.stderr.text(), /MCP server started/);
  const u = run(t, ['mcp', '--policy', p.replace('policy.yaml', 'missing.yaml'), '--server', 's', '--', 'x']);
  assert.equal(await u.exited, 2);
  assert.match(u.stderr.text(), /missing\.yaml:1:1: cannot read policy: ENOENT/);
});

test('cli: monitor mode forwards what it would deny and reports would_deny', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const p = writePolicy(dir, 'version: 1\nname: m\nmode: monitor\nmcp:\n  servers:\n    toy:\n      tools:\n        allow: [get_issue]\n');
  const { client, events } = await connectProxy(t, { policy: p, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log } });
  assert.ok((await client.listTools()).tools.some((x) => x.name === 'delete_repository'), 'monitor mode hides nothing');
  const r = await client.callTool({ name: 'delete_repository', arguments: { repo: 'acme/x' } });
  assert.match((r.content as any)[0].text, /^delete_repository ran/);
  const ev = await until(() => readEvents(events).find((e) => e.type === 'tool_call'));
  assert.equal(ev.verdict, 'would_deny');
  assert.equal(ev.rule, 'mcp.servers.toy.default');
});

test('cli: without --events, tool_call events are log records on stderr (stdout stays the MCP channel)', async (t) => {
  const dir = tempDir(t);
  const p = writePolicy(dir, 'version: 1\nname: l\nmcp:\n  servers:\n    toy:\n      tools:\n        deny: [delete_repository]\n');
  const { command, args } = bridleCmd(['mcp', '--policy', p, '--server', 'toy', '--pins', join(dir, 'pins.json'), '--', process.execPath, TOY]);
  const c = LineChild.spawn(t, command, args, { BRIDLE_SESSION: '77', BRIDLE_EXEC_ID: 'host:1:2' });
  await c.initialize();
  const r = await c.request(1, 'tools/call', { name: 'delete_repository', arguments: { repo: 'x' } });
  assert.equal(r.result.isError, true);
  const rec = await until(() => c.stderr.lines.find((l) => l.msg === 'tool_call'));
  assert.equal(rec.event.type, 'tool_call');
  assert.equal(rec.event.verdict, 'deny');
  assert.equal(rec.event.session, '77');
  assert.equal(rec.event.exec_id, 'host:1:2');
  for (const line of c.lines) JSON.parse(line); // anything left on stdout is JSON-RPC
});
