// Small pieces: tool-name globs, path containment, stdio framing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isUnder } from '../../src/mcp/conditions.js';
import { compileGlob, GlobError } from '../../src/mcp/glob.js';
import { LineSplitter } from '../../src/mcp/jsonrpc.js';

test('glob: *, ?, classes, alternation, escapes; anchored; bad globs throw', () => {
  const m = (g: string, n: string) => compileGlob(g).test(n);
  assert.ok(m('list_*', 'list_issues'));
  assert.ok(!m('list_*', 'xlist_issues'), 'anchored at the start');
  assert.ok(!m('get', 'get_issue'), 'anchored at the end');
  assert.ok(m('*', 'a/b.c'));
  assert.ok(m('get-?', 'get-x') && !m('get-?', 'get-xy'));
  assert.ok(m('[a-c]x', 'bx') && !m('[!a-c]x', 'bx') && m('[!a-c]x', 'dx'));
  assert.ok(m('{create,delete}_*', 'delete_repo') && !m('{create,delete}_*', 'update_repo'));
  assert.ok(m('a\\*', 'a*') && !m('a\\*', 'ab'));
  assert.ok(m('a.b', 'a.b') && !m('a.b', 'axb'), '. is literal');
  assert.ok(m('a+(b)', 'a+(b)'), 'regex characters are literal');
  assert.ok(compileGlob('Delete_*').testFolded('ＤＥＬＥＴＥ_x'));
  for (const bad of ['', 'a[', 'a{b', 'a}', 'a]', 'a\\']) assert.throws(() => compileGlob(bad), GlobError, bad);
});

test('isUnder: lexical containment without escapes', () => {
  assert.ok(isUnder('/work/a', '/work'));
  assert.ok(isUnder('/work', '/work/'));
  assert.ok(isUnder('/work/./a/../b', '/work'));
  assert.ok(!isUnder('/work/../etc/passwd', '/work'));
  assert.ok(!isUnder('/workshop/a', '/work'));
  assert.ok(!isUnder('work/a', '/work'), 'relative paths are not under anything');
  assert.ok(!isUnder('/work/a\0/x', '/work'));
  assert.ok(isUnder('/anything', '/'));
});

test('LineSplitter: lines across chunks, CRLF, blank lines, oversized lines dropped without buffering', () => {
  const lines: string[] = [];
  const over: number[] = [];
  const s = new LineSplitter(10, (l) => lines.push(l), (n) => over.push(n));
  s.push(Buffer.from('ab'));
  s.push(Buffer.from('c\r\n\n  \nhé'));
  s.push(Buffer.from('\n0123456789ABCDEF'));
  s.push(Buffer.from('GHIJ\nok\nlast'));
  s.end();
  assert.deepEqual(lines, ['abc', 'hé', 'ok', 'last']);
  assert.deepEqual(over, [20]);
  // a multi-byte character split across chunks survives
  const l2: string[] = [];
  const s2 = new LineSplitter(100, (l) => l2.push(l), () => undefined);
  const b = Buffer.from('ü\n');
  s2.push(b.subarray(0, 1));
  s2.push(b.subarray(1));
  assert.deepEqual(l2, ['ü']);
});
