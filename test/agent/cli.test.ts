// The CLI as a user meets it: doctor's report, bad input, the session environment.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { BIN, binEnv, endThenReap, tempDir, writeExecutable } from '../helpers/kernel.js';
import { waitFor } from '../../src/agent/run.js';
import { sessionEnv } from '../../src/agent/env.js';
import { parsePolicy } from '../../src/policy/load.js';

const env = binEnv;

test('doctor reports kernel features, the backend, and fixes', () => {
  const r = spawnSync(BIN, ['doctor', '--json'], { encoding: 'utf8', env: env() });
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as { backend: string; checks: { name: string; ok: boolean; detail: string; fix?: string }[] };
  const names = rep.checks.map((c) => c.name);
  for (const n of ['root', 'btf', 'bpffs', 'cgroup2', 'tracepoints', 'ringbuf', 'trampolines', 'bpf-lsm', 'landlock', 'compat-syscalls']) assert.ok(names.includes(n), n);
  // 32-bit system calls pass no syscall tracepoint: doctor runs an i386 program to know whether they exist
  const compat = rep.checks.find((c) => c.name === 'compat-syscalls')!;
  assert.match(compat.detail, /IA-32 emulation (on|off) \(an i386 program (runs|does not run)\)/);
  assert.equal(compat.ok, /emulation off/.test(compat.detail) && /no x32 ABI/.test(compat.detail));
  // this kernel (6.18) has the kfunc that kills a process before it runs
  assert.equal(rep.checks.find((c) => c.name === 'signal-task')?.ok, true);
  assert.equal(rep.checks.find((c) => c.name === 'sock-destroy')?.ok, true);
  const lsm = rep.checks.find((c) => c.name === 'bpf-lsm')!;
  // the backend follows from what actually loaded
  assert.equal(rep.backend, lsm.ok ? 'bpf-lsm' : 'sigkill');
  for (const c of rep.checks) if (!c.ok) assert.ok(c.fix, `${c.name} has a fix`);
});

test('bridle run rejects a bad policy with file:line:col and runs nothing', (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'bad.yaml');
  const marker = join(dir, 'ran');
  writeFileSync(p, 'version: 1\nname: x\nexec:\n  default: alow\n');
  const r = spawnSync(BIN, ['run', '--policy', p, '--', 'touch', marker], { encoding: 'utf8', env: env() });
  assert.equal(r.status, 2);
  assert.match(r.stderr, new RegExp(`${p.replace(/[.]/g, '\\.')}:4:12: exec\\.default must be one of allow \\| deny, not 'alow'`));
  assert.equal(spawnSync('test', ['-e', marker]).status, 1, 'the command did not run');
  const u = spawnSync(BIN, ['run', '--policy'], { encoding: 'utf8', env: env() });
  assert.equal(u.status, 2);
  assert.match(u.stderr, /--policy needs a value/);
});

test('a session gets only the environment variables the policy names', () => {
  const p = parsePolicy('version: 1\nname: x\ncredentials:\n  env:\n    allow: [PATH, LC_*]\n', 'p.yaml');
  const { env: e, dropped } = sessionEnv(p, { PATH: '/bin', LC_ALL: 'C', GITHUB_TOKEN: 'secret', AWS_SECRET_ACCESS_KEY: 'x' });
  assert.deepEqual(e, { PATH: '/bin', LC_ALL: 'C' });
  assert.deepEqual(dropped.sort(), ['AWS_SECRET_ACCESS_KEY', 'GITHUB_TOKEN']);
});

test('bridle run passes the exit status through and filters the environment end to end', (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'p.yaml');
  writeFileSync(p, 'version: 1\nname: x\ncredentials:\n  env:\n    allow: [PATH]\n');
  const r = spawnSync(BIN, ['run', '--policy', p, '--quiet', '--events', join(dir, 'e.ndjson'), '--', 'sh', '-c', 'echo "token=${GITHUB_TOKEN:-none}"; exit 7'], {
    encoding: 'utf8',
    env: { ...env(), GITHUB_TOKEN: 'secret', BRIDLE_STANDALONE: '1' },
  });
  assert.equal(r.status, 7, r.stderr);
  assert.equal(r.stdout, 'token=none\n');
});

test('a standalone bridle run starts no sessions of its own: its policy\'s agents: entries are not installed', async (t) => {
  const dir = tempDir(t);
  const name = `bridle-test-run-agent-${process.pid}`;
  const agentBin = writeExecutable(join(dir, name), '#!/bin/sh\nwget --version >/dev/null 2>&1; echo "wget=$?"\n');
  const p = join(dir, 'p.yaml');
  writeFileSync(p, `version: 1\nname: x\nagents:\n  - name: some-agent\n    match: { exe: [${name}] }\nexec:\n  default: allow\n  deny: [{ path: /usr/bin/wget }]\n`);
  const run = spawn(BIN, ['run', '--policy', p, '--quiet', '--', 'sh', '-c', `echo $$ > ${dir}/pid; while [ ! -e ${dir}/go ]; do sleep 0.05; done; wget --version >/dev/null 2>&1; echo "wget=$?"`], {
    env: { ...env(), BRIDLE_STANDALONE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  run.stdout!.on('data', (d) => (out += d));
  run.stderr!.on('data', (d) => (err += d));
  let session = 0;
  t.after(() => endThenReap([run], session, run.pid));
  assert.ok(await waitFor(() => existsSync(join(dir, 'pid')), 15_000), `the session started: ${err}`);
  session = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  // while it runs, the agent it names started by someone else (here, outside every session) is no session
  const outside = spawnSync(agentBin, { encoding: 'utf8' });
  assert.equal(outside.stdout, 'wget=0\n', 'not a session under the run\'s policy');
  writeFileSync(join(dir, 'go'), '');
  const status = await new Promise<number | null>((res) => run.on('close', (c) => res(c)));
  assert.equal(status, 0, err);
  assert.equal(out, 'wget=137\n', 'the run\'s own session is under its policy');
});
