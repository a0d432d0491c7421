// Connections made before a decision could see them: under a policy a reload then tightens, and by a
// process `bridle attach` tags afterwards. Each is judged again against the policy in force, as a connect
// to its peer would be; a denied one is closed. Untagged processes' connections are untouched.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as connectTcp, type Socket } from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { waitFor } from '../../src/agent/run.js';
import { parsePolicy } from '../../src/policy/load.js';
import { tempDir } from '../helpers/kernel.js';
import { killPid } from '../helpers/proc.js';
import { connects, dnsServer, netHarness, tcpServer, udpEcho } from './helpers.js';

/** A TCP echo server on `host` that keeps each connection open. */
const echoServer = (t: TestContext, host: string): Promise<number> => tcpServer(t, host, 0, true);

/** Resolves when `child` has exited. */
const exited = (child: ChildProcess): Promise<void> =>
  new Promise<void>((res) => (child.exitCode !== null || child.signalCode !== null ? res() : child.once('exit', () => res())));

/**
 * A python program that opens its connections, says `ready` (a file), waits for `go` (a file), then uses
 * each connection once and prints what became of it.
 */
function holder(dir: string, conns: Array<[string, 'tcp' | 'udp', string, number]>, ready = 'ready'): string[] {
  return ['python3', '-c', `
import errno, os, socket, time
conns = []
for name, kind, host, port in ${JSON.stringify(conns)}:
    s = socket.create_connection((host, port)) if kind == 'tcp' else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if kind == 'udp':
        s.connect((host, port))
    s.settimeout(2)
    conns.append((name, s))
open('${dir}/${ready}', 'w').close()
while not os.path.exists('${dir}/go'):
    time.sleep(0.02)
for name, s in conns:
    try:
        s.send(b'ping')
        print(name, 'ok' if s.recv(16) == b'ping' else 'closed', flush=True)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno), flush=True)
`];
}

/** The holder run untagged, by this test: its child (ended in t.after) and what it printed so far. */
function spawnHolder(t: TestContext, dir: string, conns: Array<[string, 'tcp' | 'udp', string, number]>, ready = 'ready'): { child: ChildProcess; out: () => string } {
  const child = spawn('python3', holder(dir, conns, ready).slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  return { child, out: () => out };
}

test('a policy that tightens closes the connections its sessions already have to what it now denies', async (t) => {
  const dir = tempDir(t, 'bridle-revisit-');
  const denied = await echoServer(t, '127.0.0.2');
  const kept = await echoServer(t, '127.0.0.1');
  const udp = await udpEcho(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: net-open
network:
  default: allow
`);
  const run = h.run(holder(dir, [['tcp-denied', 'tcp', '127.0.0.2', denied], ['tcp-kept', 'tcp', '127.0.0.1', kept], ['udp-denied', 'udp', '127.0.0.2', udp]]));
  // an untagged process holding a connection to the same address
  const { child: untagged, out: untaggedOut } = spawnHolder(t, dir, [['untagged', 'tcp', '127.0.0.2', denied]], 'ready-untagged');
  assert.ok(await waitFor(() => existsSync(join(dir, 'ready')) && existsSync(join(dir, 'ready-untagged')), 10_000), 'connections open');
  h.sup.setPolicy(parsePolicy(`version: 1
name: net-closed
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`, 'closed.yaml'));
  writeFileSync(join(dir, 'go'), '');
  const r = await run;
  const got = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(' ')));
  assert.equal(got['tcp-kept'], 'ok', 'a connection the new policy allows stays');
  assert.notEqual(got['tcp-denied'], 'ok', `the denied TCP connection is closed (got ${got['tcp-denied']})`);
  assert.notEqual(got['udp-denied'], 'ok', `the denied connected UDP socket is closed (got ${got['udp-denied']})`);
  const rev = connects(r.events).filter((e) => e.op === 'revisit');
  assert.deepEqual(rev.map((e) => [e.proto, e.daddr, e.verdict, e.rule]).sort(), [
    ['tcp', '127.0.0.2', 'deny', 'network.deny[0]'],
    ['udp', '127.0.0.2', 'deny', 'network.deny[0]'],
  ]);
  await exited(untagged);
  assert.equal(untaggedOut(), 'untagged ok\n', 'the untagged process keeps its connection');
});

test('bridle attach closes the connections the tree made before to what its policy denies', async (t) => {
  const dir = tempDir(t, 'bridle-revisit-');
  const denied = await echoServer(t, '127.0.0.2');
  const kept = await echoServer(t, '127.0.0.1');
  const h = await netHarness(t, `version: 1
name: net-attach
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  const { child: p, out } = spawnHolder(t, dir, [['tcp-denied', 'tcp', '127.0.0.2', denied], ['tcp-kept', 'tcp', '127.0.0.1', kept]]);
  assert.ok(await waitFor(() => existsSync(join(dir, 'ready')), 10_000), 'connections open');
  const { session } = h.sup.attach(p.pid!);
  writeFileSync(join(dir, 'go'), '');
  await exited(p);
  const got = Object.fromEntries(out().trim().split('\n').map((l) => l.split(' ')));
  assert.equal(got['tcp-kept'], 'ok');
  assert.notEqual(got['tcp-denied'], 'ok', `closed (got ${got['tcp-denied']})`);
  const name = h.sup.engine.sessions.get(session)?.name;
  assert.ok(await waitFor(() => connects(h.events).some((e) => e.session === name && e.op === 'revisit'), 3000), 'reported');
  const rev = connects(h.events).find((e) => e.session === name && e.op === 'revisit');
  assert.equal(rev?.verdict, 'deny');
  assert.equal(rev?.daddr, '127.0.0.2');
});

test('a connection a process outside the session holds too is reported, not closed', async (t) => {
  const dir = tempDir(t, 'bridle-revisit-');
  const denied = await echoServer(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: net-shared
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  // the parent connects and forks; only the child is attached; both hold the socket
  const p = spawn('python3', ['-c', `
import os, socket, time
s = socket.create_connection(('127.0.0.2', ${denied})); s.settimeout(2)
pid = os.fork()
if pid == 0:
    open('${dir}/child.tmp', 'w').write(str(os.getpid())); os.rename('${dir}/child.tmp', '${dir}/child')
    while not os.path.exists('${dir}/go'):
        time.sleep(0.02)
    s.send(b'ping')
    print('child', 'ok' if s.recv(16) == b'ping' else 'closed', flush=True)
    os._exit(0)
os.waitpid(pid, 0)
`], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => void p.kill('SIGKILL'));
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  assert.ok(await waitFor(() => existsSync(join(dir, 'child')), 10_000));
  const child = Number(readFileSync(join(dir, 'child'), 'utf8'));
  t.after(() => killPid(child)); // it holds the parent's output pipe open
  const { session } = h.sup.attach(child);
  writeFileSync(join(dir, 'go'), '');
  await exited(p);
  assert.equal(out, 'child ok\n', 'the shared connection stays');
  const name = h.sup.engine.sessions.get(session)?.name;
  const rev = connects(h.events).find((e) => e.session === name && e.op === 'revisit');
  assert.equal(rev?.verdict, 'would_deny');
});

test('what a connect would not decide, or still allows, stays up: an accepted connection, the DNS socket, a host: address past its TTL', async (t) => {
  const dir = tempDir(t, 'bridle-revisit-');
  const api = await echoServer(t, '127.0.0.7');
  const up = await dnsServer(t, { 'api.example.test': { A: ['127.0.0.7'], ttl: 1 } });
  const yaml = `version: 1
name: net-stays
network:
  default: deny
  allow:
    - host: api.example.test
      ports: [${api}]
  dns:
    upstream: 127.0.0.1:${up.port}
    min_ttl: 1
`;
  const h = await netHarness(t, yaml);
  const run = h.run(['python3', '-c', `
import os, socket, struct, time
q = struct.pack('>HHHHHH', 7, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in 'api.example.test'.split('.')) + b'\\0' + struct.pack('>HH', 1, 1)
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); dns.settimeout(3)
dns.connect(('127.0.0.53', 53)); dns.send(q); dns.recv(512)
web = socket.create_connection(('127.0.0.7', ${api})); web.settimeout(3)
srv = socket.socket(); srv.bind(('127.0.0.2', 0)); srv.listen(1)
open('${dir}/port.tmp', 'w').write(str(srv.getsockname()[1])); os.rename('${dir}/port.tmp', '${dir}/port')
inbound, _ = srv.accept(); inbound.settimeout(3)
open('${dir}/ready', 'w').close()
while not os.path.exists('${dir}/go'):
    time.sleep(0.02)
for name, use in (('web', lambda: (web.send(b'ping'), web.recv(16))[1] == b'ping'), ('dns', lambda: (dns.send(q), len(dns.recv(512)) > 12)[1]), ('inbound', lambda: inbound.send(inbound.recv(16)) == 4)):
    try:
        print(name, 'ok' if use() else 'closed', flush=True)
    except OSError as e:
        print(name, e, flush=True)
`]);
  assert.ok(await waitFor(() => existsSync(join(dir, 'port')) && readFileSync(join(dir, 'port'), 'utf8') !== '', 10_000), 'listening');
  // an untagged client of the session's server
  const client = await new Promise<Socket>((res, rej) => {
    const c = connectTcp(Number(readFileSync(join(dir, 'port'), 'utf8')), '127.0.0.2', () => res(c));
    c.on('error', rej);
  });
  t.after(() => void client.destroy());
  assert.ok(await waitFor(() => existsSync(join(dir, 'ready')), 10_000), 'connections open');
  await new Promise((r) => setTimeout(r, 1500)); // the host: answer's TTL (1 s) runs out
  h.sup.setPolicy(parsePolicy(yaml, 'again.yaml')); // a new policy: every connection is judged again
  const echoed = new Promise<string>((res) => client.once('data', (d) => res(String(d))));
  client.write('ping');
  writeFileSync(join(dir, 'go'), '');
  const r = await run;
  assert.equal(r.stdout, 'web ok\ndns ok\ninbound ok\n');
  assert.equal(await echoed, 'ping', 'the untagged client still talks to the session\'s server');
  assert.deepEqual(connects(r.events).filter((e) => e.op === 'revisit'), [], 'nothing was judged denied');
});
