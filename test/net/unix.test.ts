// unix: rules. A denied named socket cannot be reached under any name: its path as written, the path
// through a symlinked directory (/var/run → /run style), a symlink or hard link the session makes, or a
// relative path. By name the kernel refuses at connect (EPERM); by identity the process that reached it
// is killed before it returns from connect(). Untagged processes are untouched.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect, createServer, type Server } from 'node:net';
import { tempDir } from '../helpers/kernel.js';
import { waitFor } from '../../src/agent/run.js';
import { connects, netHarness, probe, PROBE, unixServer, uringHelper } from './helpers.js';

function untaggedUnix(path: string): Promise<string> {
  return new Promise((res) => {
    const c = connect(path);
    c.on('connect', () => {
      c.destroy();
      res('ok');
    });
    c.on('error', (e: NodeJS.ErrnoException) => res(e.code ?? 'error'));
  });
}

test('unix: a denied socket is refused by name and by identity; others and untagged processes are not', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  mkdirSync(join(dir, 'real'));
  symlinkSync(join(dir, 'real'), join(dir, 'run')); // like /var/run → /run
  const denied = join(dir, 'real', 'daemon.sock');
  const fine = join(dir, 'real', 'fine.sock');
  await unixServer(t, denied);
  await unixServer(t, fine);
  const h = await netHarness(t, `version: 1
name: net-unix
network:
  default: allow
  unix:
    deny: [${join(dir, 'run', 'daemon.sock')}]
`);
  const r = await probe(h, ['unix', join(dir, 'run', 'daemon.sock'), 'unix', denied, 'unix', fine, 'unix', join(dir, 'run', 'fine.sock')]);
  assert.deepEqual(r.results, ['EPERM', 'EPERM', 'ok', 'ok'], 'the rule as written and the real path are refused at connect');
  const ev = connects(r.events).filter((e) => e.family === 'unix');
  const d = ev.find((e) => e.daddr === denied);
  assert.equal(d?.verdict, 'deny');
  assert.equal(d?.rule, 'network.unix.deny[0]');
  assert.equal(ev.find((e) => e.daddr === fine)?.verdict, 'allow');

  // other names of the same socket file: the connect succeeds in the kernel, the process dies at once
  const alias = join(dir, 'alias.sock');
  symlinkSync(denied, alias);
  const hard = join(dir, 'hard.sock');
  linkSync(denied, hard);
  for (const [what, target, cwd] of [
    ['symlink', alias, dir],
    ['hard link', hard, dir],
    ['relative path', 'daemon.sock', join(dir, 'real')],
  ] as const) {
    const run = await h.run(['sh', '-c', `cd '${cwd}' && exec python3 '${PROBE}' unix '${target}' unix '${fine}'`]);
    assert.equal(run.status, 137, `${what}: the process is killed (got ${run.status}: ${run.stdout})`);
    assert.doesNotMatch(run.stdout, /ok/, `${what}: it never got to use the connection`);
    const k = connects(run.events).find((e) => e.family === 'unix' && e.verdict === 'deny');
    assert.equal(k?.rule, 'network.unix.deny[0]', `${what}: reported with the rule`);
  }

  // the same alias through io_uring (no connect(2) call): killed on the completion
  const uring = uringHelper(t);
  assert.ok(uring, 'cc builds the io_uring connect helper');
  const u = await h.run([uring, alias]);
  assert.equal(u.status, 137, `io_uring: the process is killed (got ${u.status}: ${u.stdout})`);
  assert.equal(u.stdout, '');
  assert.equal(connects(u.events).find((e) => e.family === 'unix' && e.verdict === 'deny')?.rule, 'network.unix.deny[0]');
  assert.equal((await h.run([uring, fine])).stdout, 'ok\n', 'io_uring: another socket is reached');

  // untagged: untouched
  assert.equal(await untaggedUnix(denied), 'ok');
  assert.equal(await untaggedUnix(alias), 'ok');
  assert.equal(spawnSync(uring, [alias], { encoding: 'utf8' }).stdout, 'ok\n');
});

test('unix: a denied socket its daemon makes again (a restart: a new socket file) is checked by its new identity within moments', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  const path = join(dir, 'daemon.sock');
  const listen = () =>
    new Promise<Server>((res) => {
      const srv = createServer((c) => {
        c.on('error', () => {}); // the killed client resets it
        c.end('hi\n');
      });
      srv.listen(path, () => res(srv));
    });
  let srv = await listen();
  t.after(() => new Promise<void>((res) => srv.close(() => res())));
  const h = await netHarness(t, `version: 1
name: net-unix-restart
network:
  default: allow
  unix:
    deny: [${path}]
`);
  const before = h.sup.engine.policies.get(1)?.compiled;
  await new Promise<void>((res) => srv.close(() => res())); // the daemon restarts
  srv = await listen();
  assert.ok(await waitFor(() => h.sup.engine.policies.get(1)?.compiled !== before, 5000), 'the policy was applied again');
  const alias = join(dir, 'alias.sock');
  symlinkSync(path, alias);
  const run = await h.run(['python3', PROBE, 'unix', alias]);
  assert.equal(run.status, 137, `the alias of the new socket file is refused (got ${run.status}: ${run.stdout})`);
  assert.equal(await untaggedUnix(alias), 'ok');
});

test('unix: an allow list refuses every other socket, abstract names included', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  const ok = join(dir, 'ok.sock');
  const other = join(dir, 'other.sock');
  await unixServer(t, ok);
  await unixServer(t, other);
  const h = await netHarness(t, `version: 1
name: net-unix-allow
network:
  unix:
    allow: [${ok}, "@bridle-test-allowed"]
`);
  // nothing listens on the allowed abstract name: allowed, the kernel answers ECONNREFUSED
  const r = await probe(h, ['unix', ok, 'unix', other, 'unix', '@bridle-test-abstract', 'unix', '@bridle-test-allowed']);
  assert.deepEqual(r.results, ['ok', 'EPERM', 'EPERM', 'ECONNREFUSED']);
  // unconnected datagrams are decided too (sendmsg_unix)
  const dg = await probe(h, ['unixdg', '@bridle-test-abstract']);
  assert.deepEqual(dg.results, ['EPERM']);
  assert.ok(connects(dg.events).some((e) => e.op === 'sendmsg' && e.daddr === '@bridle-test-abstract' && e.verdict === 'deny'));
  const ab = connects(r.events).find((e) => e.daddr === '@bridle-test-abstract');
  assert.equal(ab?.verdict, 'deny');
  assert.equal(ab?.rule, 'network.default');
});

test('unix: under an allow list, a socket reached under an allowed name must be one of the allowed sockets', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  const ok = join(dir, 'ok.sock');
  const other = join(dir, 'other.sock');
  const later = join(dir, 'later.sock'); // allowed, but nothing there when the policy is applied
  const linked = join(dir, 'linked.sock'); // allowed, a symlink to a socket when the policy is loaded
  await unixServer(t, ok);
  await unixServer(t, other);
  symlinkSync(ok, linked);
  const h = await netHarness(t, `version: 1
name: net-unix-allow-ident
network:
  unix:
    allow: [${ok}, ${later}, ${linked}]
`);
  // a symlink that was there when the policy was loaded leads to an allowed socket (podman's docker.sock)
  assert.deepEqual((await probe(h, ['unix', linked])).results, ['ok']);
  // the session puts a name of another socket at the allowed path: allowed by name, killed by identity
  const run = await h.run(['sh', '-c', `ln -s '${other}' '${later}' && exec python3 '${PROBE}' unix '${later}'`]);
  assert.equal(run.status, 137, `killed (got ${run.status}: ${run.stdout})`);
  const killed = connects(run.events).find((e) => e.family === 'unix' && e.verdict === 'deny' && e.daddr === other);
  assert.equal(killed?.rule, 'network.default', 'reported under the name the socket was bound to');
  rmSync(later);
  // the allowed socket itself, through its own name, still works
  assert.deepEqual((await probe(h, ['unix', ok])).results, ['ok']);
  // a daemon then makes the allowed socket: within moments it is allowed by its identity
  await unixServer(t, later);
  let last = '';
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const r = await h.run(['python3', PROBE, 'unix', later]);
    last = `${r.status} ${r.stdout.trim()}`;
    if (r.status === 0 && r.stdout.trim() === 'ok') break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.equal(last, '0 ok', 'the socket made after the policy was applied is allowed once identified');
});

test('unix: the identity check reads the socket connect() connected, not what its descriptor holds when it returns', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  const denied = join(dir, 'daemon.sock');
  const alias = join(dir, 'alias.sock');
  // a daemon that accepts nothing until told: with a backlog of 0 and one client queued, the next
  // connect blocks until it accepts
  const srv = spawn('python3', ['-c', [
    'import socket, sys, time',
    `s = socket.socket(socket.AF_UNIX); s.bind('${denied}'); s.listen(0)`,
    "print('ready', flush=True)",
    'sys.stdin.readline()',
    'conns = [s.accept(), s.accept()]',
    'time.sleep(30)',
  ].join('\n')], { stdio: ['pipe', 'pipe', 'ignore'] });
  t.after(() => void srv.kill('SIGKILL'));
  await new Promise<void>((res) => srv.stdout!.once('data', () => res()));
  symlinkSync(denied, alias);
  const h = await netHarness(t, `version: 1
name: net-unix-race
network:
  default: allow
  unix:
    deny: [${denied}]
`);
  const queued = connect(denied); // untagged: fills the backlog
  queued.on('error', () => {});
  t.after(() => void queued.destroy());
  await new Promise<void>((res) => queued.once('connect', () => res()));
  // a thread closes the descriptor while connect() waits (a dup of it keeps the socket); then the daemon
  // accepts, and the connect completes on a descriptor number that is empty by then
  const script = [
    'import os, socket, threading, time',
    'sock = socket.socket(socket.AF_UNIX)',
    'fd = sock.fileno(); keep = os.dup(fd)',
    'threading.Thread(target=lambda: (time.sleep(0.4), os.close(fd))).start()',
    'try:',
    `    sock.connect('${alias}')`,
    "    print('connected', flush=True)",
    'except OSError as e:',
    "    print('error', e.errno, flush=True)",
  ].join('\n');
  const run = h.run(['python3', '-c', script]);
  setTimeout(() => srv.stdin!.write('go\n'), 1200);
  const r = await run;
  assert.equal(r.status, 137, `the process is killed, though its descriptor was closed meanwhile (got ${r.status}: ${r.stdout})`);
  assert.ok(connects(r.events).some((e) => e.family === 'unix' && e.verdict === 'deny' && e.rule === 'network.unix.deny[0]'));
});

test('unix: monitor mode reports by name and by identity and kills nothing', async (t) => {
  const dir = tempDir(t, 'bridle-unix-');
  const other = join(dir, 'other.sock');
  await unixServer(t, other);
  const m = await netHarness(t, `version: 1
name: net-unix-monitor
mode: monitor
network:
  unix:
    deny: [${other}]
`);
  const link = join(dir, 'link.sock');
  symlinkSync(other, link);
  const r2 = await probe(m, ['unix', other, 'unix', link]);
  assert.deepEqual(r2.results, ['ok', 'ok']);
  const ev = connects(r2.events).filter((e) => e.family === 'unix');
  assert.equal(ev.filter((e) => e.verdict === 'would_deny').length, 2, 'by name and by identity: both reported');
});
