// credentials.files.deny, decided in the real kernel: a session process that opens a denied file, by any
// name, is killed before open() returns; untagged processes read the same files freely.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { waitFor } from '../../src/agent/run.js';
import { KEY_KIND, LAYOUT } from '../../src/kernel/layout.js';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { ccHelper, harness, stopRuleWatches, tempDir, violations, type Harness } from '../helpers/kernel.js';

const KILLED = 137;

function secrets(dir: string): void {
  mkdirSync(join(dir, 'secrets'));
  writeFileSync(join(dir, 'secrets', 'key'), 'PRIVATE KEY\n');
  writeFileSync(join(dir, 'token.txt'), 'ghp_secret\n');
  writeFileSync(join(dir, 'other.txt'), 'fine\n');
  symlinkSync(join(dir, 'token.txt'), join(dir, 'link'));
  linkSync(join(dir, 'secrets', 'key'), join(dir, 'hard'));
  // A script of the credential file's name: what its interpreter runs then opens the real file, which the
  // wait for the script must not take for the script.
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'token.txt'), `#!/usr/bin/env -S sh -c "exec cat ${join(dir, 'token.txt')}"\n`, { mode: 0o755 });
}

const policy = (dir: string, mode = 'enforce') => `version: 1
name: creds
mode: ${mode}
credentials:
  files:
    deny: [${join(dir, 'secrets')}, ${join(dir, 'token.txt')}]
`;

/** Each probe in its own process, so one kill does not end the others; prints name=status. */
const probes = (d: string) =>
  [
    ['dir', `cat ${d}/secrets/key`],
    ['file', `cat ${d}/token.txt`],
    ['other', `cat ${d}/other.txt`],
    ['symlink', `cat ${d}/link`],
    ['hardlink', `cat ${d}/hard`],
    ['relative', `cd ${d}/secrets && cat ./key`],
    ['procroot', `cat /proc/self/root${d}/token.txt`],
    ['listdir', `ls ${d}/secrets`],
    ['python', `python3 -c "import sys; print(open(sys.argv[1]).read())" ${d}/token.txt`],
    ['scriptname', `${d}/bin/token.txt`],
  ]
    // status, and how many bytes of the file reached the output (none, when killed before it was read)
    .map(([name, cmd]) => `out=$(sh -c '${cmd}' 2>/dev/null); echo "${name}=$? $(printf %s "$out" | wc -c)"`)
    .join('\n');

test('a session that opens a denied credential file, by any name, is killed before it can read it', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const h = harness(t, policy(dir));
  const r = await h.run(['sh', '-c', probes(dir)]);
  assert.equal(r.status, 0);
  const got = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split('=') as [string, string]));
  const killed = `${KILLED} 0`;
  assert.deepEqual(got, {
    dir: killed, file: killed, other: '0 4', symlink: killed, hardlink: killed, relative: killed,
    procroot: killed, listdir: killed, python: killed, scriptname: killed,
  });
  const v = violations(r.events, 'credential_file');
  assert.equal(v.length, 9, 'one violation per refused open');
  assert.ok(v.every((e) => e.verdict === 'deny'));
  const rules = new Set(v.map((e) => e.rule));
  assert.deepEqual([...rules].sort(), ['credentials.files.deny[0]', 'credentials.files.deny[1]']);
  assert.match(v.find((e) => e.rule === 'credentials.files.deny[1]')!.detail ?? '', /token\.txt/);
  // each violation names the process that opened the file
  assert.ok(v.every((e) => r.events.some((x) => x.type === 'exec' && x.exec_id === e.exec_id)));
  // untagged processes read the same files freely, while the policy is in force
  const untagged = spawnSync('cat', [join(dir, 'token.txt'), join(dir, 'secrets', 'key')], { encoding: 'utf8' });
  assert.equal(untagged.status, 0);
  assert.equal(untagged.stdout, 'ghp_secret\nPRIVATE KEY\n');
});

test('monitor mode reports a credential file open as would_deny and lets it happen', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const h = harness(t, policy(dir, 'monitor'));
  const r = await h.run(['sh', '-c', `cat ${dir}/token.txt`]);
  assert.equal(r.status, 0);
  assert.equal(r.stdout, 'ghp_secret\n');
  const v = violations(r.events, 'credential_file')[0];
  assert.equal(v?.verdict, 'would_deny');
  assert.equal(v?.rule, 'credentials.files.deny[1]');
});

/**
 * A fanotify listener (python3): `init` makes a group whose events carry open descriptors and says so;
 * `fid` one that reports file handles instead; `listen` marks DIR/token.txt, says so in DIR/listening, and
 * prints what it reads through the descriptor of the first event (the file someone else opened).
 */
function fanotifyListener(dir: string): string {
  const py = join(dir, 'fanotify.py');
  writeFileSync(py, [
    'import ctypes, os, struct, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'd, mode = sys.argv[1], sys.argv[2]',
    '# FAN_CLASS_NOTIF with descriptors, or FAN_REPORT_FID',
    "fd = libc.fanotify_init(0x200 if mode == 'fid' else 0, os.O_RDONLY)",
    'if fd < 0: sys.exit(print(mode, "errno", ctypes.get_errno()))',
    "if mode != 'listen': sys.exit(print(mode))",
    'libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]',
    '# FAN_MARK_ADD, FAN_OPEN, AT_FDCWD',
    "assert libc.fanotify_mark(fd, 1, 0x20, -100, (d + '/token.txt').encode()) == 0",
    "open(d + '/listening', 'w').close()",
    'ev = os.read(fd, 4096)',
    "print(os.pread(struct.unpack_from('<IBBHQii', ev)[5], 100, 0).decode(), end='')",
  ].join('\n') + '\n');
  return py;
}

test('a session with credential rules may not make an fanotify group whose events carry open descriptors (no open call for the checks to see); file handles are fine', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const py = fanotifyListener(dir);
  const h = harness(t, policy(dir));
  let ended = false;
  const run = h.run(['sh', '-c', `python3 ${py} ${dir} listen; echo "listen=$?"; python3 ${py} ${dir} fid; echo "fid=$?"`]).finally(() => (ended = true));
  // once the listener listens (refused, it never does), the developer's untagged tool reads the file
  await waitFor(() => ended || existsSync(join(dir, 'listening')), 10_000);
  if (existsSync(join(dir, 'listening'))) readFileSync(join(dir, 'token.txt'));
  const r = await run;
  assert.equal(r.stdout, `listen=${KILLED}\nfid\nfid=0\n`);
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule, e.verdict]), [['fanotify_fd', 'builtin.no_fanotify_fd', 'deny']]);
  // untagged, and in a session whose policy names no credential files, such a group is made
  assert.equal(spawnSync('python3', [py, dir, 'init'], { encoding: 'utf8' }).stdout, 'init\n');
});

test('a session without credential rules may make any fanotify group', async (t) => {
  const dir = tempDir(t);
  const py = fanotifyListener(dir);
  const h = harness(t, `version: 1\nname: t\nexec: { default: allow }\n`);
  const r = await h.run(['sh', '-c', `python3 ${py} ${dir} init; echo "init=$?"`]);
  assert.equal(r.stdout, 'init\ninit=0\n');
  assert.deepEqual(violations(r.events), []);
});

test('io_uring opens of a denied credential file are decided too (also with no completion posted, or one that overflows); fixed-slot opens are refused to such sessions', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const helper = ccHelper(t, join(import.meta.dirname, 'fixtures', 'uring_open.c'));
  assert.ok(helper, 'cc builds the io_uring fixture');
  // untagged: both work
  assert.equal(spawnSync(helper, [join(dir, 'token.txt')], { encoding: 'utf8' }).stdout, 'ghp_secret\n');
  assert.equal(spawnSync(helper, [join(dir, 'token.txt'), 'fixed'], { encoding: 'utf8' }).stdout, 'fixed\n');
  for (const mode of ['skip', 'overflow']) assert.equal(spawnSync(helper, [join(dir, 'token.txt'), mode], { encoding: 'utf8' }).stdout, 'ghp_secret\n', mode);
  const h = harness(t, policy(dir));
  const r = await h.run(['sh', '-c', [
    `${helper} ${dir}/other.txt; echo "other=$?"`,
    `${helper} ${dir}/token.txt >/dev/null; echo "denied=$?"`,
    `${helper} ${dir}/other.txt fixed >/dev/null; echo "fixed=$?"`,
    // no completion posted: refused when submitted, whatever the file (the check runs on completions)
    `${helper} ${dir}/token.txt skip; echo "skip=$?"`,
    `${helper} ${dir}/other.txt skip >/dev/null; echo "skip-other=$?"`,
    // a completion that overflows the ring is checked all the same
    `${helper} ${dir}/token.txt overflow; echo "overflow=$?"`,
    `${helper} ${dir}/other.txt overflow; echo "overflow-other=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `fine\nother=0\ndenied=${KILLED}\nfixed=${KILLED}\nskip=${KILLED}\nskip-other=${KILLED}\noverflow=${KILLED}\nfine\noverflow-other=0\n`);
  assert.doesNotMatch(r.stdout, /ghp_secret/, 'not one byte of the secret');
  const v = violations(r.events);
  assert.deepEqual(v.map((e) => [e.what, e.rule]), [
    ['credential_file', 'credentials.files.deny[1]'],
    ['uring_fixed_open', 'builtin.no_uring_fixed_open'],
    ['uring_unseen', 'builtin.no_uring_unseen'],
    ['uring_unseen', 'builtin.no_uring_unseen'],
    ['credential_file', 'credentials.files.deny[1]'],
  ]);
});

test('io_uring requests linked behind the open of a denied file (a read, then a write elsewhere, in the same submission) get none of it, run inline or by an io-wq worker', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const helper = ccHelper(t, join(import.meta.dirname, 'fixtures', 'uring_open.c'));
  assert.ok(helper, 'cc builds the io_uring fixture');
  // untagged: open, read and write in one submission copy the file
  assert.equal(spawnSync(helper, [join(dir, 'token.txt'), 'chain', join(dir, 'copy0')], { encoding: 'utf8' }).status, 0);
  assert.equal(readFileSync(join(dir, 'copy0'), 'utf8'), 'ghp_secret\n');
  const h = harness(t, policy(dir));
  const modes = ['chain', 'chain-fixed', 'chain-async', 'chain-fixed-async'];
  const r = await h.run(['sh', '-c', modes.map((m) => `${helper} ${dir}/token.txt ${m} ${dir}/${m} >/dev/null; echo "${m}=$?"`).join('\n')]);
  for (const m of modes) assert.doesNotMatch(readFileSync(join(dir, m), 'utf8'), /ghp_secret/, `${m}: nothing copied`);
  assert.equal(r.stdout, modes.map((m) => `${m}=${KILLED}\n`).join(''));
  // the open is checked when it completes (the kill cancels what is linked behind it); an open into a
  // fixed slot is refused when submitted
  const cred = ['credential_file', 'credentials.files.deny[1]'];
  const fixed = ['uring_fixed_open', 'builtin.no_uring_fixed_open'];
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule]), [cred, fixed, cred, fixed]);
});

test('a process sharing its creator\'s descriptor table (clone(CLONE_FILES)) is killed as it is made: it would keep what the other is killed for', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const helper = ccHelper(t, join(import.meta.dirname, 'fixtures', 'shared_fds.c'));
  assert.ok(helper, 'cc builds the fixture');
  // untagged: the child reads what its creator opened
  assert.equal(spawnSync(helper, [join(dir, 'token.txt')], { encoding: 'utf8' }).stdout, 'ghp_secret\n');
  const h = harness(t, policy(dir));
  const r = await h.run(['sh', '-c', `${helper} ${dir}/token.txt; echo "status=$?"; sleep 1.5`]);
  assert.equal(r.stdout, `status=${KILLED}\n`, 'the creator killed for the open; the child never read');
  assert.deepEqual(violations(r.events).map((e) => [e.what, e.rule]), [
    ['shared_files', 'builtin.no_shared_files'],
    ['credential_file', 'credentials.files.deny[1]'],
  ]);
});

test('a credential file read through an overlay the session mounts is the file beneath it', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const aside = tempDir(t); // layers must not hold the mount point
  mkdirSync(join(aside, 'empty'));
  mkdirSync(join(aside, 'view'));
  const h = harness(t, policy(dir));
  // a read-only overlay of two lower layers, in a mount namespace of the session's own
  const overlay = (lower: string, file: string) =>
    `unshare -m sh -c 'mount -t overlay overlay -o lowerdir=${lower}:${aside}/empty ${aside}/view && cat ${aside}/view/${file}'`;
  const r = await h.run(['sh', '-c', [
    `${overlay(`${dir}/secrets`, 'key')}; echo "dir=$?"`,
    `${overlay(dir, 'token.txt')}; echo "file=$?"`,
    `${overlay(dir, 'other.txt')} >/dev/null; echo "other=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `dir=${KILLED}\nfile=${KILLED}\nother=0\n`);
  assert.deepEqual(violations(r.events).map((e) => e.rule), ['credentials.files.deny[0]', 'credentials.files.deny[1]']);
});

test('a credential file that did not exist when the policy was applied is covered once it appears', async (t) => {
  const dir = tempDir(t);
  const later = join(dir, 'later', '.aws', 'credentials'); // neither the file nor its directories exist yet
  const h = harness(t, `version: 1
name: creds-later
credentials:
  files:
    deny: [${later}]
`);
  const before = h.sup.engine.policies.get(1)?.compiled;
  mkdirSync(join(dir, 'later', '.aws'), { recursive: true });
  writeFileSync(later, 'aws_secret_access_key = x\n');
  assert.ok(await waitFor(() => {
    const c = h.sup.engine.policies.get(1)?.compiled;
    return c !== before && c?.credMissing.length === 0;
  }, 5000), 'the policy was applied again once the file appeared');
  const r = await h.run(['sh', '-c', `cat ${later} >/dev/null; echo "cat=$?"`]);
  assert.equal(r.stdout, `cat=${KILLED}\n`);
  assert.ok(r.events.some((e) => e.type === 'violation' && e.rule === 'credentials.files.deny[0]'));
});

/** A directory of secrets and a session harness whose policy denies `paths(dir)`. */
function denyingFiles(t: TestContext, paths: (dir: string) => string[]): { dir: string; h: Harness } {
  const dir = tempDir(t);
  secrets(dir);
  return { dir, h: harness(t, `version: 1\nname: creds\ncredentials:\n  files:\n    deny: [${paths(dir).join(', ')}]\n`) };
}

test('a credential file rewritten by rename (a new inode), or first written after the policy was applied, is denied at once', async (t) => {
  const { dir, h } = denyingFiles(t, (d) => [join(d, 'token.txt'), join(d, 'later.txt')]);
  stopRuleWatches(h.sup); // decided by the rules the kernel holds: by each file's name in its directory
  // how tools write a credential file: a new file, renamed over the old one
  writeFileSync(join(dir, 'token.new'), 'ghp_rotated\n');
  renameSync(join(dir, 'token.new'), join(dir, 'token.txt'));
  writeFileSync(join(dir, 'later.txt'), 'aws_secret_access_key = x\n');
  const r = await h.run(['sh', '-c', [
    `cat ${dir}/token.txt; echo "rewritten=$?"`,
    `cat ${dir}/later.txt; echo "later=$?"`,
    `cat ${dir}/other.txt >/dev/null; echo "other=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `rewritten=${KILLED}\nlater=${KILLED}\nother=0\n`);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => e.rule), ['credentials.files.deny[0]', 'credentials.files.deny[1]']);
});

test('a credentials directory the session moves away stays denied; one put at its path, and a file made in it later, are covered within moments', async (t) => {
  const { dir, h } = denyingFiles(t, (d) => [join(d, 'secrets')]);
  const before = h.sup.engine.policies.get(1)?.compiled;
  // the session renames the directory (no file in it is opened) and makes a new one at its path
  const mv = await h.run(['sh', '-c', `mv ${dir}/secrets ${dir}/moved && mkdir ${dir}/secrets; echo "mv=$?"`]);
  assert.equal(mv.stdout, 'mv=0\n');
  assert.ok(await waitFor(() => h.sup.engine.policies.get(1)?.compiled !== before, 5000), 'the policy was applied again once the path led elsewhere');
  writeFileSync(join(dir, 'secrets', 'key'), 'NEW KEY\n'); // a tool writes new credentials there
  // entered by identity once it is there, so that a hard link made elsewhere is the same file
  const key = h.sup.sensor.identify([join(dir, 'secrets', 'key')])[0]!;
  const F = LAYOUT.bridle_ident_key.fields;
  const entered = () =>
    h.sup.engine.policies.get(1)?.compiled.ident.some((e) => e.key.readUInt32LE(F.kind) === KEY_KIND.CRED && e.key.readBigUInt64LE(F.ino) === key.ino);
  assert.ok(await waitFor(() => entered() === true, 5000), 'applied again once the directory changed');
  const r = await h.run(['sh', '-c', [
    `cat ${dir}/moved/key; echo "moved=$?"`,
    `cat ${dir}/secrets/key; echo "new=$?"`,
    `ln ${dir}/secrets/key ${dir}/linked && cat ${dir}/linked; echo "linked=$?"`,
    `cat ${dir}/other.txt >/dev/null; echo "other=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `moved=${KILLED}\nnew=${KILLED}\nlinked=${KILLED}\nother=0\n`);
});

/** bridle's own files in `dir`: a TLS key, a certificates directory, a spool with a segment. */
function bridleOwn(dir: string): string[] {
  mkdirSync(join(dir, 'certs'));
  writeFileSync(join(dir, 'certs', 'query.token'), 'bearer-secret\n');
  writeFileSync(join(dir, 'host-key.pem'), 'HOST PRIVATE KEY\n');
  mkdirSync(join(dir, 'spool'));
  writeFileSync(join(dir, 'spool', '0000000000000001.seg'), 'argv of every session\n');
  writeFileSync(join(dir, 'other.txt'), 'fine\n');
  return [join(dir, 'host-key.pem'), join(dir, 'certs'), join(dir, 'spool')];
}

test("bridle's own files (its key, certificates, spool) are denied to every session, whatever its policy", async (t) => {
  const dir = tempDir(t);
  const own = bridleOwn(dir);
  const h = harness(t, `version: 1\nname: t\nexec: { default: allow }\n`, { bridleFiles: own });
  // written after the policy was applied: beneath a denied directory, or at a denied name
  writeFileSync(join(dir, 'spool', '0000000000000002.seg'), 'more argv\n');
  const r = await h.run(['sh', '-c', [
    `cat ${dir}/host-key.pem; echo "key=$?"`,
    `cat ${dir}/certs/query.token; echo "token=$?"`,
    `cat ${dir}/spool/0000000000000001.seg; echo "spool=$?"`,
    `cat ${dir}/spool/0000000000000002.seg; echo "later=$?"`,
    `ln ${dir}/certs/query.token ${dir}/copy && cat ${dir}/copy; echo "hardlink=$?"`,
    `cat ${dir}/other.txt >/dev/null; echo "other=$?"`,
    // its directories may be listed (a root session's `find /` walks through them): their files are kept
    `ls ${dir}/certs ${dir}/spool >/dev/null; echo "list=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `key=${KILLED}\ntoken=${KILLED}\nspool=${KILLED}\nlater=${KILLED}\nhardlink=${KILLED}\nother=0\nlist=0\n`);
  const v = violations(r.events, 'credential_file');
  assert.deepEqual(v.map((e) => [e.rule, e.verdict]), new Array(5).fill(['builtin.bridle_files', 'deny']));
  // untagged processes (bridle itself) read them
  assert.equal(spawnSync('cat', [join(dir, 'host-key.pem')], { encoding: 'utf8' }).stdout, 'HOST PRIVATE KEY\n');
});

test("a policy that names bridle's files too, or another credential file, keeps both denied; bridle's are reported as builtin.bridle_files", async (t) => {
  const dir = tempDir(t);
  const own = bridleOwn(dir);
  secrets(dir);
  const h = harness(t, `version: 1\nname: t\ncredentials:\n  files:\n    deny: [${join(dir, 'certs')}, ${join(dir, 'token.txt')}]\n`, { bridleFiles: own });
  const r = await h.run(['sh', '-c', `cat ${dir}/certs/query.token; echo "token=$?"; cat ${dir}/token.txt; echo "cred=$?"`]);
  assert.equal(r.stdout, `token=${KILLED}\ncred=${KILLED}\n`);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => e.rule), ['builtin.bridle_files', 'credentials.files.deny[1]']);
});

test("monitor mode: a read of bridle's own files is still refused (self-protection is no policy decision)", async (t) => {
  const dir = tempDir(t);
  const own = bridleOwn(dir);
  const h = harness(t, `version: 1\nname: t\nmode: monitor\nexec: { default: allow }\n`, { bridleFiles: own });
  const r = await h.run(['sh', '-c', `cat ${dir}/host-key.pem; echo "key=$?"`]);
  assert.equal(r.stdout, `key=${KILLED}\n`);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => [e.rule, e.verdict]), [['builtin.bridle_files', 'deny']]);
});

test('~/ in credentials.files.deny covers the home of every account NSS knows, whatever its uid (a service account made now)', async (t) => {
  const dir = tempDir(t);
  const home = join(dir, 'svc-home');
  mkdirSync(home);
  writeFileSync(join(home, '.bridle-test-cred'), 'svc secret\n');
  const user = `bridlet${process.pid % 100000}`;
  // a system account (uid below 1000), as services get; removed whatever happens
  const add = spawnSync('useradd', ['--system', '--no-create-home', '--home-dir', home, '--shell', '/usr/sbin/nologin', user], { encoding: 'utf8' });
  assert.equal(add.status, 0, add.stderr);
  t.after(() => void spawnSync('userdel', [user]));
  const uid = Number(spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout);
  assert.ok(uid > 0 && uid < 1000, `a system uid: ${uid}`);
  const h = harness(t, `version: 1\nname: t\ncredentials:\n  files:\n    deny: ["~/.bridle-test-cred"]\n`);
  const r = await h.run(['sh', '-c', `cat ${home}/.bridle-test-cred; echo "svc=$?"`]);
  assert.equal(r.stdout, `svc=${KILLED}\n`);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => e.rule), ['credentials.files.deny[0]']);
});

test('pipes and memfds reopened through /dev/stdin or /proc/self/fd are beneath no directory: a session with credential directories reads them', async (t) => {
  const dir = tempDir(t);
  secrets(dir);
  const h = harness(t, `version: 1\nname: t\ncredentials:\n  files:\n    deny: [${join(dir, 'secrets')}]\n`);
  const memfd = 'import os; fd = os.memfd_create("m"); os.write(fd, b"mem"); print(open(f"/proc/self/fd/{fd}").read())';
  const r = await h.run(['bash', '-c', [
    'echo piped | cat /dev/stdin',
    'cat /proc/self/fd/0 < <(echo substituted)',
    'echo err 2>&1 > /dev/stderr | cat >/dev/null; echo "stderr=$?"',
    `python3 -c '${memfd}'`,
    `cat ${dir}/secrets/key; echo "cred=$?"`,
  ].join('\n')]);
  assert.equal(r.stdout, `piped\nsubstituted\nstderr=0\nmem\ncred=${KILLED}\n`);
  assert.deepEqual(violations(r.events, 'credential_file').map((e) => e.rule), ['credentials.files.deny[0]'], 'only the credential file');
});
