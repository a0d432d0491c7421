// The compiler's bookkeeping for deny rules whose paths change: what a path led to stays denied, within
// bounds. Identities come from a stand-in for the sensor, so each compile can see a different file.
import assert from 'node:assert/strict';
import { existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { argvNames, compileExec, RULE_ID_BRIDLE_FILES, type CompiledExec, type FileIdent, type PathNames } from '../../src/policy/compile.js';
import { parsePolicy } from '../../src/policy/load.js';
import { CFG_CRED_DIRS, CFG_CRED_FILES, KEY_KIND, LAYOUT, VERDICT } from '../../src/kernel/layout.js';

test('a credential file rewritten again and again: every earlier identity stays denied; past 32768 the compile fails rather than drop one', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-compile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'token');
  writeFileSync(file, 'x');
  const policy = parsePolicy(`version: 1\nname: c\ncredentials:\n  files:\n    deny: [${file}]\n`, 'c.yaml');
  let generation = 0;
  // the file is a new inode at every compile; its directory stays the same
  const identify = (paths: string[]): Array<FileIdent | undefined> =>
    paths.map((p) => (p === file ? { dev: 7n, ino: 100n, generation } : { dev: 7n, ino: 2n, generation: 1 }));
  const credIdents = (c: CompiledExec) =>
    c.ident
      .filter((e) => e.key.readUInt32LE(LAYOUT.bridle_ident_key.fields.kind) === KEY_KIND.CRED)
      .map((e) => Number(e.key.readBigUInt64LE(LAYOUT.bridle_ident_key.fields.dev) >> 32n));
  let c = compileExec(policy, 0, 1, identify);
  assert.deepEqual(credIdents(c), [0]);
  assert.equal(c.carried.length, 0);
  for (generation = 1; generation <= 3; generation++) c = compileExec(policy, 0, 1, identify, c);
  assert.deepEqual(credIdents(c), [3, 0, 1, 2], 'what the path leads to now, then what it led to before, oldest first');
  // None is dropped to make room: past 32768 the compile fails (the supervisor keeps the one in force).
  const fill = (n: number) =>
    Array.from({ length: n }, (_, i) => {
      const e = c.carried[0]!;
      const key = Buffer.from(e.key);
      key.writeBigUInt64LE(7n | (BigInt(1_000_000 + i) << 32n), LAYOUT.bridle_ident_key.fields.dev);
      return { ...e, key, id: `i${key.toString('hex')}` };
    });
  const own = c.ident.slice(0, c.ident.length - c.carried.length);
  const full = fill(32767);
  const k = compileExec(policy, 0, 1, identify, { ...c, ident: [...own, ...full], carried: full });
  assert.equal(k.carried.length, 32768, 'the one the path led to before joined them');
  assert.deepEqual(credIdents(k).slice(0, 2), [4, 1_000_000]);
  assert.equal(credIdents(k).at(-1), 3);
  generation = 5;
  assert.throws(() => compileExec(policy, 0, 1, identify, k), /no longer where the policy names/);
  // the name rule is not carried: it is the same key every time
  const names = c.ident.filter((e) => e.key.readUInt32LE(LAYOUT.bridle_ident_key.fields.kind) === KEY_KIND.CRED_NAME);
  assert.equal(names.length, 1);
  // a compile without an earlier one (a reload) starts over
  assert.deepEqual(credIdents(compileExec(policy, 0, 1, identify)), [5]);
});

test('a file a deny rule named, moved to where an allow rule points, stays denied', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-compile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [a, b] = [join(dir, 'a'), join(dir, 'b')];
  writeFileSync(a, 'x');
  writeFileSync(b, 'y');
  const policy = parsePolicy(`version: 1\nname: c\nexec:\n  default: deny\n  deny: [{ path: ${a} }]\n  allow: [{ path: ${b} }]\n`, 'c.yaml');
  let moved = false;
  const idOf = (n: bigint): FileIdent => ({ dev: 7n, ino: n, generation: 1 });
  // then: a is inode 10, b is inode 20; now: `mv a b` made b inode 10, and a is a new file, inode 30
  const identify = (paths: string[]) => paths.map((p) => (p === a ? idOf(moved ? 30n : 10n) : p === b ? idOf(moved ? 10n : 20n) : idOf(2n)));
  const action = (c: CompiledExec, ino: bigint) =>
    c.ident
      .filter((e) => e.key.readUInt32LE(LAYOUT.bridle_ident_key.fields.kind) === KEY_KIND.EXEC && e.key.readBigUInt64LE(LAYOUT.bridle_ident_key.fields.ino) === ino)
      .map((e) => e.value.readUInt32LE(LAYOUT.bridle_rule.fields.action) & 0xff);
  const before = compileExec(policy, 0, 1, identify);
  assert.deepEqual([action(before, 10n), action(before, 20n)], [[VERDICT.DENY], [VERDICT.ALLOW]]);
  moved = true;
  const after = compileExec(policy, 0, 1, identify, before);
  assert.deepEqual(action(after, 10n), [VERDICT.DENY], 'the moved file: denied, not allowed by the rule for the path it now has');
  assert.deepEqual(action(after, 30n), [VERDICT.DENY], 'the new file at the denied path');
  // the next compile still tells its own entries from the carried ones
  const again = compileExec(policy, 0, 1, identify, after);
  assert.deepEqual(action(again, 10n), [VERDICT.DENY]);
  assert.equal(again.ident.length, after.ident.length);
});

test("bridle's own files are denied by every policy as credential files (builtin.bridle_files, rule id 4), before its own rules", (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-compile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [key, spool, later] = [join(dir, 'host-key.pem'), join(dir, 'spool'), join(dir, 'state')];
  writeFileSync(key, 'PRIVATE KEY\n');
  mkdirSync(spool);
  writeFileSync(join(spool, '0000000000000001.seg'), 'argv');
  const ids = new Map<string, bigint>();
  const identify = (paths: string[]): Array<FileIdent | undefined> =>
    paths.map((p) => (existsSync(p) ? { dev: 7n, ino: ids.get(p) ?? (ids.set(p, BigInt(ids.size + 10)), ids.get(p)!), generation: 1 } : undefined));
  const F = LAYOUT.bridle_ident_key.fields;
  const rulesOf = (entries: CompiledExec['ident'], kind: number) =>
    entries.filter((e) => e.key.readUInt32LE(F.kind) === kind).map((e) => e.value.readUInt32LE(LAYOUT.bridle_rule.fields.rule_id));
  // a policy that names no credential file at all
  const plain = parsePolicy('version: 1\nname: p\nexec:\n  default: allow\n', 'p.yaml');
  const c = compileExec(plain, 0, 1, identify, undefined, { bridleFiles: [key, spool, later, '/', '/usr/bin', '/dev/stdout'] });
  assert.deepEqual(c.rules.slice(0, 5).map((r) => r.id), ['exec.default', 'exec.fileless', 'builtin.dir_depth', 'builtin.argv_unseen', 'builtin.bridle_files']);
  assert.equal(c.rules[RULE_ID_BRIDLE_FILES]?.id, 'builtin.bridle_files', 'the rule id the kernel kills by whatever the mode');
  // the key by identity and name, the spool as a directory and its file by identity, a missing path watched for
  assert.deepEqual(rulesOf(c.ident, KEY_KIND.CRED), [4, 4, 4]);
  assert.deepEqual(rulesOf(c.ident, KEY_KIND.CRED_NAME), [4, 4]);
  assert.deepEqual(rulesOf(c.dirs, KEY_KIND.CRED), [4]);
  assert.deepEqual(c.credMissing, [later]);
  assert.equal(c.cfg.flags & (CFG_CRED_FILES | CFG_CRED_DIRS), CFG_CRED_FILES | CFG_CRED_DIRS, 'the credential checks run for every session');
  // never a system directory or a device (which would stop every session working)
  assert.ok(!c.watched.some((w) => ['/', '/usr/bin', '/dev/stdout'].includes(w.path)));
  // a policy that also names the key: its own rules come after, and the key stays builtin.bridle_files
  const named = parsePolicy(`version: 1\nname: p\ncredentials:\n  files:\n    deny: [${key}, ${join(dir, 'other')}]\n`, 'p.yaml');
  const n = compileExec(named, 0, 1, identify, undefined, { bridleFiles: [key] });
  assert.deepEqual(n.rules.slice(5).map((r) => r.id), ['credentials.files.deny[0]', 'credentials.files.deny[1]']);
  assert.deepEqual(rulesOf(n.ident, KEY_KIND.CRED), [4]);
  assert.deepEqual(rulesOf(n.ident, KEY_KIND.CRED_NAME), [4, 6]);
  // without bridle's files a policy without credential rules has none
  assert.equal(compileExec(plain, 0, 1, identify).cfg.flags & CFG_CRED_FILES, 0);
});

test('argv: word 0 is not entered under the name of a multi-call binary it leads to (busybox, toybox, coreutils, many names)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-argv-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, 'bin');
  const sbin = join(dir, 'sbin');
  mkdirSync(bin);
  mkdirSync(sbin);
  const exe = (p: string) => writeFileSync(p, '#!/bin/sh\n', { mode: 0o755 });
  // a multi-call binary by its many names: wget, ls, cat, sh (across two PATH directories) lead to it
  exe(join(bin, 'multi'));
  for (const n of ['wget', 'ls']) symlinkSync(join(bin, 'multi'), join(bin, n));
  for (const n of ['cat', 'sh']) symlinkSync(join(bin, 'multi'), join(sbin, n));
  // by its name alone (one other name)
  mkdirSync(join(dir, 'opt'));
  exe(join(dir, 'opt', 'busybox'));
  symlinkSync(join(dir, 'opt', 'busybox'), join(bin, 'nc'));
  // by its hard links
  exe(join(dir, 'opt', 'linked'));
  for (const n of ['l1', 'l2']) linkSync(join(dir, 'opt', 'linked'), join(dir, 'opt', n));
  symlinkSync(join(dir, 'opt', 'linked'), join(bin, 'grep'));
  // a plain alias (sh is dash): followed
  exe(join(bin, 'dash'));
  symlinkSync(join(bin, 'dash'), join(sbin, 'ash'));
  const path = `${bin}:${sbin}:relative`;
  const cache: PathNames = { path };
  assert.deepEqual(argvNames('wget', path, cache), ['wget']);
  assert.deepEqual(argvNames('sh', path, cache), ['sh']);
  assert.deepEqual(argvNames(join(sbin, 'cat'), path, cache), ['cat']);
  assert.deepEqual(argvNames('nc', path, cache), ['nc']);
  assert.deepEqual(argvNames('grep', path, cache), ['grep']);
  assert.deepEqual(argvNames('ash', path, cache), ['ash', 'dash']);
  assert.deepEqual(argvNames(join(sbin, 'ash'), path), ['ash', 'dash']);
  // three names (multi, and two more) are not yet many
  rmSync(join(bin, 'ls'));
  rmSync(join(sbin, 'sh'));
  assert.deepEqual(argvNames('wget', path), ['wget', 'multi']);
  // the names are read once per cache (once per compile)
  assert.deepEqual(argvNames('wget', path, cache), ['wget']);
});
