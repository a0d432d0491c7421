// The stdio proxy end to end: `bridle mcp -- server` driven by the official SDK client, against the
// reference "everything" and "filesystem" servers and the toy server (which logs what reaches it).
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connectDirect, connectProxy, EVERYTHING, FILESYSTEM, LineChild, rawProxy, readEvents, tempDir, TOY, until, writePolicy } from './helpers.js';

const everythingPolicy = `
version: 1
name: mcp-test
mcp:
  servers:
    everything:
      tools:
        allow: [echo, "get-*"]
        deny: [get-env]
      redact: [message]
`;

test('stdio: tools/list shows only allowed tools; allowed calls are byte-for-byte equal to direct calls', async (t) => {
  const dir = tempDir(t);
  const policy = writePolicy(dir, everythingPolicy);
  const direct = await connectDirect(t, [process.execPath, EVERYTHING, 'stdio']);
  const { client, events } = await connectProxy(t, { policy, server: 'everything', dir, cmd: [process.execPath, EVERYTHING, 'stdio'] });

  const all = (await direct.listTools()).tools.map((x) => x.name);
  const shown = (await client.listTools()).tools.map((x) => x.name);
  assert.ok(all.includes('get-env') && all.includes('toggle-simulated-logging'), 'the reference server has the tools this test relies on');
  assert.deepEqual(shown, all.filter((n) => n === 'echo' || (n.startsWith('get-') && n !== 'get-env')));

  // Same definitions, byte for byte, for the tools that are shown.
  const directDefs = (await direct.listTools()).tools.filter((x) => shown.includes(x.name));
  assert.equal(JSON.stringify((await client.listTools()).tools), JSON.stringify(directDefs));

  for (const [name, args] of [['echo', { message: 'hello' }], ['get-sum', { a: 2, b: 40 }], ['get-tiny-image', {}], ['get-structured-content', { location: 'New York' }]] as const) {
    const viaProxy = await client.callTool({ name, arguments: args });
    const viaDirect = await direct.callTool({ name, arguments: args });
    assert.equal(JSON.stringify(viaProxy), JSON.stringify(viaDirect), `${name} result differs through the proxy`);
  }

  const ev = await until(() => {
    const e = readEvents(events).filter((x) => x.type === 'tool_call');
    return e.length >= 4 ? e : undefined;
  });
  const echo = ev.find((e) => e.tool === 'echo')!;
  assert.equal(echo.verdict, 'allow');
  assert.equal(echo.rule, 'mcp.servers.everything.tools.allow[0]');
  assert.equal(echo.server, 'everything');
  assert.deepEqual(echo.arguments, { message: '[redacted]' }, 'redact: [message] hides the value in events');
  assert.equal(echo.is_error, false);
  assert.equal(typeof echo.latency_ms, 'number');
  assert.equal(echo.session, '');
  assert.equal(echo.exec_id, '');
  assert.equal(typeof echo.pid, 'number');
  assert.equal(echo.policy, 'mcp-test');
});

test('stdio: a denied call is refused with the rule that denied it, and never reaches the server', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const policy = writePolicy(dir, `
version: 1
name: t
mcp:
  servers:
    toy:
      tools:
        allow: [get_issue, "list_*"]
        deny: [delete_repository]
`);
  const { client, events } = await connectProxy(t, { policy, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log } });
  const shown = (await client.listTools()).tools.map((x) => x.name);
  assert.deepEqual(shown, ['get_issue', 'list_issues']);

  const denied = await client.callTool({ name: 'delete_repository', arguments: { repo: 'acme/x' } });
  assert.equal(denied.isError, true);
  const text = (denied.content as { text: string }[])[0]!.text;
  assert.match(text, /mcp\.servers\.toy\.tools\.deny\[0\]/);
  assert.match(text, /not sent to the server/);
  assert.equal((denied._meta as any)['bridle/decision'].rule, 'mcp.servers.toy.tools.deny[0]');

  const byDefault = await client.callTool({ name: 'create_issue', arguments: { repo: 'acme/x', title: 't' } });
  assert.equal(byDefault.isError, true);
  assert.equal((byDefault._meta as any)['bridle/decision'].rule, 'mcp.servers.toy.default');

  const ok = await client.callTool({ name: 'get_issue', arguments: { repo: 'acme/x', number: 1 } });
  assert.equal(ok.isError, undefined);
  assert.match((ok.content as { text: string }[])[0]!.text, /^get_issue ran/);

  const calls = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call');
  assert.deepEqual(calls.map((m) => m.params.name), ['get_issue'], 'only the allowed call reached the server');

  const ev = readEvents(events).filter((e) => e.type === 'tool_call');
  const del = ev.find((e) => e.tool === 'delete_repository')!;
  assert.equal(del.verdict, 'deny');
  assert.equal(del.rule, 'mcp.servers.toy.tools.deny[0]');
  assert.deepEqual(del.arguments, { repo: 'acme/x' });
});

test('stdio: tool names in other letter cases or Unicode forms are refused (the server would accept them)', async (t) => {
  const dir = tempDir(t);
  const log = join(dir, 'toy.log');
  const policy = writePolicy(dir, `
version: 1
name: t
mcp:
  servers:
    toy:
      default: allow
      tools:
        deny: [delete_repository]
`);
  const { client } = await connectProxy(t, { policy, server: 'toy', dir, cmd: [process.execPath, TOY], env: { TOY_LOG: log } });
  for (const name of ['DELETE_REPOSITORY', 'Delete_Repository', 'ｄｅｌｅｔｅ_repository', 'GET_ISSUE']) {
    const r = await client.callTool({ name, arguments: { repo: 'acme/x', number: 1 } });
    assert.equal(r.isError, true, name);
    assert.equal((r._meta as any)['bridle/decision'].rule, 'mcp.protocol.tool_case', name);
  }
  const calls = readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((m) => m.method === 'tools/call');
  assert.equal(calls.length, 0, 'no case variant reached the server');
  // Without the proxy the evasion works: the toy server resolves names case-insensitively.
  const direct = await connectDirect(t, [process.execPath, TOY]);
  const r = await direct.callTool({ name: 'DELETE_REPOSITORY', arguments: { repo: 'acme/x' } });
  assert.match((r.content as { text: string }[])[0]!.text, /^delete_repository ran/);
});

test('stdio: the filesystem server: a denied write does not happen, an allowed read returns what a direct call returns', async (t) => {
  const dir = tempDir(t);
  const work = join(dir, 'work');
  mkdirSync(work);
  writeFileSync(join(work, 'a.txt'), 'alpha\n');
  const policy = writePolicy(dir, `
version: 1
name: t
mcp:
  servers:
    fs:
      tools:
        allow: [read_text_file, list_directory, list_allowed_directories]
        deny: ["write_*", "edit_*", move_file, create_directory]
`);
  const { client } = await connectProxy(t, { policy, server: 'fs', dir, cmd: [process.execPath, FILESYSTEM, work] });
  const direct = await connectDirect(t, [process.execPath, FILESYSTEM, work]);
  const shown = (await client.listTools()).tools.map((x) => x.name).sort();
  assert.deepEqual(shown, ['list_allowed_directories', 'list_directory', 'read_text_file']);

  const w = await client.callTool({ name: 'write_file', arguments: { path: join(work, 'evil.txt'), content: 'x' } });
  assert.equal(w.isError, true);
  assert.equal(existsSync(join(work, 'evil.txt')), false, 'the denied write_file did not run');

  const a = await client.callTool({ name: 'read_text_file', arguments: { path: join(work, 'a.txt') } });
  const b = await direct.callTool({ name: 'read_text_file', arguments: { path: join(work, 'a.txt') } });
  assert.equal(JSON.stringify(a), JSON.stringify(b));
  assert.match(JSON.stringify(a), /alpha/);
});

test('stdio: raw bytes of an allowed answer are identical to the server\'s own', async (t) => {
  const dir = tempDir(t);
  const policy = writePolicy(dir, everythingPolicy);
  const proxy = rawProxy(t, { policy, server: 'everything', dir, cmd: [process.execPath, EVERYTHING, 'stdio'] });
  const direct = LineChild.spawn(t, process.execPath, [EVERYTHING, 'stdio']);
  await proxy.initialize();
  await direct.initialize();
  const call = { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'get-sum', arguments: { a: 1.5, b: 2 } } };
  proxy.send(call);
  direct.send(call);
  const viaProxy = await proxy.waitFor((m) => m.id === 7);
  const viaDirect = await direct.waitFor((m) => m.id === 7);
  assert.deepEqual(viaProxy, viaDirect);
  // waitFor parses; compare the raw text too
  proxy.send({ ...call, id: 8 });
  direct.send({ ...call, id: 8 });
  const rawP = await until(() => proxy.lines.find((l) => l.includes('"id":8')));
  const rawD = await until(() => direct.lines.find((l) => l.includes('"id":8')));
  assert.equal(rawP, rawD);
});

test('stdio: the exit status is the server\'s, and a missing command is a clear error', async (t) => {
  const dir = tempDir(t);
  const policy = writePolicy(dir, everythingPolicy);
  const p = rawProxy(t, { policy, server: 'everything', dir, cmd: [process.execPath, '-e', 'process.exit(7)'] });
  assert.equal(await p.exited, 7);
  const q = rawProxy(t, { policy, server: 'everything', dir, cmd: ['/nonexistent/mcp-server'] });
  assert.equal(await q.exited, 127);
  assert.match(q.stderr.text(), /cannot run '\/nonexistent\/mcp-server'/);
});

test('stdio: argument conditions on the filesystem server: paths outside the work dir are refused before the server sees them', async (t) => {
  const dir = tempDir(t);
  const work = join(dir, 'work');
  mkdirSync(work);
  writeFileSync(join(work, 'a.txt'), 'alpha\n');
  writeFileSync(join(dir, 'secret.txt'), 'top secret\n');
  const policy = writePolicy(dir, `
version: 1
name: t
mcp:
  servers:
    fs:
      tools:
        allow: [read_text_file, read_multiple_files, write_file]
      rules:
        - tool: ["read_*", write_file]
          args:
            path: { under: ${work}, optional: true }
            paths: { under: ${work}, optional: true }
        - tool: write_file
          when: "size(args.content) <= 16 && !args.path.endsWith('.sh')"
`);
  // The server itself allows all of dir, so only the proxy's rule keeps secret.txt out.
  const { client, events } = await connectProxy(t, { policy, server: 'fs', dir, cmd: [process.execPath, FILESYSTEM, dir] });
  const ok = await client.callTool({ name: 'read_text_file', arguments: { path: join(work, 'a.txt') } });
  assert.match(JSON.stringify(ok.content), /alpha/);
  for (const path of [join(dir, 'secret.txt'), `${work}/../secret.txt`, 'secret.txt']) {
    const r = await client.callTool({ name: 'read_text_file', arguments: { path } });
    assert.equal(r.isError, true, path);
    assert.doesNotMatch(JSON.stringify(r.content), /top secret/);
    assert.equal((r._meta as any)['bridle/decision'].rule, 'mcp.servers.fs.rules[0]');
  }
  const many = await client.callTool({ name: 'read_multiple_files', arguments: { paths: [join(work, 'a.txt'), join(dir, 'secret.txt')] } });
  assert.equal(many.isError, true);
  const long = await client.callTool({ name: 'write_file', arguments: { path: join(work, 'b.txt'), content: 'x'.repeat(17) } });
  assert.equal((long._meta as any)['bridle/decision'].rule, 'mcp.servers.fs.rules[1]');
  const sh = await client.callTool({ name: 'write_file', arguments: { path: join(work, 'run.sh'), content: 'rm -rf /' } });
  assert.equal(sh.isError, true);
  assert.equal(existsSync(join(work, 'run.sh')), false);
  const good = await client.callTool({ name: 'write_file', arguments: { path: join(work, 'b.txt'), content: 'short' } });
  assert.equal(good.isError, undefined);
  assert.equal(readFileSync(join(work, 'b.txt'), 'utf8'), 'short');
  const schema = await client.callTool({ name: 'read_text_file', arguments: { path: join(work, 'a.txt'), head: 'ten' } });
  assert.equal((schema._meta as any)['bridle/decision'].rule, 'mcp.servers.fs.schema');
  const ev = await until(() => {
    const e = readEvents(events).filter((x) => x.type === 'tool_call');
    return e.length >= 9 ? e : undefined;
  });
  assert.deepEqual(ev.map((e) => e.verdict), ['allow', 'deny', 'deny', 'deny', 'deny', 'deny', 'deny', 'allow', 'deny']);
});
