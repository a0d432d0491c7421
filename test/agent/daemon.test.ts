// `bridle agent` as a real daemon: run and attach go through its control socket, sessions inside
// cannot use the socket, and a bad reload keeps the policy in force.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { PROBE } from '../net/helpers.js';
import { BIN, binEnv, endThenReap, tempDir, writeExecutable } from '../helpers/kernel.js';
import { waitFor } from '../../src/agent/run.js';
import { peerAlive, serveControl } from '../../src/agent/control.js';
import { killPid } from '../helpers/proc.js';
import { startTicks } from '../../src/kernel/failclosed.js';

const cleanEnv = binEnv;

/**
 * Runs a bridle command and waits for it without blocking the event loop: spawnSync would stall the
 * test process while the agent it started (a child of this process) needs it to drain its stderr.
 */
function bridle(args: string[], env: NodeJS.ProcessEnv = cleanEnv()): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const cp = spawn(BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  cp.stdout.on('data', (d) => (stdout += d));
  cp.stderr.on('data', (d) => (stderr += d));
  return new Promise((res) => cp.on('close', (status) => res({ status, stdout, stderr })));
}

const POLICY = `version: 1
name: daemon-test
exec:
  default: allow
  deny: [{ path: /usr/bin/wget }]
`;

/** `bridle agent` on `policyText`, with `more` flags and environment; ended in t.after. */
async function startAgent(t: TestContext, dir: string, policyText = POLICY, more: { args?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<{ agent: ChildProcess; socket: string; events: string; env: NodeJS.ProcessEnv; log: () => string }> {
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, policyText);
  const socket = join(dir, 'agent.sock');
  const events = join(dir, 'agent.ndjson');
  const agent = spawn(BIN, ['agent', '--policy', policy, '--socket', socket, '--report-socket', join(dir, 'report.sock'), '--events', events, ...(more.args ?? [])], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...cleanEnv(), ...more.env } });
  let err = '';
  agent.stderr!.on('data', (d) => (err += d));
  t.after(async () => {
    if (agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.once('exit', r));
    }
  });
  assert.ok(await waitFor(() => err.includes('control socket'), 15000), `agent started: ${err}`);
  return { agent, socket, events, env: { ...cleanEnv(), BRIDLE_SOCKET: socket }, log: () => err };
}

test('bridle run goes through a running agent; the control socket refuses session processes', async (t) => {
  const dir = tempDir(t);
  const { socket, events, env } = await startAgent(t, dir);
  const policy = join(dir, 'policy.yaml');
  const out = join(dir, 'run.ndjson');
  // inside the session, a process tries to use the control socket (attach its own parent out of the session)
  const r = await bridle(['run', '--policy', policy, '--events', out, '--', 'sh', '-c', `wget --version >/dev/null 2>&1; echo "wget=$?"; BRIDLE_SOCKET=${socket} ${BIN} agent status >/dev/null 2>&1; echo "status=$?"; python3 ${PROBE} unix ${socket}`], env);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'wget=137\nstatus=1\nEPERM\n', 'the control socket cannot even be connected to from a session');
  const evs = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.ok(evs.some((e) => e.type === 'exec' && e.path === '/usr/bin/wget' && e.verdict === 'deny'));
  assert.ok(evs.some((e) => e.type === 'session_end'));
  assert.ok(evs.some((e) => e.type === 'connect' && e.daddr === socket && e.verdict === 'deny' && e.rule === 'builtin.control_socket'));
  // the agent's own log has the session too
  assert.ok(await waitFor(() => existsSync(events) && readFileSync(events, 'utf8').includes('"session_end"'), 3000));
  // and the agent answers untagged callers
  const st = await bridle(['agent', 'status', '--socket', socket]);
  assert.equal(st.status, 0, st.stderr);
  assert.equal(JSON.parse(st.stdout).policy, 'daemon-test');

  // Another name for the socket (a symlink the session made) passes the check by name: the identity
  // check kills the process as its connect returns, before it can write a request. A monitor-mode
  // session is refused the same way (bridle's own socket is no policy decision).
  const alias = join(dir, 'alias.sock');
  const out2 = join(dir, 'run2.ndjson');
  const r2 = await bridle(['run', '--monitor', '--policy', policy, '--events', out2, '--', 'sh', '-c', `ln -s ${socket} ${alias}; python3 ${PROBE} unix ${alias}; echo "alias=$?"; python3 ${PROBE} unix ${socket}`], env);
  assert.equal(r2.status, 0, r2.stderr);
  assert.equal(r2.stdout, 'alias=137\nEPERM\n');
  const evs2 = readFileSync(out2, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const denied = evs2.filter((e) => e.type === 'connect' && e.rule === 'builtin.control_socket').map((e) => [e.daddr, e.verdict]);
  assert.deepEqual(denied, [[socket, 'deny'], [socket, 'deny']], 'reported by identity (under the socket\'s own name), then by name');
  assert.equal((await bridle(['agent', 'status', '--socket', socket])).status, 0, 'the agent is still there');
});

test('attach through the agent; a bad policy on reload is rejected and the old one stays', async (t) => {
  const dir = tempDir(t);
  const { agent, socket } = await startAgent(t, dir);
  const policy = join(dir, 'policy.yaml');
  writeFileSync(policy, 'version: 1\nname: broken\nexec:\n  deny:\n    - path: /no/such/binary\n');
  agent.kill('SIGHUP');
  const reload = await bridle(['agent', 'reload', '--socket', socket]);
  assert.equal(reload.status, 1);
  assert.match(reload.stdout, /policy\.yaml:5:13: exec\.deny\[0\]\.path: '\/no\/such\/binary': ENOENT/);

  const child = spawn('sh', ['-c', 'sleep 3; wget --version >/dev/null 2>&1; echo "wget=$?"'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const a = await bridle(['attach', '--pid', String(child.pid), '--socket', socket]);
  assert.equal(a.status, 0, a.stderr);
  assert.match(a.stdout, /tagged \d+ processes/);
  await new Promise((r) => child.once('exit', r));
  assert.equal(out, 'wget=137\n', 'the old policy (deny wget) is still in force');
});

test('a session process reports tool calls; the agent stamps who sent them from the kernel', async (t) => {
  const dir = tempDir(t);
  const { env } = await startAgent(t, dir);
  const policy = join(dir, 'policy.yaml');
  const out = join(dir, 'run.ndjson');
  const report = join(dir, 'report.sock');
  // the reporter lies about who it is, and tries to slip in an exec event
  const lie = JSON.stringify({ type: 'tool_call', session: 'forged', exec_id: 'forged', host: 'elsewhere', pid: 1, server: 'toy', tool: 'echo', verdict: 'allow' });
  const fake = JSON.stringify({ type: 'exec', path: '/fake', session: 'forged' });
  const script = `const s=require('net').createConnection(${JSON.stringify(report)}, () => s.end(${JSON.stringify(lie + '\n' + fake + '\n')})); s.on('close', () => console.log(process.pid))`;
  const r = await bridle(['run', '--policy', policy, '--events', out, '--', process.execPath, '-e', script], env);
  assert.equal(r.status, 0, r.stderr);
  const pid = Number(r.stdout.trim());
  await waitFor(() => readFileSync(out, 'utf8').includes('"tool_call"'), 3000);
  const evs = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const start = evs.find((e) => e.type === 'session_start');
  const call = evs.find((e) => e.type === 'tool_call');
  assert.ok(call, 'the tool call reached the session\'s events');
  assert.equal(call.session, start.session, 'stamped with the real session');
  assert.equal(call.pid, pid, 'stamped with the sender\'s pid');
  assert.notEqual(call.host, 'elsewhere');
  const exec = evs.find((e) => e.type === 'exec' && e.pid === pid);
  assert.equal(call.exec_id, exec.exec_id, 'stamped with the sender\'s exec_id, as the kernel keys it');
  assert.equal(call.tool, 'echo');
  assert.ok(!evs.some((e) => e.path === '/fake'), 'a session process cannot report exec events');
});

test('kill -9 the agent: its session stays governed, and the next agent reads what the session did meanwhile', async (t) => {
  const dir = tempDir(t);
  const a = await startAgent(t, mkdirP(join(dir, 'a')));
  const policy = join(dir, 'a', 'policy.yaml');
  const script = `echo $$ > ${dir}/pid; while [ ! -e ${dir}/go ]; do sleep 0.05; done
wget --version >/dev/null 2>&1; echo "wget=$?" > ${dir}/out
while [ ! -e ${dir}/go2 ]; do sleep 0.05; done
${BIN} agent status --socket ${dir}/b/agent.sock > ${dir}/status 2>&1; echo "status=$?" >> ${dir}/status; exec sleep 60`;
  const run = spawn(BIN, ['run', '--policy', policy, '--', '/bin/sh', '-c', script], { stdio: 'ignore', env: a.env });
  let session = 0;
  t.after(() => endThenReap([run], session, a.agent.pid));
  assert.ok(await waitFor(() => existsSync(join(dir, 'pid')), 10_000), 'the session started');
  session = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  a.agent.kill('SIGKILL');
  await new Promise((r) => a.agent.once('exit', r));
  // with no agent alive, the session tries a denied program
  writeFileSync(join(dir, 'go'), '');
  assert.ok(await waitFor(() => existsSync(join(dir, 'out')), 5000));
  assert.equal(readFileSync(join(dir, 'out'), 'utf8').trim(), 'wget=137', 'still denied with the agent dead');
  // a new agent reads the dead one's ring buffer and ships it like its own events
  const b = await startAgent(t, mkdirP(join(dir, 'b')));
  const wget = (): Record<string, unknown> | undefined =>
    // only whole lines: the agent may be writing the last one
    readFileSync(b.events, 'utf8').split('\n').slice(0, -1).map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.type === 'exec' && e.path === '/usr/bin/wget');
  assert.ok(await waitFor(() => existsSync(b.events) && !!wget(), 10_000), 'the new agent reports the exec the session made while no agent ran');
  assert.equal(wget()?.verdict, 'deny');
  assert.equal(wget()?.rule, 'exec.deny[0]');
  assert.equal(wget()?.policy, 'daemon-test');
  assert.equal(wget()?.pid !== undefined && (wget()?.ppid as number) === session, true, 'the exec is the session process\'s child');
  // the dead agent's session (root) is in no session of the new agent's own tag table, but its control
  // socket refuses it all the same: the dead agent's pinned tags are looked in too
  writeFileSync(join(dir, 'go2'), '');
  assert.ok(await waitFor(() => existsSync(join(dir, 'status')) && readFileSync(join(dir, 'status'), 'utf8').includes('status='), 15_000));
  const status = readFileSync(join(dir, 'status'), 'utf8');
  assert.match(status, /refused: requests from inside an agent session are not accepted/, status);
  assert.match(status, /status=1\n$/);
});

function mkdirP(d: string): string {
  mkdirSync(d, { recursive: true });
  return d;
}

test("a session's own policy does not take over auto-start: its agents: entries are ignored, the agent's policy keeps starting sessions", async (t) => {
  const dir = tempDir(t);
  const agentBin = writeExecutable(join(dir, 'bridle-daemon-agent'), '#!/bin/sh\nwget --version >/dev/null 2>&1; echo "wget=$?"\n');
  const agents = 'agents:\n  - name: daemon-agent\n    match: { exe: [bridle-daemon-agent] }\n';
  const { env, log } = await startAgent(t, dir, POLICY.replace('exec:', `${agents}exec:`));
  // a dry run under a policy that names the same agent (and denies nothing)
  const own = join(dir, 'agentpol.yaml');
  writeFileSync(own, `version: 1\nname: agentpol\n${agents}exec:\n  default: allow\n`);
  const r = await bridle(['run', '--monitor', '--policy', own, '--', 'true'], env);
  assert.equal(r.status, 0, r.stderr);
  // started the way a developer would, outside every session: the agent's own policy decides
  const cp = spawn(agentBin, [], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => void (cp.exitCode === null && cp.signalCode === null && cp.kill('SIGKILL')));
  let out = '';
  cp.stdout!.on('data', (d) => (out += d));
  await new Promise((res) => cp.on('close', res));
  assert.equal(out, 'wget=137\n', "a session under the agent's own policy (deny wget, enforce)");
  assert.ok(await waitFor(() => log().includes('agents: entries are ignored'), 3000), `the agent says so: ${log()}`);
});

test("bridle agent keeps its own files from every session (its key, spool, certificates), and ~/ covers the HOME a bridle run client gives its session", async (t) => {
  const dir = tempDir(t);
  const home = mkdirP(join(dir, 'bridle-home'));
  mkdirP(join(home, 'certs'));
  writeFileSync(join(home, 'certs', 'query.token'), 'bearer-secret\n');
  writeFileSync(join(dir, 'host-key.pem'), 'HOST PRIVATE KEY\n');
  mkdirP(join(dir, 'spool'));
  writeFileSync(join(dir, 'spool', 'spool.json'), '{}\n');
  // a HOME no account has: the client's, given to the session (credentials.env.allow names HOME)
  const userHome = mkdirP(join(dir, 'user-home'));
  writeFileSync(join(userHome, '.bridle-test-token'), 'ghp_secret\n');
  const policyText = `${POLICY}credentials:\n  env:\n    allow: [PATH, HOME]\n  files:\n    deny: ["~/.bridle-test-token"]\n`;
  const { socket } = await startAgent(t, dir, policyText, { args: ['--key', join(dir, 'host-key.pem'), '--spool', join(dir, 'spool')], env: { BRIDLE_HOME: home } });
  const policy = join(dir, 'policy.yaml');
  const out = join(dir, 'run.ndjson');
  const r = await bridle(['run', '--policy', policy, '--events', out, '--', 'sh', '-c', [
    `cat ${dir}/host-key.pem; echo "key=$?"`,
    `cat ${dir}/spool/spool.json; echo "spool=$?"`,
    `cat ${home}/certs/query.token; echo "token=$?"`,
    `cat $HOME/.bridle-test-token; echo "home=$?"`,
    `cat ${dir}/policy.yaml >/dev/null; echo "other=$?"`,
  ].join('\n')], { ...cleanEnv(), BRIDLE_SOCKET: socket, HOME: userHome });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'key=137\nspool=137\ntoken=137\nhome=137\nother=0\n');
  const evs = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(evs.filter((e) => e.type === 'violation').map((e) => e.rule), ['builtin.bridle_files', 'builtin.bridle_files', 'builtin.bridle_files', 'credentials.files.deny[0]']);
});

test('the control socket serves no peer that exited before it was identified, a zombie (exited, not yet reaped) included', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'control.sock');
  const asked: string[] = [];
  const server = await serveControl(socket, {
    isTagged: () => (asked.push('isTagged'), false),
    handle: async (req) => (asked.push(`handle ${req.op}`), { ok: true }),
  });
  t.after(() => server.close());
  let accepted = 0;
  server.server.on('connection', () => accepted++);
  assert.equal(peerAlive(process.pid), true);
  // The peer connects, sends a request and exits; its parent never reaps it. spawnSync holds this event
  // loop until then, so the connection is accepted only once the peer is a zombie.
  const py = `
import os, socket, sys, time
r_fd, w_fd = os.pipe()
if os.fork() == 0:
    os.close(r_fd)
    nul = os.open('/dev/null', os.O_RDWR)
    for fd in (0, 1, 2): os.dup2(nul, fd)
    peer = os.fork()
    if peer == 0:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.sendall(b'{"op":"status"}\\n')
        os._exit(0)
    while open(f'/proc/{peer}/stat').read().rsplit(')', 1)[1].split()[0] != 'Z': time.sleep(0.01)
    os.write(w_fd, f'{peer} {os.getpid()}\\n'.encode()); os.close(w_fd)
    time.sleep(30)
    os._exit(0)
os.close(w_fd)
print(os.read(r_fd, 100).decode().strip())
`;
  const r = spawnSync('python3', ['-c', py, socket], { encoding: 'utf8', timeout: 10_000 });
  const [peer, parent] = r.stdout.trim().split(' ').map(Number);
  t.after(() => killPid(parent)); // its zombie child goes with it
  assert.ok(peer && parent, `${r.stdout} ${r.stderr}`);
  assert.equal(peerAlive(peer), false, 'a zombie is no live peer');
  assert.ok(await waitFor(() => accepted === 1, 5000), 'the connection was accepted');
  await new Promise((res) => setTimeout(res, 200));
  assert.deepEqual(asked, [], 'refused before the tag table was asked or a request read');
});

/** Entries of the kernel's `policies` table among the BPF maps process `pid` holds (its fdinfo, then bpftool). */
function kernelPolicies(pid: number): number {
  const held = new Set<number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const id = /^map_id:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
      if (id) held.add(Number(id));
    } catch {
      /* closed meanwhile */
    }
  }
  const maps = JSON.parse(execFileSync('bpftool', ['-j', 'map', 'show'], { encoding: 'utf8' })) as Array<{ id: number; name?: string }>;
  const m = maps.find((x) => x.name === 'policies' && held.has(x.id));
  assert.ok(m, `the agent's policies map (bpftool map show: ${maps.filter((x) => x.name === 'policies').length} such maps)`);
  return (JSON.parse(execFileSync('bpftool', ['-j', 'map', 'dump', 'id', String(m.id)], { encoding: 'utf8' })) as unknown[]).length;
}

test('per-session policies: one per policy whatever HOME, unless ~/ names credentials; those whose sessions are over are freed', async (t) => {
  const dir = tempDir(t);
  const { agent, env } = await startAgent(t, dir);
  const pid = agent.pid!;
  assert.equal(kernelPolicies(pid), 1, 'the host policy');
  const plain = join(dir, 'plain.yaml');
  writeFileSync(plain, POLICY.replace('daemon-test', 'plain'));
  const homed = join(dir, 'homed.yaml');
  writeFileSync(homed, `${POLICY.replace('daemon-test', 'homed')}credentials:\n  files:\n    deny: ["~/.bridle-test-token"]\n`);
  const home = (n: string) => mkdirP(join(dir, `home-${n}`));
  const run = async (policy: string, h: string, cmd = 'true') => {
    const r = await bridle(['run', '--policy', policy, '--quiet', '--', 'sh', '-c', cmd], { ...env, HOME: h });
    assert.equal(r.status, 0, r.stderr);
    return r;
  };
  // a CI job per HOME: a policy without ~/ is the same policy for each
  await run(plain, home('1'));
  await run(plain, home('2'));
  assert.equal(kernelPolicies(pid), 2, 'one policy for both HOMEs');
  // a policy with ~/ is one per HOME; a new one frees those whose sessions are over
  await run(homed, home('1'));
  assert.equal(kernelPolicies(pid), 2, 'the plain policy, its sessions over, is gone');
  // a session still running keeps its policy
  const long = spawn(BIN, ['run', '--policy', plain, '--quiet', '--', 'sh', '-c', `echo $$ > ${dir}/pid; while [ ! -e ${dir}/go ]; do sleep 0.05; done; wget --version >/dev/null 2>&1; echo "wget=$?"`], { env: { ...env, HOME: home('1') }, stdio: ['ignore', 'pipe', 'pipe'] });
  let longOut = '';
  long.stdout!.on('data', (d) => (longOut += d));
  t.after(() => killPid(long.exitCode === null && long.signalCode === null ? long.pid : undefined));
  assert.ok(await waitFor(() => existsSync(join(dir, 'pid')), 10_000), 'the long session started');
  const longPid = Number(readFileSync(join(dir, 'pid'), 'utf8'));
  const longStart = startTicks(longPid);
  t.after(() => killPid(longStart !== undefined && startTicks(longPid) === longStart ? longPid : undefined)); // never a reused pid
  assert.equal(kernelPolicies(pid), 2, 'plain added, homed for home-1 (its session over) freed');
  await run(homed, home('2'), 'cat $HOME/.bridle-test-token 2>/dev/null; true');
  assert.equal(kernelPolicies(pid), 3, 'plain (a live session) kept, homed for home-2 added');
  writeFileSync(join(dir, 'go'), '');
  await new Promise((res) => long.on('close', res));
  assert.equal(longOut, 'wget=137\n', 'the live session kept its policy throughout');
  await run(plain, home('3'));
  assert.equal(kernelPolicies(pid), 3, 'plain again: the same policy, nothing new');
  await run(homed, home('3'));
  assert.equal(kernelPolicies(pid), 2, 'a new one: plain and homed for home-2, their sessions over, freed');
});
