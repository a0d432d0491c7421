// Network reach decided in the real kernel (cgroup sock_addr programs at the cgroup v2 root), for tagged
// sessions only. Traffic goes only to loopback addresses and to a network namespace the test creates.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { waitFor } from '../../src/agent/run.js';
import { parsePolicy } from '../../src/policy/load.js';
import { ccHelper, tempDir, violations } from '../helpers/kernel.js';
import { connects, execs, netHarness, netnsPeer, probe, PROBE, tcpServer, udpEcho, uringHelper } from './helpers.js';

/** Connects from this (untagged) process; resolves 'ok' or the error code. */
function untaggedConnect(host: string, port: number): Promise<string> {
  return new Promise((res) => {
    const c = tcpConnect({ host, port });
    c.on('connect', () => {
      c.destroy();
      res('ok');
    });
    c.on('error', (e: NodeJS.ErrnoException) => res(e.code ?? 'error'));
  });
}

test('TCP and UDP over IPv4: allowed reach, denied fail at once with EPERM and are reported with the rule', async (t) => {
  const p1 = await tcpServer(t, '127.0.0.1');
  const p2 = await tcpServer(t, '127.0.0.2');
  const p3 = await tcpServer(t, '127.0.0.3');
  const u1 = await udpEcho(t, '127.0.0.1');
  const u2 = await udpEcho(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: net-basic
network:
  default: deny
  allow:
    - cidr: 127.0.0.1/32
  deny:
    - cidr: 127.0.0.2/32
`);
  const t0 = Date.now();
  const r = await probe(h, ['tcp', '127.0.0.1', `${p1}`, 'tcp', '127.0.0.2', `${p2}`, 'tcp', '127.0.0.3', `${p3}`,
    'udp', '127.0.0.1', `${u1}`, 'udp', '127.0.0.2', `${u2}`, 'udpc', '127.0.0.2', `${u2}`, 'udpc', '127.0.0.1', `${u1}`]);
  assert.deepEqual(r.results, ['ok', 'EPERM', 'EPERM', 'ok', 'EPERM', 'EPERM', 'ok']);
  // EPERM is the kernel's synchronous refusal (a dropped packet would time out: 3 s TCP, 2 s UDP per probe)
  assert.ok(Date.now() - t0 < 5000, 'denials do not wait for a timeout');

  const ev = connects(r.events);
  const tcpDeny = ev.find((e) => e.daddr === '127.0.0.2' && e.proto === 'tcp');
  assert.ok(tcpDeny, 'connect event for the denied TCP connect');
  const py = execs(r.events).find((e) => e.exec_id === tcpDeny.exec_id);
  assert.ok(py, 'the connect names the exec of the process that made it');
  assert.equal(py.pid, tcpDeny.pid);
  assert.ok(py.argv.includes(PROBE));
  assert.equal(tcpDeny.verdict, 'deny');
  assert.equal(tcpDeny.rule, 'network.deny[0]');
  assert.equal(tcpDeny.family, 'inet');
  assert.equal(tcpDeny.dport, p2);
  assert.equal(tcpDeny.op, 'connect');
  assert.equal(tcpDeny.parent_exec_id, py.parent_exec_id);
  const dflt = ev.find((e) => e.daddr === '127.0.0.3');
  assert.equal(dflt?.verdict, 'deny');
  assert.equal(dflt?.rule, 'network.default');
  const udpDeny = ev.find((e) => e.daddr === '127.0.0.2' && e.proto === 'udp' && e.op === 'sendmsg');
  assert.equal(udpDeny?.verdict, 'deny');
  assert.equal(udpDeny?.dport, u2);
  const allowed = ev.filter((e) => e.daddr === '127.0.0.1');
  assert.ok(allowed.length >= 3, 'allowed connects and datagrams are reported too');
  assert.ok(allowed.every((e) => e.verdict === 'allow' && e.rule === 'network.allow[0]'));
});

test('IPv6 (::1) and IPv4-mapped IPv6 addresses: mapped ones are judged by the IPv4 rules', async (t) => {
  const p6 = await tcpServer(t, '::1');
  const p1 = await tcpServer(t, '127.0.0.1');
  const p2 = await tcpServer(t, '127.0.0.2');
  const u6 = await udpEcho(t, '::1');
  const h = await netHarness(t, `version: 1
name: net-v6
network:
  default: deny
  allow:
    - cidr: ::1/128
      proto: tcp
    - cidr: 127.0.0.0/8
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await probe(h, ['tcp', '::1', `${p6}`, 'tcp', '::ffff:127.0.0.1', `${p1}`, 'tcp', '::ffff:127.0.0.2', `${p2}`,
    'udp', '::1', `${u6}`]);
  assert.deepEqual(r.results, ['ok', 'ok', 'EPERM', 'EPERM']);
  const ev = connects(r.events);
  const mapped = ev.find((e) => e.daddr === '::ffff:127.0.0.2');
  assert.equal(mapped?.family, 'inet6');
  assert.equal(mapped?.verdict, 'deny');
  assert.equal(mapped?.rule, 'network.deny[0]', 'the IPv4 deny rule decided the mapped address');
  assert.equal(ev.find((e) => e.daddr === '::ffff:127.0.0.1')?.rule, 'network.allow[1]');
  assert.equal(ev.find((e) => e.daddr === '::1' && e.proto === 'tcp')?.rule, 'network.allow[0]');
  const udp6 = ev.find((e) => e.daddr === '::1' && e.proto === 'udp');
  assert.equal(udp6?.verdict, 'deny', 'the ::1 rule is TCP only');
  assert.equal(udp6?.rule, 'network.default');
});

test('port ranges, protocols, nested prefixes; an explicit deny beats an allow', async (t) => {
  // three ports of one range, found free together
  let base = 0;
  for (let i = 0; i < 20 && !base; i++) {
    const b = 20000 + Math.floor(Math.random() * 30000);
    try {
      await tcpServer(t, '127.0.0.1', b);
      await tcpServer(t, '127.0.0.1', b + 1);
      await tcpServer(t, '127.0.0.1', b + 5);
      base = b;
    } catch {
      /* in use: try another */
    }
  }
  assert.ok(base, 'found free ports');
  const u = await udpEcho(t, '127.0.0.1');
  const h = await netHarness(t, `version: 1
name: net-ports
network:
  default: deny
  allow:
    - cidr: 127.0.0.0/8
      ports: ["${base}-${base + 2}"]
      proto: tcp
    - cidr: 127.0.0.1/32
      ports: [${u}]
      proto: udp
  deny:
    - cidr: 127.0.0.0/24
      ports: [${base + 1}]
`);
  const r = await probe(h, ['tcp', '127.0.0.1', `${base}`, 'tcp', '127.0.0.1', `${base + 1}`, 'tcp', '127.0.0.1', `${base + 5}`,
    'udp', '127.0.0.1', `${u}`, 'tcp', '127.0.0.1', `${u}`]);
  // base: the /32 entry holds only the UDP port, its parent /8 the TCP range → allowed
  assert.deepEqual(r.results, ['ok', 'EPERM', 'EPERM', 'ok', 'EPERM']);
  const ev = connects(r.events);
  assert.equal(ev.find((e) => e.dport === base)?.rule, 'network.allow[0]');
  assert.equal(ev.find((e) => e.dport === base + 1)?.rule, 'network.deny[0]', 'deny beats allow');
  assert.equal(ev.find((e) => e.dport === base + 5)?.rule, 'network.default');
  assert.equal(ev.find((e) => e.dport === u && e.proto === 'udp')?.rule, 'network.allow[1]');
  assert.equal(ev.find((e) => e.dport === u && e.proto === 'tcp')?.rule, 'network.default', 'proto: udp does not allow TCP');
});

test('an untagged process is unaffected while a session with the same rules runs', async (t) => {
  const p = await tcpServer(t, '127.0.0.1');
  const h = await netHarness(t, `version: 1
name: net-untagged
network:
  default: deny
  deny:
    - cidr: 127.0.0.0/8
`);
  const session = probe(h, ['tcp', '127.0.0.1', `${p}`, 'sleep', '0.5', 'tcp', '127.0.0.1', `${p}`]);
  assert.equal(await untaggedConnect('127.0.0.1', p), 'ok');
  // a whole untagged program too (spawned asynchronously: the greeter runs on this event loop)
  const child = spawn('python3', [PROBE, 'tcp', '127.0.0.1', `${p}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  await new Promise((res) => child.on('exit', res));
  assert.equal(out, 'ok\n', 'untagged python reaches a denied address');
  const r = await session;
  assert.deepEqual(r.results, ['EPERM', 'EPERM']);
  assert.ok(!h.events.some((e) => e.type === 'connect' && (e.pid === child.pid || e.pid === process.pid)), 'no events for untagged processes');
});

test('a grandchild after double fork and setsid is still blocked', async (t) => {
  const p = await tcpServer(t, '127.0.0.2');
  const dir = tempDir(t);
  const out = join(dir, 'out');
  const h = await netHarness(t, `version: 1
name: net-fork
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await h.run(['sh', '-c', `(setsid python3 ${PROBE} tcp 127.0.0.2 ${p} > ${out} &) ; sleep 0.1`]);
  assert.equal(r.status, 0);
  await waitFor(() => {
    try {
      return readFileSync(out, 'utf8').includes('\n');
    } catch {
      return false;
    }
  }, 5000);
  assert.equal(readFileSync(out, 'utf8'), 'EPERM\n');
  const deny = connects(h.events).find((e) => e.daddr === '127.0.0.2');
  assert.equal(deny?.verdict, 'deny');
});

test('TCP fast open, io_uring connect and connect(0.0.0.0) are decided too', async (t) => {
  const p1 = await tcpServer(t, '127.0.0.1');
  const p2 = await tcpServer(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: net-evasions
network:
  default: allow
  deny:
    - cidr: 127.0.0.1/32
    - cidr: ::1/128
`);
  // connect(0.0.0.0) lands on 127.0.0.1 (and :: on ::1): it must meet the loopback rules
  assert.equal(await untaggedConnect('0.0.0.0', p1), 'ok', 'untagged: 0.0.0.0 reaches the loopback listener');
  const r = await probe(h, ['tfo', '127.0.0.1', `${p1}`, 'tfo', '127.0.0.2', `${p2}`, 'tcp', '0.0.0.0', `${p1}`, 'tcp', '::', `${p1}`]);
  assert.deepEqual(r.results, ['EPERM', 'ok', 'EPERM', 'EPERM']);
  assert.equal(connects(r.events).find((e) => e.daddr === '0.0.0.0')?.rule, 'network.deny[0]');
  assert.equal(connects(r.events).find((e) => e.daddr === '::')?.rule, 'network.deny[1]');

  const uring = uringHelper(t);
  if (!uring) return t.skip('no C compiler for the io_uring helper');
  const plain = spawnSync(uring, ['127.0.0.1', `${p1}`], { encoding: 'utf8' });
  if (plain.stdout.trim() !== 'ok') return t.skip(`io_uring not usable here: ${plain.stdout.trim()}`);
  const u = await h.run([uring, '127.0.0.1', `${p1}`]);
  assert.equal(u.stdout, 'EPERM\n', 'io_uring connect denied');
  const u2 = await h.run([uring, '127.0.0.2', `${p2}`]);
  assert.equal(u2.stdout, 'ok\n', 'io_uring connect allowed');
});

test('connect(0.0.0.0) from a socket bound to an address is judged as that address; NAT64 addresses as the IPv4 they carry', async (t) => {
  const p3 = await tcpServer(t, '127.0.0.3');
  const h = await netHarness(t, `version: 1
name: net-any-bound
network:
  default: allow
  deny:
    - cidr: 127.0.0.3/32
`);
  // the kernel sends connect(0.0.0.0) to the socket's bound source address
  const untagged = await new Promise<string>((res) => execFile('python3', [PROBE, 'tcpfrom', '127.0.0.3', '0.0.0.0', `${p3}`], (_e, out) => res(out)));
  assert.equal(untagged, 'ok\n', 'untagged: reaches 127.0.0.3');
  const r = await probe(h, ['tcpfrom', '127.0.0.3', '0.0.0.0', `${p3}`, 'tcpfrom', '::ffff:127.0.0.3', '::ffff:0.0.0.0', `${p3}`]);
  assert.deepEqual(r.results, ['EPERM', 'EPERM']);
  assert.ok(connects(r.events).filter((e) => e.verdict === 'deny').every((e) => e.rule === 'network.deny[0]'));
  // 64:ff9b::127.0.0.3, in a network namespace of the session's own (nothing leaves it either way)
  const n = await h.run(['unshare', '-n', 'python3', PROBE, 'tcp', '64:ff9b::7f00:3', '80']);
  assert.equal(n.stdout, 'EPERM\n', 'judged as 127.0.0.3');
});

test('monitor mode reports would_deny and blocks nothing', async (t) => {
  const p = await tcpServer(t, '127.0.0.2');
  const u = await udpEcho(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: net-monitor
mode: monitor
network:
  default: deny
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await probe(h, ['tcp', '127.0.0.2', `${p}`, 'udp', '127.0.0.2', `${u}`]);
  assert.deepEqual(r.results, ['ok', 'ok']);
  const ev = connects(r.events).filter((e) => e.daddr === '127.0.0.2');
  assert.equal(ev.length, 2);
  assert.ok(ev.every((e) => e.verdict === 'would_deny' && e.rule === 'network.deny[0]'));
});

test('a host in a network namespace the test owns (veth); a policy update applies to the running session at once', async (t) => {
  const peer = await netnsPeer(t);
  const policy = (action: 'allow' | 'deny') => parsePolicy(`version: 1
name: net-ns-${action}
network:
  default: deny
  ${action}:
    - cidr: ${peer.nsAddr}/32
      ports: [${peer.port}]
`, 'p.yaml');
  const h = await netHarness(t, 'version: 1\nname: placeholder\n');
  h.sup.setPolicy(policy('allow'));
  const { held } = h.sup.run(['python3', PROBE, 'tcp', peer.nsAddr, `${peer.port}`, 'sleep', '1', 'tcp', peer.nsAddr, `${peer.port}`], { stdio: 'pipe', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  t.after(() => {
    if (held.child.exitCode === null) held.child.kill('SIGKILL');
  });
  let out = '';
  let switched = false;
  held.child.stdout!.on('data', (d) => {
    out += d;
    if (!switched && out.includes('\n')) {
      switched = true;
      h.sup.setPolicy(policy('deny')); // while the session sleeps
    }
  });
  const { status } = await held.exited;
  assert.equal(status, 0);
  assert.equal(out, 'ok\nEPERM\n');
  const ev = connects(h.events).filter((e) => e.daddr === peer.nsAddr);
  assert.deepEqual(ev.map((e) => `${e.verdict} ${e.rule}`), ['allow network.allow[0]', 'deny network.deny[0]']);
});

test('sessions with different policies on one host each get their own rules', async (t) => {
  const p = await tcpServer(t, '127.0.0.2');
  const h = await netHarness(t, `version: 1
name: open
network:
  default: allow
`);
  h.sup.setPolicy(parsePolicy(`version: 1
name: closed
network:
  default: deny
`, 'closed.yaml'), 2);
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const a = h.sup.run(['python3', PROBE, 'sleep', '0.3', 'tcp', '127.0.0.2', `${p}`], { stdio: 'pipe', env, policyId: 1 });
  const b = h.sup.run(['python3', PROBE, 'sleep', '0.3', 'tcp', '127.0.0.2', `${p}`], { stdio: 'pipe', env, policyId: 2 });
  const read = (c: typeof a) => new Promise<string>((res) => {
    let s = '';
    c.held.child.stdout!.on('data', (d) => (s += d));
    void c.held.exited.then(() => res(s));
  });
  const [ra, rb] = await Promise.all([read(a), read(b)]);
  assert.equal(ra, 'ok\n');
  assert.equal(rb, 'EPERM\n');
});

test('routing headers and source routes, which send packets past the address the hooks judged, are refused to sessions', async (t) => {
  const h = await netHarness(t, `version: 1
name: net-route
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await probe(h, ['opt', 'rthdr', 'opt', 'ipopts', 'opt', 'reuse']);
  assert.deepEqual(r.results, ['EPERM', 'EPERM', 'ok'], 'an ordinary option still works');
  const v = violations(r.events, 'source_route');
  assert.deepEqual(v.map((e) => [e.rule, e.verdict]), [['builtin.no_source_route', 'deny'], ['builtin.no_source_route', 'deny']]);
  assert.match(v[0]!.detail ?? '', /IPV6_RTHDR/);
  assert.match(v[1]!.detail ?? '', /IP_OPTIONS/);
  // untagged, the kernel takes both (an IPv6 routing header from any user)
  assert.equal(spawnSync('python3', [PROBE, 'opt', 'rthdr', 'opt', 'ipopts'], { encoding: 'utf8' }).stdout, 'ok\nok\n');
});

test('raw, ICMP and packet sockets, which no connect or send rule would see, are refused to sessions with a network policy', async (t) => {
  const canPing = spawnSync('python3', [PROBE, 'sock', 'ping'], { encoding: 'utf8' }).stdout.trim() === 'ok';
  const h = await netHarness(t, `version: 1
name: net-raw
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await probe(h, ['sock', 'raw', 'sock', 'raw6', ...(canPing ? ['sock', 'ping'] : [])]);
  assert.deepEqual(r.results, ['EPERM', 'EPERM', ...(canPing ? ['EPERM'] : [])]);
  const v = violations(r.events);
  assert.ok(v.some((e) => e.what === 'raw_socket' && e.rule === 'builtin.no_raw_socket' && e.verdict === 'deny' && /AF_INET6, SOCK_RAW, 58/.test(e.detail ?? '')), JSON.stringify(v));
  if (canPing) assert.ok(v.some((e) => e.what === 'icmp_socket'));

  // packet sockets are not inet: the process is killed at socket()
  const p = await h.run(['python3', PROBE, 'sock', 'packet', 'sock', 'raw']);
  assert.equal(p.status, 137);
  assert.equal(p.stdout, '');
  assert.equal(violations(p.events, 'packet_socket').length, 1);

  // the same through io_uring (IORING_OP_SOCKET, no socket(2) call): killed when the request is submitted
  const usock = ccHelper(t, join(import.meta.dirname, 'fixtures', 'uring_socket.c'));
  assert.ok(usock, 'cc builds the io_uring socket helper');
  const [AF_INET, AF_PACKET, SOCK_RAW, ICMP, ETH_P_ALL_BE] = ['2', '17', '3', '1', '768'];
  const u = await h.run([usock, AF_PACKET, SOCK_RAW, ETH_P_ALL_BE]);
  assert.equal(u.status, 137);
  assert.equal(u.stdout, '');
  assert.equal(violations(u.events, 'packet_socket').length, 1);
  // inet sockets from io_uring pass sock_create like socket(2) ones: a raw one is refused, the process lives
  const ur = await h.run([usock, AF_INET, SOCK_RAW, ICMP]);
  assert.deepEqual([ur.status, ur.stdout], [0, `${spawnSync('python3', ['-c', 'import os; print(os.strerror(1))'], { encoding: 'utf8' }).stdout}`]);

  // untagged: untouched
  assert.equal(spawnSync('python3', [PROBE, 'sock', 'raw', 'sock', 'packet'], { encoding: 'utf8' }).stdout, 'ok\nok\n');
  assert.equal(spawnSync(usock, [AF_PACKET, SOCK_RAW, ETH_P_ALL_BE], { encoding: 'utf8' }).stdout, 'ok\n');
});

test('only sockets the connect and send hooks decide: UDP-Lite (whose connect no hook sees) and vsock are refused, MPTCP is decided like TCP', async (t) => {
  const p1 = await tcpServer(t, '127.0.0.1');
  const p2 = await tcpServer(t, '127.0.0.2');
  const can = (kind: string) => spawnSync('python3', [PROBE, 'sock', kind], { encoding: 'utf8' }).stdout.trim() === 'ok';
  // UDP-Lite is built into every kernel with IPv4; MPTCP and vsock are options, said when absent
  assert.ok(can('udplite'), 'UDP-Lite sockets open here (untagged)');
  const mptcp = can('mptcp');
  if (!mptcp) t.diagnostic('no MPTCP on this kernel: its connects are not checked');
  const h = await netHarness(t, `version: 1
name: net-protocols
network:
  default: allow
  deny:
    - cidr: 127.0.0.2/32
`);
  const r = await probe(h, [
    'sock', 'udplite',
    ...(mptcp ? ['mptcp', '127.0.0.1', `${p1}`, 'mptcp', '127.0.0.2', `${p2}`] : []),
  ]);
  assert.deepEqual(r.results, ['EPERM', ...(mptcp ? ['ok', 'EPERM'] : [])]);
  const v = violations(r.events);
  assert.ok(v.some((e) => e.what === 'uncovered_protocol' && e.rule === 'builtin.no_uncovered_protocol' && /SOCK_DGRAM, 136/.test(e.detail ?? '')), JSON.stringify(v));
  if (mptcp) assert.ok(connects(r.events).some((e) => e.daddr === '127.0.0.2' && e.verdict === 'deny'), 'the MPTCP connect is reported like a TCP one');
  // untagged: untouched
  assert.equal(spawnSync('python3', [PROBE, 'sock', 'udplite'], { encoding: 'utf8' }).stdout, 'ok\n');

  // other families: netlink (the kernel's own) opens; vsock (to the hypervisor) is not inet, so the
  // process is killed at socket(), like for packet sockets
  const ok = await h.run(['python3', PROBE, 'sock', 'netlink']);
  assert.equal(ok.stdout, 'ok\n');
  if (!can('vsock')) t.diagnostic('no vsock on this machine: the family guard is checked with netlink only');
  else {
    const vs = await h.run(['python3', PROBE, 'sock', 'vsock', 'sock', 'netlink']);
    assert.equal(vs.status, 137);
    assert.equal(vs.stdout, '');
    const e = violations(vs.events)[0];
    assert.equal(e?.rule, 'builtin.no_uncovered_protocol');
    assert.match(e?.detail ?? '', /AF_VSOCK/);
  }
});

test('one datagram socket alternating destinations: each send is decided for its own destination, and a policy update applies to the next send', async (t) => {
  const u1 = await udpEcho(t, '127.0.0.1');
  const u2 = await udpEcho(t, '127.0.0.2');
  const a = `127.0.0.1:${u1}`;
  const d = `127.0.0.2:${u2}`;
  const h = await netHarness(t, `version: 1
name: net-udp-seq
network:
  default: deny
  allow:
    - cidr: 127.0.0.1/32
`);
  const r = await probe(h, ['udpseq', [a, d, a, a, d, d, a].join(',')]);
  assert.deepEqual(r.results, ['ok/EPERM/ok/ok/EPERM/EPERM/ok']);
  const denied = connects(r.events).filter((e) => e.daddr === '127.0.0.2');
  assert.equal(denied.length, 3, 'every denied datagram is reported');
  const allowed = connects(r.events).filter((e) => e.daddr === '127.0.0.1');
  assert.equal(allowed.length, 1, 'allowed datagrams to one destination: one event a second, however the socket alternates');

  // the same socket across a policy update: the verdict it cached is not reused
  const script = `import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def send():
    try:
        s.sendto(b'x', ('127.0.0.1', ${u1})); return 'ok'
    except OSError as e:
        return 'EPERM' if e.errno == 1 else str(e.errno)
print(send(), flush=True)
sys.stdin.readline()
print(send(), flush=True)
`;
  const { held } = h.sup.run(['python3', '-c', script], { stdio: 'pipe', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  t.after(() => void held.child.kill('SIGKILL'));
  let out = '';
  held.child.stdout!.on('data', (c) => (out += c));
  assert.ok(await waitFor(() => out === 'ok\n', 5000), `first send: ${out}`);
  h.sup.setPolicy(parsePolicy(`version: 1
name: net-udp-seq
network:
  default: deny
  deny:
    - cidr: 127.0.0.1/32
`, 'p.yaml'));
  held.child.stdin!.write('\n');
  await held.exited;
  assert.equal(out, 'ok\nEPERM\n');
});
