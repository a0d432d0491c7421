// host: rules: a session reaches a name only at the addresses its own DNS answers gave. The session's
// port-53 datagrams go to bridle's resolver, which forwards to a real DNS server the test runs on loopback
// and writes the answered addresses into the session's allowed set before the answer reaches the caller.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connects, dnsEvents, dnsServer, netHarness, probe, tcpServer } from './helpers.js';

test('host: an address is reachable only after this session resolved the name through bridle', async (t) => {
  const port = await tcpServer(t, '127.0.0.7');
  const other = await tcpServer(t, '127.0.0.8');
  const unlisted = port === 65535 ? port - 1 : port + 1; // named by no rule: denied before anything listens
  const up = await dnsServer(t, {
    'api.example.test': { A: ['127.0.0.7'], ttl: 120 },
    'cdn.example.test': { CNAME: 'edge.example.test' },
    'edge.example.test': { A: ['127.0.0.8'] },
    'evil.example.test': { A: ['127.0.0.8'] },
  });
  const h = await netHarness(t, `version: 1
name: net-hosts
network:
  default: deny
  allow:
    - host: api.example.test
      ports: [${port}]
    - host: "*.example.test"
      ports: [${other}]
  deny:
    - host: evil.example.test
  dns:
    upstream: 127.0.0.1:${up.port}
`);
  // before resolving: denied. Resolved: allowed at the answered address and the rule's ports only.
  const r = await probe(h, [
    'tcp', '127.0.0.7', `${port}`,
    'dns', 'api.example.test', '127.0.0.53',
    'tcp', '127.0.0.7', `${port}`,
    'tcp', '127.0.0.7', `${unlisted}`,
    'dns', 'cdn.example.test', '127.0.0.53', 'connect',
    'tcp', '127.0.0.8', `${other}`,
    'dns', 'evil.example.test', '127.0.0.53',
  ]);
  assert.deepEqual(r.results, ['EPERM', '127.0.0.7', 'ok', 'EPERM', '127.0.0.8', 'ok', 'rcode5']);
  assert.ok(up.queries.includes('A api.example.test'), 'the query reached the upstream server');
  assert.ok(!up.queries.some((q) => q.includes('evil')), 'a denied name never reaches the upstream');

  const ev = connects(r.events).filter((e) => e.proto === 'tcp');
  assert.equal(ev[0]?.verdict, 'deny');
  assert.equal(ev[0]?.rule, 'network.default');
  assert.equal(ev[1]?.verdict, 'allow');
  assert.equal(ev[1]?.rule, 'network.allow[0]');
  assert.equal(ev[2]?.verdict, 'deny', 'the answered address, but not a port the rule names');
  const d = dnsEvents(r.events);
  const api = d.find((e) => e.name === 'api.example.test');
  assert.deepEqual(api?.answers, ['127.0.0.7']);
  assert.equal(api?.ttl, 120);
  assert.equal(api?.verdict, 'allow');
  assert.equal(api?.exec_id, ev[0]?.exec_id, 'the dns event names the process that asked');
  assert.deepEqual(d.find((e) => e.name === 'cdn.example.test')?.answers, ['127.0.0.8'], 'CNAME chains are followed');
  const evil = d.find((e) => e.name === 'evil.example.test');
  assert.equal(evil?.verdict, 'deny');
  assert.equal(evil?.rule, 'network.deny[0]');

  // another session never resolved the name: the same address stays closed to it
  const r2 = await probe(h, ['tcp', '127.0.0.7', `${port}`]);
  assert.deepEqual(r2.results, ['EPERM'], 'addresses answered to one session are not given to another');
});

test('host: DNS cannot go around the resolver: other servers, IPv6, DNS over TCP', async (t) => {
  const up = await dnsServer(t, { 'api.example.test': { A: ['127.0.0.7'] } });
  const h = await netHarness(t, `version: 1
name: net-hosts-bypass
network:
  default: allow
  allow:
    - host: api.example.test
  dns:
    upstream: 127.0.0.1:${up.port}
`);
  // a query "to" any server is answered by bridle's resolver (the answer appears to come from that server)
  // DNS over TCP: nothing listens at 127.0.0.9:53, so an allowed connect would say ECONNREFUSED
  const r = await probe(h, ['dns', 'api.example.test', '127.0.0.99', 'dns', 'api.example.test', '::1', 'tcp', '127.0.0.9', '53']);
  assert.equal(r.results[0], '127.0.0.7');
  assert.equal(r.results[1], '127.0.0.7', 'IPv6 DNS is redirected too');
  assert.equal(r.results[2], 'EPERM', 'DNS over TCP needs an explicit allow when host: rules decide');
  const c = connects(r.events).find((e) => e.proto === 'tcp' && e.dport === 53);
  assert.equal(c?.rule, 'builtin.dns_tcp');
  assert.ok(up.queries.length >= 2);
});

test('host: an answered address closes again when its TTL (at least network.dns.min_ttl) runs out', async (t) => {
  const port = await tcpServer(t, '127.0.0.7');
  const up = await dnsServer(t, { 'api.example.test': { A: ['127.0.0.7'], ttl: 1 } });
  const h = await netHarness(t, `version: 1
name: net-ttl
network:
  default: deny
  allow:
    - host: api.example.test
      ports: [${port}]
  dns:
    upstream: 127.0.0.1:${up.port}
    min_ttl: 1
`);
  const r = await probe(h, [
    'dns', 'api.example.test', '127.0.0.53',
    'tcp', '127.0.0.7', `${port}`,
    'sleep', '2.2',
    'tcp', '127.0.0.7', `${port}`,
    'dns', 'api.example.test', '127.0.0.53',
    'tcp', '127.0.0.7', `${port}`,
  ]);
  assert.deepEqual(r.results, ['127.0.0.7', 'ok', 'EPERM', '127.0.0.7', 'ok'], 'allowed, expired, allowed again after a new answer');
  assert.equal(dnsEvents(r.events)[0]?.ttl, 1);
  const late = connects(r.events).filter((e) => e.proto === 'tcp')[1];
  assert.equal(late?.verdict, 'deny');
  assert.equal(late?.rule, 'network.default');
});

test('host: with network.dns.names: hosts, the resolver answers only names a host: allow rule matches (names cannot carry data out)', async (t) => {
  const port = await tcpServer(t, '127.0.0.7');
  const up = await dnsServer(t, {
    'api.example.test': { A: ['127.0.0.7'] },
    'c2vjcmv0.exfil.test': { A: ['127.0.0.9'] },
  });
  const h = await netHarness(t, `version: 1
name: net-names
network:
  default: deny
  allow:
    - host: api.example.test
      ports: [${port}]
  dns:
    upstream: 127.0.0.1:${up.port}
    names: hosts
`);
  const r = await probe(h, ['dns', 'c2vjcmv0.exfil.test', '127.0.0.53', 'dns', 'api.example.test', '127.0.0.53', 'tcp', '127.0.0.7', `${port}`]);
  assert.deepEqual(r.results, ['rcode5', '127.0.0.7', 'ok']);
  assert.ok(!up.queries.some((q) => q.includes('exfil')), 'the name never left the host');
  const d = dnsEvents(r.events).find((e) => e.name === 'c2vjcmv0.exfil.test');
  assert.equal(d?.verdict, 'deny');
  assert.equal(d?.rule, 'network.dns.names');
  // an allowed name, asked as another type (TXT) or class (CH): refused, since those could carry bits too
  const ask = (qtype: number, qclass: number) => `import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(struct.pack('>HHHHHH', 9, 0x0100, 1, 0, 0, 0) + b'\\x03api\\x07example\\x04test\\x00' + struct.pack('>HH', ${qtype}, ${qclass}), ('127.0.0.53', 53))
print(struct.unpack('>H', s.recv(512)[2:4])[0] & 15)`;
  const seen = up.queries.length;
  for (const [qt, qc] of [[16, 1], [1, 3]] as const) {
    const q = await h.run(['python3', '-c', ask(qt, qc)]);
    assert.equal(q.stdout, '5\n', `type ${qt} class ${qc} refused`);
  }
  assert.equal(up.queries.length, seen, 'neither reached the upstream');
});

test('host: the resolver forwards one question, rebuilt, and only what the kernel redirected to it', async (t) => {
  const up = await dnsServer(t, { 'api.example.test': { A: ['127.0.0.7'] }, 'second.example.test': { A: ['127.0.0.8'] } });
  const h = await netHarness(t, `version: 1
name: net-dns-shape
network:
  default: allow
  allow:
    - host: api.example.test
  dns:
    upstream: 127.0.0.1:${up.port}
`);
  const port4 = h.sup.net!.dns!.port4;
  assert.ok(port4 > 0);
  // a test-side client (the product parses DNS with dns-packet): queries with extra content, each sent
  // "to" 127.0.0.53:53, which the kernel hands to bridle's resolver; then one straight to the resolver
  const script = `
import socket, struct
def name(n): return b''.join(bytes([len(l)]) + l.encode() for l in n.split('.')) + b'\\0'
def q(n): return name(n) + struct.pack('>HH', 1, 1)
def ask(msg, to=('127.0.0.53', 53)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    try:
        s.sendto(msg, to)
        d = s.recv(2048)
        return 'id=%d rcode=%d an=%d' % (struct.unpack('>H', d[:2])[0], struct.unpack('>H', d[2:4])[0] & 15, struct.unpack('>H', d[6:8])[0])
    except OSError as e:
        return 'errno=%d' % e.errno
    finally:
        s.close()
# two questions
print(ask(struct.pack('>HHHHHH', 4660, 0x0100, 2, 0, 0, 0) + q('api.example.test') + q('second.example.test')))
# one question, and a TXT record in the additional section carrying data
txt = name('x.example.test') + struct.pack('>HHIH', 16, 1, 0, 11) + bytes([10]) + b'secretdata'
print(ask(struct.pack('>HHHHHH', 4661, 0x0100, 1, 0, 0, 1) + q('api.example.test') + txt))
# straight to the resolver's port, not through the redirect
print(ask(struct.pack('>HHHHHH', 4662, 0x0100, 1, 0, 0, 0) + q('api.example.test'), ('127.0.0.1', ${port4})))
`;
  const r = await h.run(['python3', '-c', script]);
  assert.deepEqual(r.stdout.trim().split('\n'), ['id=4660 rcode=1 an=0', 'id=4661 rcode=0 an=1', 'errno=1']);
  assert.ok(!up.queries.includes('A second.example.test'), 'the second question never left');
  assert.equal(up.raw.length, 1, 'one query reached the upstream');
  const sent = up.raw[0]!;
  assert.ok(!sent.includes(Buffer.from('secretdata')), 'the additional record did not go upstream');
  assert.notEqual(sent.readUInt16BE(0), 4661, 'the upstream sees an id of the resolver, not the client\'s');
  const direct = connects(r.events).find((e) => e.dport === port4);
  assert.equal(direct?.verdict, 'deny');
  assert.equal(direct?.rule, 'builtin.control_socket');
});
