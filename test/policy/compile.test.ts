// The compiler's bookkeeping for deny rules whose paths change: what a path led to stays denied, within
// bounds. Identities come from a stand-in for the sensor, so each compile can see a different file.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { compileExec, type CompiledExec, type FileIdent } from '../../src/policy/compile.js';
import { parsePolicy } from '../../src/policy/load.js';
import { KEY_KIND, LAYOUT } from '../../src/kernel/layout.js';

test('a credential file rewritten again and again: every earlier identity stays denied, at most 4096 of them', (t) => {
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
  // with 4096 kept already, the oldest goes
  const filler = c.carried.slice(0, 1).flatMap((e) =>
    Array.from({ length: 4096 }, (_, i) => {
      const key = Buffer.from(e.key);
      key.writeBigUInt64LE(7n | (BigInt(1_000_000 + i) << 32n), LAYOUT.bridle_ident_key.fields.dev);
      return { ...e, key, id: `i${key.toString('hex')}` };
    }),
  );
  const own = c.ident.slice(0, c.ident.length - c.carried.length);
  c = { ...c, ident: [...own, ...filler], carried: filler };
  c = compileExec(policy, 0, 1, identify, c);
  const gens = credIdents(c);
  assert.equal(gens[0], 4, 'what the path leads to now');
  assert.equal(gens.length, 1 + 4096, 'and at most 4096 before it');
  assert.equal(gens[1], 1_000_001, 'the oldest went');
  assert.equal(gens.at(-1), 3, 'the one the path led to before is kept');
  // the name rule is not carried: it is the same key every time
  const names = c.ident.filter((e) => e.key.readUInt32LE(LAYOUT.bridle_ident_key.fields.kind) === KEY_KIND.CRED_NAME);
  assert.equal(names.length, 1);
  // a compile without an earlier one (a reload) starts over
  assert.deepEqual(credIdents(compileExec(policy, 0, 1, identify)), [4]);
});
