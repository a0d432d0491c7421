// Plumbing for the network tests: servers on loopback (and in a network namespace the test creates),
// a probe that runs inside sessions and prints one result per operation, and a DNS server for the
// resolver's upstream. Everything is closed or removed in t.after, also when the test fails.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import dnsPacket from 'dns-packet';
import type { BridleEvent, ConnectEvent, DnsEvent, ExecEvent } from '../../src/events/types.js';
import { ccHelper, harness, type Harness } from '../helpers/kernel.js';

export const PROBE = join(import.meta.dirname, 'fixtures', 'probe.py');

/** A harness whose supervisor must have network enforcement (the test fails otherwise) and a ready resolver. */
export async function netHarness(t: TestContext, yaml: string): Promise<Harness> {
  const h = harness(t, yaml);
  assert.ok(h.sup.net, `net sensor not open: ${h.sup.warnings.join('; ')}`);
  await h.sup.net.ready;
  return h;
}

/** Runs the probe in a new session; resolves with one result per operation. */
export async function probe(h: Harness, args: string[]): Promise<{ results: string[]; events: BridleEvent[] }> {
  const r = await h.run(['python3', PROBE, ...args]);
  assert.equal(r.status, 0, `probe failed: ${r.stderr}`);
  return { results: r.stdout.trim().split('\n').filter(Boolean), events: r.events };
}

export const connects = (events: { type: string }[]): ConnectEvent[] => events.filter((e): e is ConnectEvent => e.type === 'connect');
export const dnsEvents = (events: { type: string }[]): DnsEvent[] => events.filter((e): e is DnsEvent => e.type === 'dns');
export const execs = (events: { type: string }[]): ExecEvent[] => events.filter((e): e is ExecEvent => e.type === 'exec');

/**
 * A TCP server on `host` that greets and closes (`echo`: that sends back what it gets and keeps the
 * connection open); returns its port.
 */
export async function tcpServer(t: TestContext, host = '127.0.0.1', port = 0, echo = false): Promise<number> {
  const conns = new Set<import('node:net').Socket>();
  const srv = createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    c.on('error', () => {});
    if (echo) c.pipe(c);
    else c.end('hi\n');
  });
  await new Promise<void>((res, rej) => {
    srv.once('error', rej);
    srv.listen({ host, port, exclusive: true }, () => res());
  });
  t.after(() => new Promise<void>((res) => {
    srv.close(() => res());
    for (const c of conns) c.destroy(); // a peer that never closes must not hold the test
  }));
  return (srv.address() as AddressInfo).port;
}

/** A UDP echo server on `host`; returns its port. */
export async function udpEcho(t: TestContext, host = '127.0.0.1'): Promise<number> {
  const s = host.includes(':') ? createSocket({ type: 'udp6', ipv6Only: true }) : createSocket('udp4');
  s.on('message', (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((res) => s.bind(0, host, () => res()));
  t.after(() => new Promise<void>((res) => s.close(() => res())));
  return s.address().port;
}

/** A unix stream socket server at `path`. */
export async function unixServer(t: TestContext, path: string): Promise<void> {
  const conns = new Set<import('node:net').Socket>();
  const srv = createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    c.on('error', () => {});
    c.end('hi\n');
  });
  await new Promise<void>((res) => srv.listen(path, () => res()));
  t.after(() => new Promise<void>((res) => srv.close(() => { rmSync(path, { force: true }); res(); })));
}

export interface Records {
  [name: string]: { A?: string[]; AAAA?: string[]; CNAME?: string; ttl?: number };
}

/** An authoritative-only DNS server on 127.0.0.1 built with dns-packet; returns its port, the queries it saw and their bytes. */
export async function dnsServer(t: TestContext, records: Records): Promise<{ port: number; queries: string[]; raw: Buffer[] }> {
  const queries: string[] = [];
  const raw: Buffer[] = [];
  const s = createSocket('udp4');
  s.on('message', (msg, r) => {
    raw.push(msg);
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (!question) return;
    queries.push(`${question.type} ${question.name}`);
    const answers: dnsPacket.Answer[] = [];
    let name = question.name.toLowerCase();
    for (let hops = 0; hops < 4; hops++) {
      const rec = records[name];
      if (!rec) break;
      const ttl = rec.ttl ?? 300;
      if (rec.CNAME) {
        answers.push({ type: 'CNAME', name, ttl, data: rec.CNAME });
        name = rec.CNAME;
        continue;
      }
      for (const a of question.type === 'A' ? rec.A ?? [] : question.type === 'AAAA' ? rec.AAAA ?? [] : []) {
        answers.push({ type: question.type as 'A' | 'AAAA', name, ttl, data: a });
      }
      break;
    }
    const known = records[question.name.toLowerCase()] !== undefined;
    s.send(
      dnsPacket.encode({
        type: 'response',
        id: q.id ?? 0,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (known ? 0 : 3 /* NXDOMAIN */),
        questions: q.questions ?? [],
        answers,
      }),
      r.port,
      r.address,
    );
  });
  await new Promise<void>((res) => s.bind(0, '127.0.0.1', () => res()));
  t.after(() => new Promise<void>((res) => s.close(() => res())));
  return { port: s.address().port, queries, raw };
}

/**
 * A network namespace the test owns, joined to this one by a veth pair: host side .1, namespace side .2
 * of a /30 in 10.213.0.0/16. A TCP greeter listens inside on ns:port. Removed (with the veth) afterwards.
 */
export async function netnsPeer(t: TestContext, port = 8080): Promise<{ hostAddr: string; nsAddr: string; port: number }> {
  const id = `${process.pid % 1000}${Math.floor(Math.random() * 1000)}`;
  const ns = `bridle-t${id}`;
  const hv = `bh${id}`;
  const nv = `bn${id}`;
  const x = (Number(id) % 250) + 1;
  const y = (Math.floor(Math.random() * 60) * 4) % 252;
  const hostAddr = `10.213.${x}.${y + 1}`;
  const nsAddr = `10.213.${x}.${y + 2}`;
  const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });
  t.after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    spawnSync('ip', ['link', 'del', hv]);
  });
  ip('netns', 'add', ns);
  ip('link', 'add', hv, 'type', 'veth', 'peer', 'name', nv);
  ip('link', 'set', nv, 'netns', ns);
  ip('addr', 'add', `${hostAddr}/30`, 'dev', hv);
  ip('link', 'set', hv, 'up');
  ip('netns', 'exec', ns, 'ip', 'addr', 'add', `${nsAddr}/30`, 'dev', nv);
  ip('netns', 'exec', ns, 'ip', 'link', 'set', nv, 'up');
  ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
  const srv = spawn('ip', ['netns', 'exec', ns, 'python3', '-c',
    `import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('${nsAddr}', ${port}))\ns.listen()\nprint('up', flush=True)\nwhile True:\n  c,_=s.accept(); c.sendall(b'hi'); c.close()\n`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    srv.kill('SIGKILL');
  });
  await new Promise<void>((res, rej) => {
    srv.stdout!.once('data', () => res());
    srv.once('exit', (c) => rej(new Error(`netns listener exited with ${c}`)));
  });
  return { hostAddr, nsAddr, port };
}

/** cc-built io_uring connect helper in the test's temp dir, or undefined without a C compiler. */
export function uringHelper(t: TestContext): string | undefined {
  return ccHelper(t, join(import.meta.dirname, 'fixtures', 'uring_connect.c'));
}

/** Our programs attached at a cgroup (bpftool's view), by name. */
export function cgroupPrograms(cgroup: string): string[] {
  const out = spawnSync('bpftool', ['-j', 'cgroup', 'show', cgroup], { encoding: 'utf8' });
  if (out.status !== 0) return [];
  return (JSON.parse(out.stdout || '[]') as { name?: string }[]).map((p) => p.name ?? '').filter((n) => n.startsWith('bridle_'));
}
