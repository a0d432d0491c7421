// Exec policy decided in the real kernel, for tagged sessions only.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { alive, harness, stopRuleWatches, tempDir, violations, writeExecutable } from '../helpers/kernel.js';
import { killPid } from '../helpers/proc.js';
import type { ExecEvent } from '../../src/events/types.js';
import { getDumpable } from '../../src/kernel/binding.js';
import { waitFor } from '../../src/agent/run.js';

const KILLED = 128 + 9;

/** A policy that allows every program but those `rules` (YAML flow items) deny. */
const denying = (rules: string): string => `version: 1
name: t
exec:
  default: allow
  deny: [${rules}]
`;

test('a denied exec is killed and reported with its rule; an allowed one runs', async (t) => {
  const h = harness(t, `version: 1
name: t
exec:
  default: allow
  deny:
    - path: /usr/bin/wget
`);
  const r = await h.run(['sh', '-c', 'id -u; wget --version >/dev/null; echo "wget=$?"']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^0\nwget=137\n$/);
  const wget = r.events.find((e): e is ExecEvent => e.type === 'exec' && e.path === '/usr/bin/wget');
  assert.ok(wget, 'exec event for wget');
  assert.equal(wget.verdict, 'deny');
  assert.equal(wget.rule, 'exec.deny[0]');
  assert.deepEqual(wget.argv, ['wget', '--version']);
  const id = r.events.find((e): e is ExecEvent => e.type === 'exec' && e.path === '/usr/bin/id');
  assert.equal(id?.verdict, 'allow');
  const exit = r.events.find((e) => e.type === 'exit' && e.exec_id === wget.exec_id);
  assert.equal((exit as { signal?: number } | undefined)?.signal, 9, 'wget exit reports SIGKILL');
  assert.ok(r.events.some((e) => e.type === 'session_start'));
  assert.ok(r.events.some((e) => e.type === 'session_end'));
});

test('untagged processes are never touched, even while a session with the same rule runs', async (t) => {
  const h = harness(t, `version: 1
name: t
exec:
  default: deny
  deny: [{ path: /usr/bin/wget }]
`);
  const session = h.run(['sh', '-c', 'sleep 0.5']);
  // outside any session: default deny and the wget rule must not apply
  const out = spawnSync('/usr/bin/wget', ['--version'], { encoding: 'utf8' });
  assert.equal(out.status, 0, 'untagged wget runs');
  assert.equal(spawnSync('/usr/bin/true').status, 0);
  await session;
  assert.ok(!h.execs((e) => e.pid === out.pid).length, 'no events for untagged processes');
});

test('the tag is inherited through double fork, setsid, threads and reparenting', async (t) => {
  const h = harness(t, denying('{ path: /usr/bin/wget }'));
  const dir = tempDir(t);
  const out = join(dir, 'out');
  const r = await h.run([
    'sh',
    '-c',
    // double fork + setsid: the grandchild is reparented to init, outside the shell's wait
    `(setsid sh -c 'wget --version >/dev/null 2>&1; echo "setsid=$?" >> ${out}' &) ; ` +
      // a thread of a process execs: python's thread calls os.system
      `python3 -c "import os,threading; r=[]; th=threading.Thread(target=lambda: r.append(os.system('wget --version >/dev/null 2>&1'))); th.start(); th.join(); print('thread=%d' % (r[0]>>8 if r[0]>>8 else 128 + (r[0]&0x7f)))" >> ${out}; ` +
      `sleep 0.5`,
  ]);
  assert.equal(r.status, 0);
  const text = (await import('node:fs')).readFileSync(out, 'utf8');
  assert.match(text, /setsid=137/);
  assert.match(text, /thread=137/);
  const denied = h.execs((e) => e.path === '/usr/bin/wget');
  assert.equal(denied.length, 2);
  assert.ok(denied.every((e) => e.verdict === 'deny'));
});

test('hard links, symlinks and the loader trick cannot run a file denied by identity', async (t) => {
  const dir = tempDir(t);
  const bin = join(dir, 'denied');
  copyFileSync('/usr/bin/id', bin);
  linkSync(bin, join(dir, 'hardlink'));
  symlinkSync(bin, join(dir, 'symlink'));
  const h = harness(t, denying(`{ path: ${bin} }`));
  const loader = ['/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'].find((p) => spawnSync('test', ['-e', p]).status === 0)!;
  const r = await h.run([
    'sh',
    '-c',
    `${bin}; echo "direct=$?"; ${dir}/hardlink; echo "hard=$?"; ${dir}/symlink; echo "sym=$?"; ${loader} ${bin}; echo "loader=$?"; ${loader} /usr/bin/true; echo "loader-ok=$?"`,
  ]);
  assert.equal(r.stdout, `direct=${KILLED}\nhard=${KILLED}\nsym=${KILLED}\nloader=${KILLED}\nloader-ok=0\n`);
  const viaLoader = h.execs((e) => e.via_loader === true && e.verdict === 'deny');
  assert.equal(viaLoader.length, 1, 'the loader-run program is reported');
  assert.equal(viaLoader[0]!.rule, 'exec.deny[0]');
});

test('a copy of an allowed binary outside the allowlist is denied by default', async (t) => {
  const dir = tempDir(t);
  copyFileSync('/usr/bin/id', join(dir, 'id-copy'));
  const h = harness(t, `version: 1
name: t
exec:
  default: deny
  allow: [{ dir: /usr }]
`);
  const r = await h.run(['sh', '-c', `/usr/bin/id -u; ${dir}/id-copy -u; echo "copy=$?"`]);
  assert.equal(r.stdout, `0\ncopy=${KILLED}\n`);
  const copy = h.execs((e) => e.path === join(dir, 'id-copy'))[0];
  assert.equal(copy?.verdict, 'deny');
  assert.equal(copy?.rule, 'exec.default');
  assert.equal(h.execs((e) => e.path === '/usr/bin/id')[0]?.rule, 'exec.allow[0]');
});

test('an allowed path: file replaced by root (an upgrade) is followed; one swapped in by another user is not', async (t) => {
  const dir = tempDir(t); // root's, mode 0700: only root can put files in it
  const tool = join(dir, 'tool');
  copyFileSync('/usr/bin/true', tool);
  const h = harness(t, `version: 1
name: t
exec:
  default: deny
  allow: [{ dir: /usr }, { path: ${tool} }]
`);
  const runs = async () => (await h.run([tool])).status;
  assert.equal(await runs(), 0);
  // an upgrade: a new file renamed over the old one, as package managers do
  const replace = (owner?: number) => {
    copyFileSync('/usr/bin/true', `${tool}.new`);
    if (owner !== undefined) spawnSync('chown', [String(owner), `${tool}.new`]);
    renameSync(`${tool}.new`, tool);
  };
  replace();
  let status = -1;
  for (let i = 0; i < 50 && status !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    status = await runs();
  }
  assert.equal(status, 0, 'the upgraded file runs once the policy compiled again');
  // a file another user owns put at the path: not what the policy allowed, then or after
  replace(65534);
  await new Promise((r) => setTimeout(r, 600)); // the policy compiles again meanwhile
  assert.equal(await runs(), KILLED);
  assert.equal(h.execs((e) => e.path === tool).at(-1)?.rule, 'exec.default');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await runs(), KILLED, 'still denied after later compiles');
});

test('what is put at a denied path later is denied; dir: rules hold through hard links, bind mounts of a subdirectory and any depth', async (t) => {
  const dir = tempDir(t);
  const denied = join(dir, 'denied');
  mkdirSync(join(denied, 'sub'), { recursive: true });
  mkdirSync(join(dir, 'out'));
  mkdirSync(join(dir, 'mnt'));
  const tool = join(dir, 'tool');
  copyFileSync('/usr/bin/true', tool);
  copyFileSync('/usr/bin/true', join(denied, 'linked'));
  const h = harness(t, denying(`{ path: ${tool} }, { dir: ${denied} }`));
  stopRuleWatches(h.sup); // what follows is decided by the rules the kernel holds, not by a new compile
  // A hard link to a file of the denied directory, from outside it.
  linkSync(join(denied, 'linked'), join(dir, 'out', 'linked'));
  // Put in a subdirectory after the policy was applied, and run through a bind mount of that subdirectory.
  copyFileSync('/usr/bin/true', join(denied, 'sub', 'prog'));
  // Deeper than dir: rules look (256): beneath the denied directory, and beneath one no rule names.
  const deep = (base: string, levels: number): string => {
    const d = join(base, ...Array<string>(levels).fill('d'));
    mkdirSync(d, { recursive: true });
    copyFileSync('/usr/bin/true', join(d, 'prog'));
    return join(d, 'prog');
  };
  const deep100 = deep(denied, 100);
  const deep300 = deep(join(dir, 'free'), 300);
  copyFileSync('/usr/bin/true', join(dir, 'free', 'prog'));
  // An upgrade: a new file (a new inode) renamed over the denied one.
  copyFileSync('/usr/bin/true', `${tool}.new`);
  renameSync(`${tool}.new`, tool);
  const r = await h.run(['sh', '-c', [
    `${tool}; echo "replaced=$?"`,
    `${dir}/out/linked; echo "hardlink=$?"`,
    `unshare -m sh -c 'mount --bind ${denied}/sub ${dir}/mnt && ${dir}/mnt/prog'; echo "bind=$?"`,
    `${deep100}; echo "deep100=$?"`,
    `${deep300}; echo "deep300=$?"`,
    `${dir}/free/prog; echo "free=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `replaced=${KILLED}\nhardlink=${KILLED}\nbind=${KILLED}\ndeep100=${KILLED}\ndeep300=${KILLED}\nfree=0\n`);
  const denials = r.events.filter((e): e is ExecEvent => e.type === 'exec' && e.verdict === 'deny');
  assert.deepEqual(denials.map((e) => e.rule), ['exec.deny[0]', 'exec.deny[1]', 'exec.deny[1]', 'exec.deny[1]', 'builtin.dir_depth']);
  // untagged processes run the same files
  for (const f of [tool, deep300, join(dir, 'out', 'linked')]) assert.equal(spawnSync(f).status, 0, f);
});

test('a mount a session makes in its own mount namespace puts nothing under an allowed directory', async (t) => {
  const dir = tempDir(t);
  const allowed = join(dir, 'allowed');
  mkdirSync(allowed);
  copyFileSync('/usr/bin/true', join(allowed, 'ok'));
  const evil = join(dir, 'evil');
  copyFileSync('/usr/bin/true', evil);
  const h = harness(t, `version: 1
name: t
exec:
  default: deny
  allow: [{ dir: /usr }, { dir: ${allowed} }]
`);
  const r = await h.run(['sh', '-c', [
    `${allowed}/ok; echo "ok=$?"`,
    // the file mounted over an allowed name is not in the allowed directory
    `unshare -m sh -c 'mount --bind ${evil} ${allowed}/ok && ${allowed}/ok'; echo "bound=$?"`,
    // and a program of an allowed directory still runs inside such a namespace
    `unshare -m sh -c 'mount --bind ${evil} ${allowed}/ok && /usr/bin/true'; echo "inside=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `ok=0\nbound=${KILLED}\ninside=0\n`);
  const denied = r.events.filter((e): e is ExecEvent => e.type === 'exec' && e.verdict === 'deny');
  assert.deepEqual(denied.map((e) => e.rule), ['exec.default']);
});

test('a file system mounted beneath a denied directory stays denied when the session bind mounts it elsewhere', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-test-'));
  const denied = join(dir, 'denied');
  const vault = join(denied, 'vault');
  t.after(() => {
    spawnSync('umount', ['-l', vault]); // before the directory holding it goes
    rmSync(dir, { recursive: true, force: true });
  });
  mkdirSync(vault, { recursive: true });
  mkdirSync(join(dir, 'v'));
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', 'bridle-test', vault]).status, 0, 'mount a tmpfs for the test');
  const h = harness(t, denying(`{ dir: ${denied} }`));
  copyFileSync('/usr/bin/true', join(vault, 'prog')); // after: not among the files entered by identity
  const r = await h.run(['sh', '-c', [
    `${vault}/prog; echo "direct=$?"`,
    `unshare -m sh -c 'mount --bind ${vault} ${dir}/v && ${dir}/v/prog'; echo "bound=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `direct=${KILLED}\nbound=${KILLED}\n`);
  assert.deepEqual(r.events.filter((e): e is ExecEvent => e.type === 'exec' && e.verdict === 'deny').map((e) => e.rule), ['exec.deny[0]', 'exec.deny[0]']);
});

test('a denied program run through an overlay the session mounts is the file beneath it', async (t) => {
  const dir = tempDir(t);
  const denied = join(dir, 'denied');
  mkdirSync(denied);
  mkdirSync(join(dir, 'empty'));
  mkdirSync(join(dir, 'view'));
  const h = harness(t, denying(`{ dir: ${denied} }, { path: /usr/bin/wget }`));
  copyFileSync('/usr/bin/true', join(denied, 'prog')); // after: not among the files entered by identity
  const overlay = (lower: string, run: string) =>
    `unshare -m sh -c 'mount -t overlay overlay -o lowerdir=${lower}:${dir}/empty ${dir}/view && ${run}'`;
  const r = await h.run(['sh', '-c', [
    `${overlay(denied, `${dir}/view/prog`)}; echo "dir=$?"`,
    `${overlay('/usr/bin', `${dir}/view/wget --version >/dev/null`)}; echo "path=$?"`,
    `${overlay('/usr/bin', `${dir}/view/true`)}; echo "other=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `dir=${KILLED}\npath=${KILLED}\nother=0\n`);
  assert.deepEqual(r.events.filter((e): e is ExecEvent => e.type === 'exec' && e.verdict === 'deny').map((e) => e.rule), ['exec.deny[0]', 'exec.deny[1]']);
});

test('path:, dir: and credential rules naming files on an overlay hold for the overlay file and for the file beneath it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-test-'));
  const lower = join(dir, 'lower');
  const merged = join(dir, 'merged');
  t.after(() => {
    // before the directories holding it go; lazily when something still holds it
    if (spawnSync('umount', [merged]).status !== 0) spawnSync('umount', ['-l', merged]);
    rmSync(dir, { recursive: true, force: true });
  });
  for (const d of ['lower/bin', 'lower/denied', 'lower/ok', 'upper', 'work', 'merged']) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync('/usr/bin/true', join(lower, 'bin', 'tool'));
  copyFileSync('/usr/bin/true', join(lower, 'denied', 'tool2'));
  copyFileSync('/usr/bin/true', join(lower, 'ok', 'free'));
  writeFileSync(join(lower, 'secret'), 'TOKEN\n');
  const mounted = spawnSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work`, merged]);
  assert.equal(mounted.status, 0, `mount an overlay for the test: ${mounted.stderr}`);
  const h = harness(t, `version: 1
name: t
exec:
  default: allow
  deny: [{ path: ${merged}/bin/tool }, { dir: ${merged}/denied }]
credentials:
  files:
    deny: [${merged}/secret]
`);
  stopRuleWatches(h.sup); // decided by the rules the kernel holds, not by a new compile
  // after the policy: not among the files entered by identity. One through the overlay (it lands in the
  // upper directory, which did not exist), one put beneath it in the lower directory.
  copyFileSync('/usr/bin/true', join(merged, 'denied', 'later'));
  copyFileSync('/usr/bin/true', join(lower, 'denied', 'below'));
  // copied up since: what runs through the overlay is now an upper file no rule was compiled for
  chmodSync(join(merged, 'bin', 'tool'), 0o750);
  const r = await h.run(['sh', '-c', [
    `${merged}/bin/tool; echo "path=$?"`,
    `${lower}/bin/tool; echo "path-lower=$?"`,
    `${merged}/denied/tool2; echo "dir=$?"`,
    `${lower}/denied/tool2; echo "dir-lower=$?"`,
    `${merged}/denied/later; echo "dir-later=$?"`,
    `${lower}/denied/below; echo "dir-below=$?"`,
    `${merged}/ok/free; echo "free=$?"`,
    `cat ${merged}/secret >/dev/null; echo "cred=$?"`,
    `cat ${lower}/secret >/dev/null; echo "cred-lower=$?"`,
  ].join('\n')]);
  assert.equal(
    r.stdout,
    `path=${KILLED}\npath-lower=${KILLED}\ndir=${KILLED}\ndir-lower=${KILLED}\ndir-later=${KILLED}\ndir-below=${KILLED}\nfree=0\ncred=${KILLED}\ncred-lower=${KILLED}\n`,
    r.stderr,
  );
  const denied = r.events.filter((e): e is ExecEvent => e.type === 'exec' && e.verdict === 'deny').map((e) => e.rule);
  assert.deepEqual(denied, ['exec.deny[0]', 'exec.deny[0]', 'exec.deny[1]', 'exec.deny[1]', 'exec.deny[1]', 'exec.deny[1]']);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => e.rule), ['credentials.files.deny[0]', 'credentials.files.deny[0]']);
  // untagged processes run and read the same files
  assert.equal(spawnSync(`${merged}/bin/tool`).status, 0);
  assert.equal(readFileSync(`${merged}/secret`, 'utf8'), 'TOKEN\n');
});

test('a session may not set a file\'s generation (identity rules are keyed by it)', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'f'), 'x');
  const h = harness(t, denying(`{ path: /usr/bin/wget }`));
  const setversion = `import fcntl, struct, sys; fd = open(sys.argv[1]); fcntl.ioctl(fd, 0x40087602, struct.pack('l', 7))`;
  const r = await h.run(['sh', '-c', `python3 -c "${setversion}" ${dir}/f 2>/dev/null; echo "setversion=$?"`]);
  assert.equal(r.stdout, `setversion=${KILLED}\n`);
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule]), [['setversion', 'builtin.no_setversion']]);
  // untagged: the ioctl is the file system's to answer (this one may refuse it), nobody is killed
  assert.equal(spawnSync('python3', ['-c', setversion, join(dir, 'f')]).signal, null, 'not killed');
});

test('a child the full tag table has no room for does not run (it would be outside every rule)', async (t) => {
  const h = harness(t, denying(`{ path: /usr/bin/wget }`), { tagsMax: 32 });
  // 48 children alive at once, each saying it ran
  const r = await h.run(['bash', '-c', 'for i in $(seq 48); do (echo ran; sleep 2) & done; wait']);
  const ran = r.stdout.split('\n').filter((l) => l === 'ran').length;
  const v = violations(r.events, 'untagged_child');
  assert.ok(v.length >= 16, `children past the table's 32 entries were stopped (${v.length})`);
  assert.equal(ran + v.length, 48, 'every child either ran tagged or was stopped before it ran');
  assert.ok(v.every((e) => e.rule === 'builtin.no_untagged_child' && e.verdict === 'deny'));
});

test('a rule for a deleted file does not deny a later file that gets its inode number', async (t) => {
  const dir = tempDir(t);
  const victim = join(dir, 'victim');
  copyFileSync('/usr/bin/true', victim);
  const h = harness(t, denying(`{ path: ${victim} }`));
  stopRuleWatches(h.sup); // the rules the kernel holds, not a new compile
  const ino = statSync(victim).ino;
  rmSync(victim);
  let reused: string | undefined;
  for (let i = 0; i < 200 && !reused; i++) {
    const p = join(dir, `new${i}`);
    copyFileSync('/usr/bin/true', p);
    if (statSync(p).ino === ino) reused = p;
  }
  if (!reused) return t.skip(`this file system gave none of 200 new files inode ${ino} again`);
  const r = await h.run([reused]);
  assert.equal(r.status, 0, 'the new file runs: the rule was for the deleted one (same number, another generation)');
  assert.equal(h.execs((e) => e.verdict !== 'allow').length, 0);
});

test('fileless exec (memfd, deleted file) is denied by default', async (t) => {
  const dir = tempDir(t);
  const h = harness(t, `version: 1
name: t
exec:
  default: allow
`);
  const py = [
    'import os,sys',
    'fd = os.memfd_create("payload", 0)',
    'os.write(fd, open("/usr/bin/true","rb").read())',
    'pid = os.fork()',
    'if pid == 0: os.execv("/proc/self/fd/%d" % fd, ["payload"])',
    '_, st = os.waitpid(pid, 0); print("memfd=%d" % (128 + os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)))',
    `p = "${dir}/gone"; open(p,"wb").write(open("/usr/bin/true","rb").read()); os.chmod(p, 0o755)`,
    'fd2 = os.open(p, os.O_RDONLY); os.unlink(p)',
    'pid = os.fork()',
    'if pid == 0: os.execv("/proc/self/fd/%d" % fd2, ["gone"])',
    '_, st = os.waitpid(pid, 0); print("deleted=%d" % (128 + os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)))',
  ].join('\n');
  const r = await h.run(['python3', '-c', py]);
  assert.equal(r.stdout, `memfd=${KILLED}\ndeleted=${KILLED}\n`);
  const fileless = h.execs((e) => e.fileless === true);
  assert.equal(fileless.length, 2);
  assert.ok(fileless.every((e) => e.verdict === 'deny' && e.rule === 'exec.fileless'));
  assert.ok(fileless.some((e) => e.path.startsWith('memfd:payload')));
});

test('dir: and argv: rules; shebang scripts are decided on the interpreter and name both', async (t) => {
  const dir = tempDir(t);
  const script = writeExecutable(join(dir, 'hello.sh'), '#!/bin/sh\necho hello\n');
  const interp = join(dir, 'mysh');
  copyFileSync('/usr/bin/dash', interp);
  const script2 = writeExecutable(join(dir, 'other.sh'), `#!${interp}\necho other\n`);
  const h = harness(t, `version: 1
name: t
exec:
  default: allow
  deny:
    - path: ${interp}
    - argv: [git, push, --force]
`);
  const r = await h.run(['bash', '-c', `${script}; ${script2}; echo "s2=$?"; git push --force nowhere 2>/dev/null; echo "push=$?"; git --version >/dev/null; echo "git=$?"; (exec -a innocent git push --force nowhere 2>/dev/null); echo "renamed=$?"`]);
  assert.equal(r.stdout, `hello\ns2=${KILLED}\npush=${KILLED}\ngit=0\nrenamed=${KILLED}\n`);
  const s1 = h.execs((e) => e.script === script)[0];
  assert.equal(s1?.verdict, 'allow');
  assert.equal(s1?.path, realpathSync('/bin/sh'), 'the interpreter, as the kernel resolved it');
  const s2 = h.execs((e) => e.script === script2)[0];
  assert.equal(s2?.verdict, 'deny');
  assert.equal(s2?.path, interp);
  assert.equal(s2?.rule, 'exec.deny[0]');
  const push = h.execs((e) => e.argv[1] === 'push')[0];
  assert.equal(push?.rule, 'exec.deny[1]');
});

test('an argv[0] long enough to push the words argv: rules need out of the copied bytes is denied', async (t) => {
  const h = harness(t, denying(`{ argv: [git, push, --force] }`));
  const pad = (n: number) => `$(printf 'x%.0s' $(seq ${n}))`;
  const r = await h.run(['bash', '-c', [
    `(exec -a ${pad(300)} git push --force nowhere 2>/dev/null); echo "short=$?"`,
    `(exec -a ${pad(1100)} git push --force nowhere 2>/dev/null); echo "long=$?"`,
    `(exec -a ${pad(1100)} git --version >/dev/null); echo "other=$?"`,
    // long arguments after a short argv[0] are a command's own business
    `git --version ${pad(2000)} >/dev/null; echo "longargs=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `short=${KILLED}\nlong=${KILLED}\nother=${KILLED}\nlongargs=0\n`);
  assert.deepEqual(h.execs((e) => e.verdict === 'deny').map((e) => e.rule), ['exec.deny[0]', 'builtin.argv_unseen', 'builtin.argv_unseen']);
});

test('argv: rules hold for a program run through the dynamic loader: its own argv, past the loader and its options (--argv0 too)', async (t) => {
  const dir = tempDir(t);
  const tool = join(dir, 'tool');
  copyFileSync('/usr/bin/git', tool); // a copy of another name: only --argv0 names it git
  const h = harness(t, denying('{ argv: [git, push, --force] }'));
  const loader = ['/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2'].find((p) => spawnSync('test', ['-e', p]).status === 0)!;
  const pad = (n: number) => `$(printf 'x%.0s' $(seq ${n}))`;
  const r = await h.run(['bash', '-c', [
    `${loader} /usr/bin/git push --force nowhere 2>/dev/null; echo "plain=$?"`,
    `${loader} --inhibit-cache --library-path /nonexistent --preload '' /usr/bin/git push --force nowhere 2>/dev/null; echo "options=$?"`,
    `${loader} --argv0 innocent /usr/bin/git push --force nowhere 2>/dev/null; echo "renamed=$?"`,
    `${loader} --argv0 git ${tool} push --force nowhere 2>/dev/null; echo "argv0=$?"`,
    `${loader} --library-path ${pad(1100)} /usr/bin/git push --force nowhere 2>/dev/null; echo "unseen=$?"`,
    `${loader} /usr/bin/git --version >/dev/null; echo "other=$?"`,
    `${loader} --argv0 git --inhibit-cache ${tool} --version >/dev/null; echo "other-argv0=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `plain=${KILLED}\noptions=${KILLED}\nrenamed=${KILLED}\nargv0=${KILLED}\nunseen=${KILLED}\nother=0\nother-argv0=0\n`, r.stderr);
  const denied = h.execs((e) => e.verdict === 'deny');
  assert.ok(denied.every((e) => e.via_loader === true), 'decided when the loader maps the program');
  assert.deepEqual(denied.map((e) => e.rule), ['exec.deny[0]', 'exec.deny[0]', 'exec.deny[0]', 'exec.deny[0]', 'builtin.argv_unseen']);
});

test('a #! script a deny rule names does not run, though its interpreter is allowed (direct, relative, links of the same and of another name, #!/usr/bin/env)', async (t) => {
  const denied = tempDir(t, 'bridle-denied-');
  const elsewhere = tempDir(t, 'bridle-ok-');
  const marks = tempDir(t, 'bridle-marks-');
  const script = writeExecutable(join(denied, 'fetch.sh'), `#!/bin/sh\ntouch ${marks}/$1\n`);
  symlinkSync(script, join(elsewhere, 'fetch.sh'));
  // the interpreter opens the link's name, and finds a file of another name
  symlinkSync(script, join(elsewhere, 'innocent'));
  const fine = writeExecutable(join(elsewhere, 'fine.sh'), `#!/bin/sh\ntouch ${marks}/$1\n`);
  const viaEnv = writeExecutable(join(denied, 'env.sh'), `#!/usr/bin/env sh\ntouch ${marks}/$1\n`);
  // named like a file the interpreter opens before it (its C library, opened by the dynamic loader)
  const decoy = writeExecutable(join(denied, 'libc.so.6'), `#!/bin/sh\ntouch ${marks}/$1\n`);
  const h = harness(t, denying(`{ dir: ${denied} }`));
  const r = await h.run(['sh', '-c', [
    `${script} direct; echo "direct=$?"`,
    `${join(elsewhere, 'fetch.sh')} link; echo "link=$?"`,
    `${join(elsewhere, 'innocent')} renamed; echo "renamed=$?"`,
    // a path longer than the sensor reads of it (256 bytes): its last part is cut off where it is read
    `${denied}/${'./'.repeat(150)}fetch.sh long; echo "long=$?"`,
    `${decoy} decoy; echo "decoy=$?"`,
    `cd ${denied} && ./fetch.sh relative; echo "relative=$?"`,
    `${viaEnv} env; echo "env=$?"`,
    `${fine} fine; echo "fine=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `direct=${KILLED}\nlink=${KILLED}\nrenamed=${KILLED}\nlong=${KILLED}\ndecoy=${KILLED}\nrelative=${KILLED}\nenv=${KILLED}\nfine=0\n`, r.stderr);
  for (const m of ['direct', 'link', 'renamed', 'long', 'decoy', 'relative', 'env']) assert.ok(!existsSync(join(marks, m)), `the script did not run (${m})`);
  assert.ok(existsSync(join(marks, 'fine')));
  const v = violations(r.events, 'script');
  assert.deepEqual(v.map((e) => e.rule), new Array(7).fill('exec.deny[0]'));
  // the exec event still names both: the script, and the interpreter it was decided on
  assert.ok(h.execs((e) => e.script === script && e.path === realpathSync('/bin/sh')).length >= 1);
});

test('a pending #! script wait is never pushed out of a full table; a script that finds no room is killed', async (t) => {
  const d = tempDir(t);
  // denied; its interpreter opens it only once told to, and says when it waits
  const script = join(d, 'late.sh');
  writeExecutable(script, `#!/usr/bin/env -S sh -c "touch ${d}/waiting; while [ ! -e ${d}/go ]; do sleep 0.05; done; exec cat ${script}"\n`);
  const other = writeExecutable(join(d, 'other.sh'), '#!/bin/sh\necho other ran\n');
  const h = harness(t, denying(`{ path: ${script} }`));
  let ended = false;
  const run = h.run(['sh', '-c', [
    `${script} & s=$!`,
    `while [ ! -e ${d}/full ]; do sleep 0.05; done`,
    // a script whose wait finds no room
    `${other}; echo "other=$?"`,
    `touch ${d}/go; wait $s; echo "late=$?"`,
  ].join('\n')]).finally(() => (ended = true));
  assert.ok(await waitFor(() => ended || existsSync(join(d, 'waiting')), 10_000) && !ended, 'the script waits');
  // as many other session processes with pending waits as the table holds (here written from user space)
  const waits = h.sup.sensor.map('script_wait');
  const value = Buffer.alloc(16);
  let added = 0;
  for (let i = 0; i < 4 * waits.maxEntries; i++) {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(0x80000000 + i);
    try {
      waits.update(k, value);
      added++;
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'E2BIG', String(err));
      break;
    }
  }
  assert.ok(added > 0);
  writeFileSync(join(d, 'full'), '');
  const r = await run;
  assert.equal(r.stdout, `other=${KILLED}\nlate=${KILLED}\n`, r.stderr);
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule, e.verdict]), [
    ['script_unseen', 'builtin.no_script_unseen', 'deny'],
    ['script', 'exec.deny[0]', 'deny'],
  ]);
});

test('monitor mode decides the same but kills nothing (would_deny)', async (t) => {
  const h = harness(t, `version: 1
name: t
mode: monitor
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`);
  const r = await h.run(['sh', '-c', 'wget --version >/dev/null; echo "wget=$?"']);
  assert.equal(r.stdout, 'wget=0\n');
  const w = h.execs((e) => e.path === '/usr/bin/wget')[0];
  assert.equal(w?.verdict, 'would_deny');
  assert.equal(w?.rule, 'exec.deny[0]');
});

test('a session started by the kernel when an agents: binary execs', async (t) => {
  const dir = tempDir(t);
  const agent = writeExecutable(join(dir, 'bridle-test-agent'), '#!/bin/sh\nwget --version >/dev/null 2>&1; echo "wget=$?"\n');
  const h = harness(t, `version: 1
name: t
agents:
  - name: test-agent
    match: { exe: [bridle-test-agent] }
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`);
  // started the way a developer would: untagged, no bridle in front of it
  const out = spawnSync(agent, { encoding: 'utf8' });
  assert.equal(out.stdout, `wget=${KILLED}\n`);
  // spawnSync held the event loop: let the ring buffer's batches arrive
  await waitFor(() => h.events.some((e) => e.type === 'session_end'), 2000);
  const start = h.events.find((e) => e.type === 'session_start' && e.origin === 'auto');
  assert.ok(start, 'session_start from the kernel');
  assert.equal((start as { agent?: string }).agent, 'test-agent');
  const w = h.execs((e) => e.path === '/usr/bin/wget')[0];
  assert.equal(w?.session, start.session);
  // the agent's exec is the root; wget's parent is the agent's image
  assert.equal(w?.parent_exec_id, start.exec_id);
  // an unrelated untagged program with another name is not a session
  assert.equal(spawnSync('/usr/bin/wget', ['--version']).status, 0);
});

test('attach tags a running process and its existing descendants', async (t) => {
  const h = harness(t, denying('{ path: /usr/bin/wget }'));
  const child = spawn('sh', ['-c', 'sh -c "sleep 0.4; wget --version >/dev/null 2>&1; echo inner=\\$?" & sleep 0.4; wget --version >/dev/null 2>&1; echo outer=$?; wait'], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await new Promise((r) => setTimeout(r, 100));
  const { pids } = h.sup.attach(child.pid!);
  assert.ok(pids.length >= 2, `tree tagged (${pids.join(',')})`);
  await new Promise((r) => child.on('exit', r));
  assert.match(out, new RegExp(`outer=${KILLED}`));
  assert.match(out, new RegExp(`inner=${KILLED}`));
  const start = h.events.find((e) => e.type === 'session_start' && e.origin === 'attach');
  assert.ok(start);
  // the root (which the sensor saw exec) is named as the kernel names it: its children point at it
  const outer = h.execs((e) => e.path === '/usr/bin/wget' && e.ppid === child.pid)[0];
  assert.ok(outer, 'the root\'s own wget was reported');
  assert.equal(outer.parent_exec_id, start.exec_id, 'session_start names the image the root\'s children descend from');
});

test('a stale tag (pid reused by another process) does not apply; each image has its own exec_id', async (t) => {
  const h = harness(t, denying('{ path: /usr/bin/wget }'));
  const child = spawn('sh', ['-c', 'read x; exec wget --version'], { stdio: ['pipe', 'ignore', 'ignore'] });
  t.after(() => void child.kill('SIGKILL'));
  // a tag left by an earlier process with the same pid: same pid, different start time
  h.sup.sensor.tag(123n, 1, 0, [{ pid: child.pid!, start: 42n }]);
  child.stdin.end('go\n');
  const code = await new Promise((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 0, 'not killed by a tag that belongs to a previous owner of the pid');
  assert.equal(h.sup.sensor.tagOf(child.pid!), undefined, 'the stale entry was dropped');

  const r = await h.run(['sh', '-c', 'exec sh -c "exec true"']);
  const ids = r.events.filter((e) => e.type === 'exec').map((e) => e.exec_id);
  assert.equal(ids.length, 3);
  assert.equal(new Set(ids).size, 3, 'three images of one pid, three exec_ids');
});

test('a tagged process may not use bpf(2)', async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  const r = await h.run(['sh', '-c', 'bpftool prog show >/dev/null 2>&1; echo "bpftool=$?"']);
  assert.equal(r.stdout, `bpftool=${KILLED}\n`);
  assert.ok(r.events.some((e) => e.type === 'violation' && e.rule === 'builtin.no_bpf'));
});

test('a session process may not ptrace or write into a process outside its session', async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  // an untagged process the session would like to take over
  const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => void victim.kill('SIGKILL'));
  const py = (call: string) =>
    `python3 -c "import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); ${call}; print('done')"`;
  const r = await h.run([
    'sh',
    '-c',
    `${py(`libc.ptrace(16, ${victim.pid}, 0, 0)`)}; echo "ptrace=$?"; ` +
      `${py(`libc.process_vm_writev(${victim.pid}, 0, 0, 0, 0, 0)`)}; echo "vmwrite=$?"; ` +
      // inside the session, tracing one's own child is allowed
      `${py('import os; pid=os.fork(); (os._exit(0) if pid==0 else None); libc.ptrace(16, pid, 0, 0); os.waitpid(pid,0)')} >/dev/null; echo "own=$?"`,
  ]);
  assert.equal(r.stdout, `ptrace=${KILLED}\nvmwrite=${KILLED}\nown=0\n`);
  const v = violations(r.events).map((e) => e.rule);
  assert.deepEqual(v, ['builtin.no_ptrace', 'builtin.no_process_vm_writev']);
  assert.equal(victim.exitCode, null, 'the outside process is untouched');
});

test('ptrace and process_vm_* read their pid in the caller\'s pid namespace', async (t) => {
  const d = tempDir(t);
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  const py = (call: string) => `python3 -c "import ctypes,os; libc=ctypes.CDLL(None, use_errno=True); ${call}"`;
  // The session waits until the test has put an untagged process, in a pid namespace of its own, at the
  // local pid equal to the session shell's global pid; then it enters that namespace and attaches to it.
  const run = h.run(['sh', '-c', [
    `echo $$ > ${d}/g.tmp && mv ${d}/g.tmp ${d}/g`,
    `while [ ! -s ${d}/ns ]; do sleep 0.05; done`,
    `nsenter -t $(cat ${d}/ns) -p -- ${py(`print('rc=%d' % libc.ptrace(16, $(cat ${d}/g), 0, 0))`)}; echo "foreign=$?"`,
    // in a pid namespace of the session's own, its own child by its local pid is the session's business
    `unshare -pf ${py('pid=os.fork(); (os._exit(0) if pid==0 else None); libc.ptrace(16, pid, 0, 0); os.waitpid(pid,0)')}; echo "own=$?"`,
  ].join('\n')]);
  /** The number a file holds, once it has been written. */
  const numberIn = async (name: string): Promise<number> => {
    assert.ok(await waitFor(() => existsSync(join(d, name)) && readFileSync(join(d, name), 'utf8').trim() !== '', 10_000), `${name} written`);
    return Number(readFileSync(join(d, name), 'utf8').trim());
  };
  const g = await numberIn('g');
  assert.ok(g > 300);
  // untagged: a new pid namespace whose next pid is the shell's global pid
  const victim = spawn('unshare', ['-pf', '--mount-proc', 'sh', '-c', `echo ${g - 1} > /proc/sys/kernel/ns_last_pid; sleep 30 & echo $! > ${d}/local; wait`], { stdio: 'ignore' });
  t.after(() => void victim.kill('SIGKILL'));
  const local = await numberIn('local');
  assert.equal(local, g, 'the untagged sleep has the local pid of the session shell');
  // the namespace's init (the unshare's child), by its global pid
  const init = Number(readFileSync(`/proc/${victim.pid}/task/${victim.pid}/children`, 'utf8').trim().split(' ')[0]);
  // ending the namespace's init ends everything in it (ending unshare would leave it running)
  t.after(() => killPid(init));
  writeFileSync(join(d, 'ns'), String(init));
  const r = await run;
  assert.equal(r.stdout, `foreign=${KILLED}\nown=0\n`);
  assert.deepEqual(violations(r.events).map((e) => e.rule), ['builtin.no_ptrace']);
  // killed without attaching: the untagged sleep still runs, untraced
  const status = readFileSync(`/proc/${readFileSync(`/proc/${init}/task/${init}/children`, 'utf8').trim().split(' ')[0]}/status`, 'utf8');
  assert.match(status, /^TracerPid:\s+0$/m);
});

test('a session process may not type into its terminal\'s input (TIOCSTI)', async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  const inject = `import fcntl, os, termios; m, s = os.openpty(); fcntl.ioctl(s, termios.TIOCSTI, b'x'); print('typed')`;
  const r = await h.run(['sh', '-c', `python3 -c "${inject}"; echo "tiocsti=$?"`]);
  assert.equal(r.stdout, `tiocsti=${KILLED}\n`);
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule]), [['tty_inject', 'builtin.no_tty_inject']]);
  // untagged, the same request is the terminal's to answer
  assert.equal(spawnSync('python3', ['-c', inject]).signal, null, 'not killed');
});

test("a session process may not read another process's environment or memory (the credentials env.allow kept out)", async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  // an untagged process holding a secret in its environment
  const victim = spawn('sleep', ['30'], { stdio: 'ignore', env: { ...process.env, BRIDLE_TEST_SECRET: 'hunter2' } });
  t.after(() => void victim.kill('SIGKILL'));
  const v = victim.pid!;
  const got = tempDir(t);
  const r = await h.run([
    'sh',
    '-c',
    [
      // what the reads got, if anything, goes to a file the test reads afterwards
      `cat /proc/${v}/environ >${got}/environ; echo "environ=$?"`,
      `cat /proc/${v}/task/${v}/environ >${got}/task_environ; echo "task_environ=$?"`,
      `dd if=/proc/${v}/mem bs=1 count=1 >/dev/null 2>&1; echo "mem=$?"`,
      `python3 -c "import ctypes; ctypes.CDLL(None).process_vm_readv(${v}, 0, 0, 0, 0, 0)"; echo "vmread=$?"`,
      // its own environment, and a child's in the same session, are its own business
      `cat /proc/self/environ >/dev/null; echo "self=$?"`,
      `sleep 5 & c=$!; cat /proc/$c/environ >/dev/null; echo "child=$?"; kill $c`,
    ].join('\n'),
  ]);
  assert.equal(r.stdout, `environ=${KILLED}\ntask_environ=${KILLED}\nmem=${KILLED}\nvmread=${KILLED}\nself=0\nchild=0\n`);
  for (const f of ['environ', 'task_environ']) assert.equal(readFileSync(join(got, f), 'latin1'), '', `${f}: not one byte was read`);
  const rules = violations(r.events).map((e) => e.rule);
  assert.deepEqual(rules, ['builtin.no_proc_environ', 'builtin.no_proc_environ', 'builtin.no_proc_mem', 'builtin.no_process_vm_readv']);
  // untagged, the same read works (the secret is there to be kept)
  assert.match(readFileSync(`/proc/${v}/environ`, 'latin1'), /BRIDLE_TEST_SECRET=hunter2/);
  assert.equal(victim.exitCode, null, 'the outside process is untouched');
});

/** A python3 one-liner with libc loaded (`libc`, errors in ctypes.get_errno()). */
const pyc = (code: string) => `python3 -c "import ctypes,os,signal; libc=ctypes.CDLL(None, use_errno=True); ${code}"`;

/**
 * An untagged process outside every session that records each signal it is sent (a handler for every
 * signal that dumps core, so none ends it or dumps it), in `dir`/got; `dir`/ready once it listens.
 */
async function signalWitness(t: TestContext, dir: string) {
  const code = [
    'import signal, sys, time',
    'd = sys.argv[1]',
    "h = lambda n, f: open(d + '/got', 'a').write('%d\\n' % n)",
    '[signal.signal(s, h) for s in (3, 4, 5, 6, 7, 8, 11, 24, 25, 31)]',
    "open(d + '/ready', 'w').close()",
    'time.sleep(60)',
  ].join('\n');
  const w = spawn('python3', ['-c', code, dir], { stdio: 'ignore' });
  t.after(() => killPid(w.pid!));
  assert.ok(await waitFor(() => existsSync(join(dir, 'ready')), 10_000), 'the witness listens');
  return { pid: w.pid!, got: () => (existsSync(join(dir, 'got')) ? readFileSync(join(dir, 'got'), 'utf8') : '') };
}

test('a session process may not open perf events on processes outside its session, nor on a whole CPU', async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.after(() => killPid(victim.pid!));
  // perf_event_open(2) (x86-64: 298) of a software event (PERF_COUNT_SW_DUMMY) on `pid`, `cpu`
  const perf = (pid: string, cpu: number, flags = 0) =>
    pyc(`a=ctypes.create_string_buffer(128); a[0:4]=(1).to_bytes(4,'little'); a[4:8]=(128).to_bytes(4,'little'); a[8:16]=(9).to_bytes(8,'little'); ` +
      `fd=libc.syscall(298, a, ${pid}, ${cpu}, -1, ${flags}); print('fd' if fd >= 0 else 'err%d' % ctypes.get_errno())`);
  const r = await h.run(['sh', '-c', [
    `${perf(String(victim.pid), -1)}; echo "other=$?"`,
    `${perf('-1', 0)}; echo "cpu=$?"`,
    // itself, and a child of its own session
    `${perf('0', -1)}; echo "self=$?"`,
    `sleep 5 & c=$!; ${perf('$c', -1)}; echo "child=$?"; kill $c`,
  ].join('\n')]);
  assert.equal(r.stdout, `other=${KILLED}\ncpu=${KILLED}\nfd\nself=0\nfd\nchild=0\n`);
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule, e.verdict]), [
    ['perf_other', 'builtin.no_perf_other', 'deny'],
    ['perf_other', 'builtin.no_perf_other', 'deny'],
  ]);
  // untagged, the same event on the same process opens (and nobody is killed)
  const out = spawnSync('sh', ['-c', perf(String(victim.pid), -1)], { encoding: 'utf8' });
  assert.equal(out.status, 0);
  assert.equal(out.stdout, 'fd\n');
  assert.equal(victim.exitCode, null, 'the outside process is untouched');
});

test("a session process may not change another process's limits nor send it a signal that dumps core (its core file holds its environment)", async (t) => {
  const h = harness(t, `version: 1
name: t
exec: { default: allow }
`);
  const d = tempDir(t);
  const w = await signalWitness(t, d);
  const v = w.pid;
  const r = await h.run(['sh', '-c', [
    // no core file of the session's own processes either
    'ulimit -c 0',
    `prlimit --pid ${v} --core=unlimited; echo "prlimit=$?"`,
    // reading its limits is fine
    `prlimit --pid ${v} --core >/dev/null; echo "read=$?"`,
    `sh -c 'kill -s QUIT ${v}'; echo "kill=$?"`,
    `${pyc(`libc.syscall(200, ${v}, 11)`)}; echo "tkill=$?"`,
    `${pyc(`libc.syscall(234, ${v}, ${v}, 6)`)}; echo "tgkill=$?"`,
    // rt_sigqueueinfo with si_code SI_QUEUE, as sigqueue(3) sends it
    `${pyc(`i=ctypes.create_string_buffer(128); i[8:12]=(-1).to_bytes(4,'little',signed=True); libc.syscall(129, ${v}, 7, i)`)}; echo "sigqueue=$?"`,
    `${pyc(`i=ctypes.create_string_buffer(128); i[8:12]=(-1).to_bytes(4,'little',signed=True); libc.syscall(297, ${v}, ${v}, 8, i)`)}; echo "tgsigqueue=$?"`,
    `${pyc(`libc.syscall(424, libc.syscall(434, ${v}, 0), 3, 0, 0)`)}; echo "pidfd=$?"`,
    // a /proc/<pid> directory names the process as a pidfd does
    `${pyc(`libc.syscall(424, os.open('/proc/${v}', os.O_RDONLY), 3, 0, 0)`)}; echo "procfd=$?"`,
    // a process group (here one of its own making, which holds only itself): cannot be told to be the session's
    `${pyc('os.setpgid(0, 0); signal.signal(signal.SIGQUIT, signal.SIG_IGN); os.kill(0, signal.SIGQUIT)')}; echo "group=$?"`,
    // its own processes: itself, a child, the child's limits, by pid and by pidfd
    `${pyc("signal.signal(signal.SIGQUIT, signal.SIG_IGN); os.kill(os.getpid(), signal.SIGQUIT); print('self')")}; echo "self=$?"`,
    // (SIGSEGV: a background job of sh ignores SIGQUIT)
    `sleep 5 & c=$!; prlimit --pid $c --core=0; kill -s SEGV $c; wait $c; echo "child=$?"`,
    `sleep 5 & c=$!; ${pyc('libc.syscall(424, libc.syscall(434, $c, 0), 11, 0, 0)')}; wait $c; echo "child_pidfd=$?"`,
    // a signal that does not dump core, to the outside process, is not this guard's
    `kill -s CONT ${v}; echo "cont=$?"`,
    // a process that is gone (reaped: the call reaches nothing) is no outside process
    `sleep 0 & c=$!; wait $c; kill -s QUIT $c 2>/dev/null; echo "gone=$?"`,
    // abort() in a thread: tgkill to the caller's own thread (a thread id is judged by its process)
    `${pyc('import threading; t = threading.Thread(target=os.abort); t.start(); t.join()')}; echo "abort=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, [
    `prlimit=${KILLED}`, 'read=0', `kill=${KILLED}`, `tkill=${KILLED}`, `tgkill=${KILLED}`, `sigqueue=${KILLED}`, `tgsigqueue=${KILLED}`,
    `pidfd=${KILLED}`, `procfd=${KILLED}`, `group=${KILLED}`, 'self', 'self=0', 'child=139', 'child_pidfd=139', 'cont=0', 'gone=1', 'abort=134', '',
  ].join('\n'));
  const v2 = violations(r.events);
  assert.deepEqual(v2.map((e) => e.rule), ['builtin.no_prlimit_other', ...new Array(8).fill('builtin.no_core_signal')]);
  assert.ok(v2.every((e) => e.verdict === 'deny'));
  // untagged, the same calls are the kernel's to answer
  assert.equal(spawnSync('prlimit', ['--pid', String(v), '--core=0']).status, 0);
  process.kill(v, 'SIGQUIT');
  assert.ok(await waitFor(() => w.got().split('\n').includes('3'), 5000), 'the untagged signal arrived');
  assert.ok(alive(v), 'the outside process is untouched');
});

test('monitor mode reports the perf, limit and core signal guards as would_deny and kills nothing', async (t) => {
  const h = harness(t, `version: 1
name: t
mode: monitor
exec: { default: allow }
`);
  const d = tempDir(t);
  const w = await signalWitness(t, d);
  const r = await h.run(['sh', '-c', [
    `prlimit --pid ${w.pid} --core=0; echo "prlimit=$?"`,
    `${pyc(`a=ctypes.create_string_buffer(128); a[0:4]=(1).to_bytes(4,'little'); a[4:8]=(128).to_bytes(4,'little'); a[8:16]=(9).to_bytes(8,'little'); libc.syscall(298, a, -1, 0, -1, 0)`)}; echo "perf=$?"`,
    `${pyc(`os.kill(${w.pid}, signal.SIGQUIT)`)}; echo "kill=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, 'prlimit=0\nperf=0\nkill=0\n');
  assert.deepEqual(violations(r.events).map((e) => [e.rule, e.verdict]), [
    ['builtin.no_prlimit_other', 'would_deny'],
    ['builtin.no_perf_other', 'would_deny'],
    ['builtin.no_core_signal', 'would_deny'],
  ]);
});

test('the supervisor is not dumpable (no core file of it, no /proc peeks without CAP_SYS_PTRACE)', async (t) => {
  harness(t, `version: 1\nname: t\nexec: { default: allow }\n`);
  assert.equal(getDumpable(), false);
});

test('policy swaps are atomic: a rule both policies share holds through every swap', async (t) => {
  const a = `version: 1
name: a
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }, { path: /usr/bin/id }]
`;
  const b = `version: 1
name: b
exec:
  default: allow
  deny: [{ argv: [git, push] }, { dir: /nonexistent-but-fine }, { path: /usr/bin/wget }]
`;
  const h = harness(t, a);
  const { parsePolicy } = await import('../../src/policy/load.js');
  const pa = parsePolicy(a, 'a.yaml');
  const pb = parsePolicy(b, 'b.yaml');
  // the session tries wget in a tight loop while the supervisor swaps policies underneath it
  const running = h.run(['sh', '-c', 'n=0; for i in $(seq 150); do wget --version >/dev/null 2>&1 && n=$((n+1)); done; echo "ran=$n"']);
  let swaps = 0;
  const until = Date.now() + 1500;
  while (Date.now() < until) {
    h.sup.setPolicy(swaps % 2 ? pa : pb);
    swaps++;
    await new Promise((r) => setImmediate(r));
  }
  const r = await running;
  assert.ok(swaps > 20, `swapped ${swaps} times`);
  assert.equal(r.stdout, 'ran=0\n', 'wget never ran: no moment without a policy');
  assert.ok(h.execs((e) => e.path === '/usr/bin/wget').every((e) => e.verdict === 'deny'));
});

test('code mapped from a denied place never runs: LD_PRELOAD, dlopen, mprotect(PROT_EXEC), a fileless library; a JIT double mapping does', async (t) => {
  const denied = tempDir(t, 'bridle-denied-');
  const ok = tempDir(t, 'bridle-ok-');
  const marks = tempDir(t, 'bridle-marks-');
  // a library whose constructor leaves a mark: if the mark exists, its code ran
  const src = join(ok, 'lib.c');
  writeFileSync(src, `#include <stdio.h>\n#include <stdlib.h>\n__attribute__((constructor)) static void ran(void) { const char *m = getenv("MARK"); if (m) { FILE *f = fopen(m, "w"); if (f) fclose(f); } }\n`);
  for (const d of [denied, ok]) {
    const cc = spawnSync('cc', ['-shared', '-fPIC', '-o', join(d, 'lib.so'), src], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
  }
  const h = harness(t, denying(`{ dir: ${denied} }`));
  const mark = (name: string) => join(marks, name);
  const py = (code: string) => `python3 -c "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); ${code}"`;
  const r = await h.run([
    'sh',
    '-c',
    [
      `MARK=${mark('preload')} LD_PRELOAD=${denied}/lib.so /usr/bin/true; echo "preload=$?"`,
      `MARK=${mark('allowed')} LD_PRELOAD=${ok}/lib.so /usr/bin/true; echo "allowed=$?"`,
      `MARK=${mark('dlopen')} ${py(`ctypes.CDLL('${denied}/lib.so')`)}; echo "dlopen=$?"`,
      // map it readable only, then make it executable
      py(
        `libc.mmap.restype = ctypes.c_void_p; fd = os.open('${denied}/lib.so', os.O_RDONLY); a = libc.mmap(None, 4096, 1, 2, fd, 0); ` +
          `r = libc.mprotect(ctypes.c_void_p(a), 4096, 5); print('mprotect returned', r)`,
      ) + `; echo "mprotect=$?"`,
      // the same library with no file at all: a memfd, loaded through /proc/self/fd
      `MARK=${mark('memfd')} ${py(`fd = os.memfd_create('x'); os.write(fd, open('${ok}/lib.so', 'rb').read()); ctypes.CDLL('/proc/self/fd/%d' % fd)`)}; echo "memfd=$?"`,
      // a JIT's write-xor-execute double mapping: a shared executable view of a memfd is not a program
      py(`libc.mmap.restype = ctypes.c_void_p; fd = os.memfd_create('jit'); os.write(fd, bytes(4096)); a = libc.mmap(None, 4096, 5, 1, fd, 0); sys.exit(0 if a not in (None, 2**64 - 1) else 1)`) + `; echo "jit=$?"`,
    ].join('\n'),
  ]);
  assert.equal(r.stdout, `preload=${KILLED}\nallowed=0\ndlopen=${KILLED}\nmprotect=${KILLED}\nmemfd=${KILLED}\njit=0\n`, r.stderr);
  assert.ok(existsSync(mark('allowed')), 'a library from an allowed place runs');
  for (const m of ['preload', 'dlopen', 'memfd']) assert.ok(!existsSync(mark(m)), `no code of the denied library ran (${m})`);
  const v = violations(r.events, 'exec_mapping');
  assert.deepEqual(v.map((e) => e.rule), ['exec.deny[0]', 'exec.deny[0]', 'exec.deny[0]', 'exec.fileless']);
  assert.ok(v.every((e) => e.verdict === 'deny'));
  // untagged, the same preload runs
  const out = spawnSync('/usr/bin/true', [], { env: { ...process.env, MARK: mark('untagged'), LD_PRELOAD: join(denied, 'lib.so') } });
  assert.equal(out.status, 0);
  assert.ok(existsSync(mark('untagged')));
});

/** Runs argv outside every session (as a developer would); ended by pid when the test ends. */
function untagged(t: import('node:test').TestContext, argv: string[]): Promise<{ status: number | null; stdout: string }> {
  const cp = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => killPid(cp.exitCode === null && cp.signalCode === null ? cp.pid : undefined));
  let stdout = '';
  cp.stdout!.on('data', (d) => (stdout += d));
  return new Promise((res) => cp.on('close', (status) => res({ status, stdout })));
}

test('policy reloads leave no moment without the agents: entries: every exec of the agent starts a session', async (t) => {
  const dir = tempDir(t);
  const agent = writeExecutable(join(dir, 'bridle-reload-agent'), '#!/bin/sh\nwget --version >/dev/null 2>&1; echo "$?"\n');
  // many entries, so that a reload which took them all out and put them back would leave a wide gap
  const filler = Array.from({ length: 1000 }, (_, i) => `  - name: filler${i}\n    match: { exe: [bridle-filler-${i}] }\n`).join('');
  const yaml = `version: 1
name: t
agents:
  - name: reload-agent
    match: { exe: [bridle-reload-agent] }
${filler}exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`;
  const h = harness(t, yaml);
  const { parsePolicy } = await import('../../src/policy/load.js');
  const p = parsePolicy(yaml, 'reload.yaml');
  const n = 200;
  let done = false;
  const loop = untagged(t, ['sh', '-c', `for i in $(seq ${n}); do ${agent}; done`]).finally(() => (done = true));
  let reloads = 0;
  while (!done) {
    h.sup.setPolicy(p);
    reloads++;
    await new Promise((r) => setImmediate(r));
  }
  const r = await loop;
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, n);
  assert.ok(reloads > 20, `reloaded ${reloads} times`);
  assert.deepEqual(lines.filter((l) => l !== String(KILLED)), [], `every agent exec was a session (wget killed) through ${reloads} reloads`);
});

test('an agents: entry by absolute path is that file (by identity; a #! script by the path run), not its name elsewhere', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'a'));
  mkdirSync(join(dir, 'b'));
  const elf = join(dir, 'a', 'bridle-elf-agent');
  const elfOther = join(dir, 'b', 'bridle-elf-agent');
  copyFileSync('/usr/bin/dash', elf);
  copyFileSync('/usr/bin/dash', elfOther);
  const body = '#!/bin/sh\nwget --version >/dev/null 2>&1; echo "wget=$?"\n';
  const script = writeExecutable(join(dir, 'a', 'bridle-sh-agent'), body);
  const scriptOther = writeExecutable(join(dir, 'b', 'bridle-sh-agent'), body);
  const h = harness(t, `version: 1
name: t
agents:
  - name: elf-agent
    match: { exe: [${elf}] }
  - name: sh-agent
    match: { exe: [${script}] }
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`);
  const cmd = 'wget --version >/dev/null 2>&1; echo "wget=$?"';
  assert.equal((await untagged(t, [elf, '-c', cmd])).stdout, `wget=${KILLED}\n`, 'the agent named by its path is a session');
  assert.equal((await untagged(t, [elfOther, '-c', cmd])).stdout, 'wget=0\n', 'a program of the same name elsewhere is not');
  assert.equal((await untagged(t, [script])).stdout, `wget=${KILLED}\n`, 'the #! agent named by its path is a session');
  assert.equal((await untagged(t, [scriptOther])).stdout, 'wget=0\n', 'a script of the same name elsewhere is not');
  await waitFor(() => h.events.filter((e) => e.type === 'session_end').length >= 2, 2000);
  const starts = h.events.filter((e) => e.type === 'session_start' && e.origin === 'auto').map((e) => (e as { agent?: string }).agent);
  assert.deepEqual(starts, ['elf-agent', 'sh-agent']);
});

test('a policy whose agents: entries cannot all be written leaves the policy in force whole', async (t) => {
  const h = harness(t, denying('{ path: /usr/bin/wget }'));
  const { parsePolicy } = await import('../../src/policy/load.js');
  // more agents than the kernel's table holds (1,024): the writes fail part way
  const many = Array.from({ length: 1100 }, (_, i) => `  - name: a${i}\n    match: { exe: [bridle-too-many-${i}] }\n`).join('');
  const bad = parsePolicy(`version: 1\nname: t2\nagents:\n${many}exec:\n  default: allow\n  deny: [{ path: /usr/bin/id }]\n`, 'bad.yaml');
  assert.throws(() => h.sup.setPolicy(bad));
  const r = await h.run(['sh', '-c', 'wget --version >/dev/null 2>&1; echo "wget=$?"; id -u >/dev/null 2>&1; echo "id=$?"']);
  assert.equal(r.stdout, `wget=${KILLED}\nid=0\n`, 'the old rules decide, none of the refused ones');
  assert.equal(h.sup.sensor.map('agent_names').keys().length, 0, 'none of the refused agents: entries stay');
  assert.equal(h.sup.policy()?.name, 't');
});

test('a running session follows its policy from monitor to enforce on reload; one under a policy forced to monitor does not', async (t) => {
  const dir = tempDir(t);
  const go = join(dir, 'go');
  const yaml = `version: 1
name: t
mode: monitor
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`;
  const h = harness(t, yaml);
  const { parsePolicy } = await import('../../src/policy/load.js');
  const enforce = parsePolicy(yaml.replace('mode: monitor', 'mode: enforce'), 'enforce.yaml');
  // what `bridle run --monitor` gets through the agent: a policy id of its own, forced to monitor mode
  h.sup.setPolicy({ ...enforce, mode: 'monitor' }, 7);
  // a subshell made before the reload execs wget after it: its own tag must have changed
  const script = `wget --version >/dev/null 2>&1; echo "before=$?"; (while [ ! -e ${go} ]; do sleep 0.02; done; exec wget --version >/dev/null 2>&1); echo "after=$?"`;
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const a = h.run(['sh', '-c', script]);
  const b = h.sup.run(['sh', '-c', script], { policyId: 7, stdio: 'pipe', env });
  t.after(() => killPid(b.held.child.exitCode === null ? b.held.pid : undefined));
  let bOut = '';
  b.held.child.stdout!.on('data', (d) => (bOut += d));
  assert.ok(await waitFor(() => bOut.includes('before=') && h.execs((e) => e.path === '/usr/bin/wget').length >= 2, 5000), 'both sessions ran wget once');
  h.sup.setPolicy(enforce);
  writeFileSync(go, '');
  const ra = await a;
  await b.held.exited;
  assert.equal(ra.stdout, `before=0\nafter=${KILLED}\n`, 'the session of the reloaded policy now enforces');
  assert.equal(bOut, 'before=0\nafter=0\n', 'the session forced to monitor stays monitor-only');
});

test('argv: rules also hold under the name of the file word 0 leads to (sh is dash): exec -a does not pass them', async (t) => {
  const h = harness(t, denying('{ argv: [sh, -c] }, { argv: [/bin/sh, -e] }'));
  const r = await h.run([
    'bash',
    '-c',
    `(exec -a innocent /bin/sh -c 'echo ran'); echo "bare=$?"; (exec -a innocent /usr/bin/dash -e -c 'echo ran'); echo "abs=$?"; bash -c 'echo bash'`,
  ]);
  assert.equal(r.stdout, `bare=${KILLED}\nabs=${KILLED}\nbash\n`, r.stderr);
  const denied = h.execs((e) => e.verdict === 'deny').map((e) => e.rule);
  assert.deepEqual(denied, ['exec.deny[0]', 'exec.deny[1]']);
});

test('an exec event names the file that ran as the kernel resolved it, not the name the caller gave', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'bin'));
  copyFileSync('/bin/dash', join(dir, 'bin', 'tool')); // a shell: it can change directory before its record is read
  symlinkSync('/usr/bin/true', join(dir, 'bin', 'alias'));
  const h = harness(t, denying('{ path: /usr/bin/wget }'));
  const r = await h.run(['sh', '-c', [
    `cd ${dir}/bin && ./tool -c 'cd /usr/bin; sleep 0.3'`, // relative, then elsewhere at once
    `${dir}/bin/alias`, // a symlink
    `cd ${dir} && python3 -c 'import os; fd = os.open("/usr/bin/id", os.O_RDONLY); os.execve(fd, ["id", "-u"], {})'`, // execveat(fd, "")
    'echo done',
  ].join('; ')]);
  assert.match(r.stdout, /done/);
  const paths = h.execs(() => true).map((e) => e.path);
  assert.ok(paths.includes(join(dir, 'bin', 'tool')), `the relative name resolved where it ran: ${paths.join(', ')}`);
  assert.ok(!paths.includes('/usr/bin/tool'), 'not where the program went afterwards');
  assert.ok(paths.includes('/usr/bin/true') && !paths.includes(join(dir, 'bin', 'alias')), 'the symlink\'s target');
  assert.ok(paths.includes('/usr/bin/id'), 'the file behind the descriptor');
  assert.ok(paths.every((p) => p.startsWith('/')), 'every path absolute');
});
