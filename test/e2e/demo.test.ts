// The README's main job: `bridle demo` runs the scripted agent as a session under the example policy,
// ships its events to an embedded collector over mutual TLS, and answers a lineage query from it. Run from
// wherever the checkout is (CI clones it under /tmp, which the demo policy keeps from running).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, realpathSync } from 'node:fs';
import { test } from 'node:test';
import { BIN, binEnv } from '../helpers/kernel.js';
import { REPO_ROOT } from '../../src/root.js';

test('bridle demo: allowed and denied execs live, the session tree, every event stored by the collector, a lineage answer', async (t) => {
  const before = new Set(readdirSync('/var/tmp').filter((n) => n.startsWith('bridle-demo-agent-')));
  const child = spawn(BIN, ['demo'], { stdio: ['ignore', 'pipe', 'pipe'], env: binEnv() });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const status = await new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  assert.equal(status, 0, out);
  // live verdicts, each with the rule that decided
  assert.match(out, /DENY\s+\d+ \/usr\/bin\/wget --version ← exec\.deny\[0\]/);
  assert.match(out, /DENY\s+\d+ \/tmp\/bridle-demo-id\s+← exec\.deny\[1\]/);
  assert.match(out, /DENY\s+\d+ \/usr\/bin\/git push --force origin main ← exec\.deny\[2\]/);
  assert.match(out, /VIOLATION \d+ credential_file: .*\/etc\/shadow ← credentials\.files\.deny\[2\]/);
  // the tree at the end: the agent ran to its end (exit 0), its denied children were killed
  const sh = realpathSync('/bin/sh').replace(/\//g, '\\/'); // the interpreter that ran, as the kernel resolves it
  assert.match(out, new RegExp(`└─ \\[\\d+\\] ${sh} \\S*demo-agent\\.sh \\(exit 0\\)`));
  assert.match(out, /\/usr\/bin\/wget --version \(killed by signal 9\) ✗ denied by exec\.deny\[0\]/);
  // every event reached the collector, and the lineage of a denied exec came back from it
  const shipped = /==> shipped (\d+) events, (\d+) lost; the collector stored (\d+)/.exec(out);
  assert.ok(shipped, out);
  assert.ok(Number(shipped[1]) >= 20);
  assert.equal(shipped[2], '0');
  assert.equal(shipped[3], shipped[1]);
  assert.match(out, new RegExp(`==> bridle lineage \\S+\\n\\s+ancestor\\s+\\[\\d+\\] ${sh}\\n\\s+target\\s+\\[\\d+\\] \\/usr\\/bin\\/wget\\s+✗ deny by exec\\.deny\\[0\\]`));
  // a checkout under /tmp (CI's) runs the agent from a copy, which is gone again afterwards
  if (/^\/tmp(\/|$)/.test(realpathSync(REPO_ROOT))) assert.match(out, /this checkout is under \/tmp.*the agent runs from \/var\/tmp\//);
  else t.diagnostic('the checkout is not under /tmp: the copy of the agent is not exercised here');
  assert.deepEqual(readdirSync('/var/tmp').filter((n) => n.startsWith('bridle-demo-agent-') && !before.has(n)), []);
});
