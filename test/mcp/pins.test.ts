// Tool-definition pinning: first sight pins, a later change (rug pull) is reported and blocked per policy,
// --repin accepts it. End to end with the toy server, which changes `fetch_url` between runs.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { canonicalJson, PinStore, pinOf } from '../../src/mcp/pins.js';
import { bridleCmd, connectProxy, LineChild, readEvents, tempDir, TOY, until, writePolicy } from './helpers.js';

const policy = (pin: string) => `
version: 1
name: pins
mcp:
  servers:
    toy:
      default: allow
      pin: ${pin}
      tools:
        deny: [delete_repository]
`;

test('pins: digests ignore key order; the store keeps other servers and survives restarts', (t) => {
  const dir = tempDir(t);
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } }), '{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}');
  assert.equal(pinOf({ name: 't', inputSchema: { a: 1, b: 2 } }).sha256, pinOf({ inputSchema: { b: 2, a: 1 }, name: 't' }).sha256);
  assert.equal(pinOf({ name: 't', _meta: { x: 1 } }).sha256, pinOf({ name: 't' }).sha256, '_meta is not pinned');
  const path = join(dir, 'p.json');
  new PinStore(path, 'one').observe([{ name: 'a', description: 'A' }]);
  new PinStore(path, 'two').observe([{ name: 'a', description: 'other server' }]);
  const obs = new PinStore(path, 'one').observe([{ name: 'a', description: 'B' }]);
  assert.deepEqual(obs.changed.map((c) => [c.tool, c.fields]), [['a', ['description']]]);
  assert.equal(new PinStore(path, 'two').observe([{ name: 'a', description: 'other server' }]).changed.length, 0);
  writeFileSync(path, '{oops');
  assert.throws(() => new PinStore(path, 'one'), /not valid JSON.*fix or remove it/);
});

test('pins: tools named like Object.prototype members are pinned like any other, and do not switch pinning off', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'p.json');
  const names = ['toString', 'constructor', '__proto__', 'hasOwnProperty'];
  const first = new PinStore(path, 'one').observe([...names.map((name) => ({ name, description: 'A' })), { name: 'run', description: 'benign' }]);
  assert.deepEqual(first.added, [...names, 'run']);
  const again = new PinStore(path, 'one').observe([...names.map((name) => ({ name, description: 'B' })), { name: 'run', description: 'EVIL' }]);
  assert.deepEqual(again.changed.map((c) => c.tool), [...names, 'run'], 'each change is seen after a restart');
  assert.equal(again.saveError, undefined);
});

test('pins: a rug pull blocks the changed tool (pin: block), is reported, and --repin accepts it', async (t) => {
  const dir = tempDir(t);
  const file = writePolicy(dir, policy('block'));
  const log = join(dir, 'toy.log');

  // Run 1: definitions pinned on first sight.
  {
    const { client } = await connectProxy(t, { policy: file, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_VARIANT: 'a' } });
    const names = (await client.listTools()).tools.map((x) => x.name);
    assert.ok(names.includes('fetch_url'));
    await client.close();
  }
  const store = JSON.parse(readFileSync(join(dir, 'pins.json'), 'utf8'));
  assert.equal(store.servers.toy.tools.fetch_url.definition.description, 'Fetch a URL.');

  // Run 2: the server changed fetch_url's description and schema.
  {
    const { client, events } = await connectProxy(t, { policy: file, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_VARIANT: 'b', TOY_LOG: log } });
    const names = (await client.listTools()).tools.map((x) => x.name);
    assert.ok(!names.includes('fetch_url'), 'the changed tool is hidden');
    assert.ok(names.includes('get_issue'), 'unchanged tools stay');
    const r = await client.callTool({ name: 'fetch_url', arguments: { url: 'https://example.com', note: 'secret' } });
    assert.equal(r.isError, true);
    assert.equal((r._meta as any)['bridle/decision'].rule, 'mcp.servers.toy.pin');
    assert.match((r.content as any)[0].text, /changed since it was pinned \(description, inputSchema changed/);
    const ev = await until(() => {
      const e = readEvents(events);
      return e.some((x) => x.type === 'violation') && e.some((x) => x.type === 'tool_call') ? e : undefined;
    });
    const v = ev.filter((e) => e.type === 'violation');
    assert.equal(v.length, 1, 'reported once');
    assert.equal(v[0]!.what, 'mcp_tool_changed');
    assert.match(v[0]!.detail, /tool 'fetch_url' changed since pinned/);
    const calls = readFileSync(log, 'utf8').split('\n').filter((l) => l.includes('"tools/call"'));
    assert.equal(calls.length, 0, 'the blocked call never reached the server');
    await client.close();
  }

  // Run 3: --repin accepts the new definition.
  {
    const { client } = await connectProxy(t, { policy: file, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_VARIANT: 'b' }, flags: ['--repin'] });
    assert.ok((await client.listTools()).tools.some((x) => x.name === 'fetch_url'));
    await client.close();
  }
  const after = JSON.parse(readFileSync(join(dir, 'pins.json'), 'utf8'));
  assert.match(after.servers.toy.tools.fetch_url.definition.description, /IMPORTANT/);
});

test('pins: pin: report shows and allows the changed tool but reports the change', async (t) => {
  const dir = tempDir(t);
  const file = writePolicy(dir, policy('report'));
  {
    const { client } = await connectProxy(t, { policy: file, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_VARIANT: 'a' } });
    await client.listTools();
    await client.close();
  }
  const { client, events } = await connectProxy(t, { policy: file, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_VARIANT: 'b' } });
  assert.ok((await client.listTools()).tools.some((x) => x.name === 'fetch_url'));
  const r = await client.callTool({ name: 'fetch_url', arguments: { url: 'u' } });
  assert.equal(r.isError, undefined);
  const ev = await until(() => {
    const e = readEvents(events);
    return e.some((x) => x.type === 'tool_call') ? e : undefined;
  });
  assert.ok(ev.some((e) => e.type === 'violation' && /reported only/.test(e.detail)));
});

test('pins: a corrupt pin store stops the proxy before it starts the server, with a clear message', async (t) => {
  const dir = tempDir(t);
  const file = writePolicy(dir, policy('block'));
  writeFileSync(join(dir, 'pins.json'), 'not json');
  const { command, args } = bridleCmd(['mcp', '--policy', file, '--server', 'toy', '--pins', join(dir, 'pins.json'), '--', process.execPath, TOY]);
  const c = LineChild.spawn(t, command, args);
  assert.equal(await c.exited, 1);
  assert.match(c.stderr.text(), /pin store .*pins\.json is not valid JSON/);
});
