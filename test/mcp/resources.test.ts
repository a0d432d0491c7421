// Resources through the proxy, end to end (official SDK client → `bridle mcp` → a server that serves files):
// reads and subscriptions are decided by URI (credentials.files.deny for file: URIs, resources.allow/deny),
// listings show only what may be read, and every read is a tool_call event (tool: the method).
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectDirect, connectProxy, readEvents, tempDir, TOY, until, writePolicy } from './helpers.js';

function files(dir: string) {
  const root = join(dir, 'srv');
  mkdirSync(join(root, 'public'), { recursive: true });
  mkdirSync(join(root, 'keys'), { recursive: true });
  writeFileSync(join(root, 'public', 'notes.txt'), 'notes\n');
  writeFileSync(join(root, 'keys', 'id_ed25519'), 'PRIVATE KEY\n');
  symlinkSync(join(root, 'keys', 'id_ed25519'), join(root, 'public', 'innocent.txt'));
  return root;
}

const reads = (log: string) =>
  readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((m) => m.method === 'resources/read' || m.method === 'resources/subscribe').map((m) => m.params.uri);

test('resources: a credential file is not read through a server, by name, traversal or symlink; listings hide it; every read is logged', async (t) => {
  const dir = tempDir(t);
  const root = files(dir);
  const log = join(dir, 'server.log');
  const p = writePolicy(dir, `version: 1
name: r
credentials:
  files:
    deny: [${root}/keys]
mcp:
  servers:
    toy:
      resources:
        deny: ["test://private/*"]
`);
  const env = { TOY_LOG: log, TOY_FILES: root };
  const { client, events } = await connectProxy(t, { policy: p, server: 'toy', dir, cmd: [process.execPath, TOY], env });
  const direct = await connectDirect(t, [process.execPath, TOY], { TOY_FILES: root });

  const listed = (await client.listResources()).resources.map((r) => r.uri).sort();
  assert.deepEqual(listed, [`file://${root}/public/notes.txt`, 'test://public/y'], 'the key, the symlink to it and test://private/* are hidden');
  assert.ok((await direct.listResources()).resources.some((r) => r.uri.endsWith('/keys/id_ed25519')), 'the server itself lists the key');

  const notes = `file://${root}/public/notes.txt`;
  assert.deepEqual(await client.readResource({ uri: notes }), await direct.readResource({ uri: notes }), 'an allowed read is the server\'s answer');

  const denied: Array<[string, RegExp]> = [
    [`file://${root}/keys/id_ed25519`, /credentials\.files\.deny\[0\]/],
    [`file://${root}/public/..%2fkeys/id_ed25519`, /credentials\.files\.deny\[0\]/], // the toy server decodes, then opens
    [`file://${root}/public/%2e%2e/keys/id_ed25519`, /credentials\.files\.deny\[0\]/],
    [`file://localhost${root}/keys/id_ed25519`, /credentials\.files\.deny\[0\]/],
    [`file://${root}/public/innocent.txt`, /credentials\.files\.deny\[0\]/], // a symlink into the key directory
    [`file://${root}/public/%ZZ`, /cannot be judged/],
    ['test://private/x', /mcp\.servers\.toy\.resources\.deny\[0\]/],
    ['TEST://PRIVATE/x', /mcp\.servers\.toy\.resources\.deny\[0\]/],
  ];
  for (const [uri, rule] of denied) {
    await assert.rejects(client.readResource({ uri }), (err: Error) => rule.test(err.message) && /bridle denied resources\/read/.test(err.message), uri);
  }
  await assert.rejects(client.subscribeResource({ uri: `file://${root}/keys/id_ed25519` }), /bridle denied resources\/subscribe/);
  // what the proxy let through, and nothing else, reached the server
  assert.deepEqual(reads(log), [notes]);
  // the same traversal straight to the server reads the key: the denial above is the proxy's doing
  assert.match(JSON.stringify(await direct.readResource({ uri: `file://${root}/public/..%2fkeys/id_ed25519` })), /PRIVATE KEY/);

  const evs = await until(() => {
    const e = readEvents(events).filter((x) => x.type === 'tool_call');
    return e.length === denied.length + 2 ? e : undefined;
  });
  assert.deepEqual(evs.map((e) => [e.tool, e.verdict]), [['resources/read', 'allow'], ...denied.map(() => ['resources/read', 'deny']), ['resources/subscribe', 'deny']]);
  assert.equal(evs[0]!.arguments.uri, notes);
  assert.equal(evs[0]!.rule, 'mcp.servers.toy.resources.default');
  assert.equal(evs[1]!.rule, 'credentials.files.deny[0]');
});

test('resources: an allow list grants a URI only in every form a server could read it', async (t) => {
  const dir = tempDir(t);
  const root = files(dir);
  const log = join(dir, 'server.log');
  const p = writePolicy(dir, `version: 1
name: r
mode: enforce
mcp:
  servers:
    toy:
      resources:
        allow: ["file://${root}/public/*", "test://public/*"]
`);
  const { client, events } = await connectProxy(t, { policy: p, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log, TOY_FILES: root } });
  const listed = (await client.listResources()).resources.map((r) => r.uri).sort();
  assert.deepEqual(listed, [`file://${root}/public/innocent.txt`, `file://${root}/public/notes.txt`, 'test://public/y']);
  assert.match(JSON.stringify(await client.readResource({ uri: `file://${root}/public/notes.txt` })), /notes/);
  for (const uri of [`file://${root}/public/..%2fkeys/id_ed25519`, `file://${root}/public/../keys/id_ed25519`, `file://${root}/keys/id_ed25519`, 'test://private/x']) {
    await assert.rejects(client.readResource({ uri }), /mcp\.servers\.toy\.resources\.default/, uri);
  }
  assert.deepEqual(reads(log), [`file://${root}/public/notes.txt`]);
  const ev = await until(() => readEvents(events).find((e) => e.type === 'tool_call' && e.verdict === 'allow'));
  assert.equal(ev.rule, 'mcp.servers.toy.resources.allow[0]');
});

test('resources: monitor mode reads and lists everything, logging would_deny', async (t) => {
  const dir = tempDir(t);
  const root = files(dir);
  const p = writePolicy(dir, `version: 1
name: r
mode: monitor
credentials:
  files:
    deny: [${root}/keys]
mcp:
  servers:
    toy: {}
`);
  const { client, events } = await connectProxy(t, { policy: p, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_FILES: root } });
  assert.ok((await client.listResources()).resources.some((r) => r.uri.endsWith('/keys/id_ed25519')));
  assert.match(JSON.stringify(await client.readResource({ uri: `file://${root}/keys/id_ed25519` })), /PRIVATE KEY/);
  const ev = await until(() => readEvents(events).find((e) => e.type === 'tool_call'));
  assert.deepEqual([ev.tool, ev.verdict, ev.rule], ['resources/read', 'would_deny', 'credentials.files.deny[0]']);
});

test('resources: a credential path is judged as written and as where it really is; a URI with no scheme that is a path gets the same checks', async (t) => {
  const dir = tempDir(t);
  const root = files(dir);
  const log = join(dir, 'server.log');
  // the policy names the files through a symlink (as ~/ does where /home leads to /var/home), one not there yet
  symlinkSync(root, join(dir, 'home'));
  const p = writePolicy(dir, `version: 1
name: r
credentials:
  files:
    deny: [${dir}/home/keys, ${dir}/home/not-yet]
mcp:
  servers:
    toy: {}
`);
  const { client } = await connectProxy(t, { policy: p, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log, TOY_FILES: root } });
  const listed = (await client.listResources()).resources.map((r) => r.uri).sort();
  assert.deepEqual(listed, [`file://${root}/public/notes.txt`, 'test://private/x', 'test://public/y'], 'the key and the symlink to it are hidden');
  const denied: Array<[string, RegExp]> = [
    [`file://${root}/keys/id_ed25519`, /credentials\.files\.deny\[0\]/], // the real path of what the policy names
    [`file://${root}/not-yet/token`, /credentials\.files\.deny\[1\]/], // beneath the real path of where it would be
    [`${root}/keys/id_ed25519`, /credentials\.files\.deny\[0\]/], // no scheme
    [`${dir}/home/keys/id_ed25519`, /credentials\.files\.deny\[0\]/],
    [`${root}/public/%2e%2e/keys/id_ed25519`, /credentials\.files\.deny\[0\]/],
    [`${root}/public/innocent.txt`, /credentials\.files\.deny\[0\]/], // a symlink into the key directory
  ];
  for (const [uri, rule] of denied) {
    await assert.rejects(client.readResource({ uri }), (err: Error) => rule.test(err.message) && /bridle denied resources\/read/.test(err.message), uri);
  }
  const notes = `file://${root}/public/notes.txt`;
  assert.match(JSON.stringify(await client.readResource({ uri: notes })), /notes/);
  assert.deepEqual(reads(log), [notes], 'nothing denied reached the server');
});
