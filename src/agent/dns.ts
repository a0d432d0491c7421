// bridle's resolver for sessions. The net sensor sends every port-53 datagram of a session here (on
// loopback, port chosen at start) and records, per client port, which session and process asked. For each
// query the resolver forwards to the upstream (the policy's network.dns.upstream, else the first
// nameserver of /etc/resolv.conf), and before the answer goes back it writes the answered addresses,
// with their TTL, into that session's allowed set when the name matches a host: rule. A name a host: deny
// rule matches is refused. Parsing and building DNS messages is dns-packet's; nothing here parses wire
// format by hand.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { connect as tcpConnect } from 'node:net';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';
import type { DnsEvent, Verdict } from '../events/types.js';
import type { DnsClient, NetSensor } from '../kernel/net.js';
import { ipToBytes } from '../policy/load.js';
import { matchHost, type CompiledNet } from '../policy/netcompile.js';
import { execId } from './ids.js';

const RCODE = { FORMERR: 1, SERVFAIL: 2, REFUSED: 5 } as const;

/** Question types a session may ask under `network.dns.names: hosts`. */
const ADDRESS_TYPES: ReadonlySet<string> = new Set(['A', 'AAAA', 'CNAME', 'HTTPS', 'SVCB']);

/** An answered address stays allowed at most this long (s), whatever TTL the upstream gave. */
const MAX_TTL = 86_400;

export interface Upstream {
  host: string;
  port: number;
}

/** "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" → host and port. */
export function parseUpstream(s: string): Upstream {
  const t = s.trim();
  const br = /^\[([^\]]+)\](?::(\d+))?$/.exec(t);
  if (br) return { host: br[1]!, port: br[2] ? Number(br[2]) : 53 };
  if (isIP(t)) return { host: t, port: 53 };
  const hp = /^([^:]+):(\d+)$/.exec(t);
  if (hp && isIP(hp[1]!)) return { host: hp[1]!, port: Number(hp[2]) };
  throw new Error(`DNS upstream '${s}' is not an address (like 10.0.0.2, 10.0.0.2:5353 or [fd00::1]:53)`);
}

/** The first nameserver of /etc/resolv.conf, or undefined. */
export function systemUpstream(path = '/etc/resolv.conf'): Upstream | undefined {
  try {
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      const m = /^\s*nameserver\s+(\S+)/.exec(line);
      if (m && isIP(m[1]!.replace(/%.*$/, ''))) return { host: m[1]!.replace(/%.*$/, ''), port: 53 };
    }
  } catch {
    /* no resolv.conf */
  }
  return undefined;
}

export interface ResolverOptions {
  net: NetSensor;
  /** The compiled network section of policy `id` (host: rules, upstream). */
  policy: (id: number) => { compiled: CompiledNet; monitor: boolean; name: string } | undefined;
  /** Where the event goes (the engine). */
  emit: (ev: DnsEvent) => void;
  /** Base fields of an event (the engine's). */
  base: (ktime: bigint, session: bigint, pid: number) => Omit<DnsEvent, 'type' | 'name' | 'answers'>;
  /** Upstream when the policy names none; default: /etc/resolv.conf. */
  upstream?: Upstream;
  /** Addresses stay allowed at least this long (s), so a client connecting right after resolving is not refused. Default 10. */
  minTtl?: number;
  /** Per upstream query. Default 4000 ms. */
  timeoutMs?: number;
}

interface Answered {
  addrs: { addr: string; bytes: Uint8Array; ttl: number }[];
}

/** Addresses answered for `qname`, following CNAMEs within the answer section only. */
export function answeredAddresses(qname: string, answers: dnsPacket.Answer[]): Answered {
  const names = new Set([qname.toLowerCase().replace(/\.$/, '')]);
  // CNAME chains may come in any order: repeat until nothing new is reachable
  for (let changed = true; changed; ) {
    changed = false;
    for (const a of answers) {
      if (a.type === 'CNAME' && names.has(a.name.toLowerCase()) && !names.has(String(a.data).toLowerCase())) {
        names.add(String(a.data).toLowerCase().replace(/\.$/, ''));
        changed = true;
      }
    }
  }
  const addrs: Answered['addrs'] = [];
  for (const a of answers) {
    if ((a.type === 'A' || a.type === 'AAAA') && names.has(a.name.toLowerCase()) && isIP(a.data)) {
      addrs.push({ addr: a.data, bytes: ipToBytes(a.data), ttl: a.ttl ?? 0 });
    }
  }
  return { addrs };
}

export class DnsResolver {
  private sockets: Socket[] = [];
  private inflight = new Set<{ close(): void }>();
  private closed = false;
  port4 = 0;
  port6 = 0;
  /** queries answered, refused, failed: for tests and doctor */
  readonly stats = { answered: 0, refused: 0, unknown: 0, failed: 0 };

  private constructor(private readonly o: ResolverOptions) {}

  /** Binds 127.0.0.1 and ::1 on one free port (::1 is optional), and tells the net sensor. */
  static async start(o: ResolverOptions): Promise<DnsResolver> {
    const r = new DnsResolver(o);
    try {
      r.port4 = await r.bind('udp4', '127.0.0.1', 0);
      try {
        r.port6 = await r.bind('udp6', '::1', r.port4);
      } catch {
        try {
          r.port6 = await r.bind('udp6', '::1', 0);
        } catch {
          r.port6 = 0; // no IPv6 loopback: IPv6 DNS of sessions with host: rules is denied instead
        }
      }
      o.net.setDnsPorts(r.port4, r.port6);
    } catch (err) {
      await r.close();
      throw err;
    }
    return r;
  }

  private bind(type: 'udp4' | 'udp6', address: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const s = createSocket({ type, ipv6Only: type === 'udp6' });
      s.once('error', reject);
      s.bind({ address, port, exclusive: true }, () => {
        s.off('error', reject);
        s.on('error', () => {
          /* ICMP errors on a reply socket: nothing to do */
        });
        s.on('message', (msg, rinfo) => void this.onQuery(s, msg, rinfo));
        this.sockets.push(s);
        resolve(s.address().port);
      });
    });
  }

  private upstreamFor(compiled: CompiledNet | undefined): Upstream | undefined {
    if (compiled?.upstream) return parseUpstream(compiled.upstream);
    return this.o.upstream ?? systemUpstream();
  }

  private async onQuery(sock: Socket, msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    if (this.closed) return;
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS: drop it like a server would
    }
    const family = rinfo.family === 'IPv6' ? 6 : 4;
    const client = this.o.net.dnsClient(family, rinfo.port);
    const q = query.questions?.[0];
    if (!client) {
      // not redirected by the kernel for a session: nobody to attribute it to
      this.stats.unknown++;
      this.reply(sock, rinfo, refusal(query, RCODE.REFUSED));
      return;
    }
    // One standard query of one question, nothing else: the upstream gets a query built here from that
    // question, not the session's bytes (other sections, other opcodes and more questions would pass
    // data the rules never looked at, or names they never judged).
    if (msg.length < 12 || ((msg.readUInt16BE(2) >> 11) & 0xf) !== 0 || msg.readUInt16BE(4) !== 1 || !q) {
      this.stats.refused++;
      this.reply(sock, rinfo, refusal(query, RCODE.FORMERR));
      return;
    }
    const slot = this.o.policy(client.policy);
    // With names limited to host: allow rules, only the usual questions about addresses: the type and
    // class of a question could otherwise carry a few bits each.
    if (slot?.compiled.namesRule !== undefined && ((q.class ?? 'IN') !== 'IN' || !ADDRESS_TYPES.has(q.type))) {
      this.stats.refused++;
      this.reply(sock, rinfo, refusal(query, RCODE.REFUSED));
      return;
    }
    const name = (q?.name ?? '').toLowerCase().replace(/\.$/, '');
    const hit = slot && name ? matchHost(slot.compiled, name) : undefined;
    // a name a host: deny rule matches; or, with network.dns.names: hosts, one no host: allow rule matches
    const refusedBy = hit?.action === 'deny' ? hit.rule : hit === undefined && name ? slot?.compiled.namesRule : undefined;
    if (refusedBy !== undefined) {
      const verdict: Verdict = slot!.monitor ? 'would_deny' : 'deny';
      this.event(client, name, [], verdict, slot!.compiled.rules[refusedBy]?.id ?? '', undefined, slot!.name);
      if (verdict === 'deny') {
        this.stats.refused++;
        this.reply(sock, rinfo, refusal(query, RCODE.REFUSED));
        return;
      }
    }
    const up = this.upstreamFor(slot?.compiled);
    let answer: Buffer | undefined;
    try {
      if (!up) throw new Error('no DNS upstream (policy network.dns.upstream or /etc/resolv.conf)');
      answer = await this.forward(upstreamQuery(query, q), up, query.id ?? 0);
    } catch {
      this.stats.failed++;
      this.reply(sock, rinfo, refusal(query, RCODE.SERVFAIL));
      return;
    }
    if (this.closed) return;
    let decoded: dnsPacket.DecodedPacket | undefined;
    try {
      decoded = dnsPacket.decode(answer);
    } catch {
      decoded = undefined;
    }
    const { addrs } = decoded && name ? answeredAddresses(name, decoded.answers ?? []) : { addrs: [] };
    let minTtl: number | undefined;
    if (hit?.action === 'allow' && addrs.length) {
      const floor = slot?.compiled.minTtl ?? this.o.minTtl ?? 10;
      for (const a of addrs) {
        const ttl = Math.min(Math.max(a.ttl, floor), MAX_TTL);
        minTtl = minTtl === undefined ? ttl : Math.min(minTtl, ttl);
        // before the caller sees the answer: it may connect the moment it has it
        this.o.net.allowResolved(client.session, a.bytes, hit.hashes, client.ktime + BigInt(ttl) * 1_000_000_000n);
      }
    }
    if (name && (q?.type === 'A' || q?.type === 'AAAA' || addrs.length)) {
      const rule = hit?.action === 'allow' ? slot!.compiled.rules[hit.rule]?.id ?? '' : '';
      const verdict: Verdict = refusedBy !== undefined ? 'would_deny' : 'allow';
      this.event(client, name, addrs.map((a) => a.addr), verdict, rule, minTtl, slot?.name ?? '');
    }
    this.stats.answered++;
    this.reply(sock, rinfo, answer);
  }

  private event(client: DnsClient, name: string, answers: string[], verdict: Verdict, rule: string, ttl: number | undefined, policy: string): void {
    const ev = Object.assign(this.o.base(client.ktime, client.session, client.pid), {
      type: 'dns' as const,
      exec_id: execId(client.pid, client.key),
      name,
      answers,
      verdict,
      rule,
      policy,
    }) as DnsEvent;
    if (ttl !== undefined) ev.ttl = ttl;
    this.o.emit(ev);
  }

  private reply(sock: Socket, rinfo: RemoteInfo, buf: Buffer): void {
    if (this.closed) return;
    sock.send(buf, rinfo.port, rinfo.address);
  }

  /**
   * One upstream exchange over UDP from a socket connected to the upstream (the kernel drops datagrams
   * from anywhere else), under a query id of the resolver's own; a truncated answer is asked again over
   * TCP. The answer goes back under the client's id (`clientId`).
   */
  private async forward(query: Buffer, up: Upstream, clientId: number): Promise<Buffer> {
    // never the client's own (a random id equal to it would tell the upstream nothing, but a test could not tell)
    const id = (clientId + 1 + randomInt(0xffff)) & 0xffff;
    query.writeUInt16BE(id, 0);
    const answer = await this.exchange(query, up, id);
    answer.writeUInt16BE(clientId, 0);
    return answer;
  }

  private exchange(msg: Buffer, up: Upstream, id: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const s = createSocket(isIP(up.host) === 6 ? 'udp6' : 'udp4');
      const handle = { close: () => done(new Error('resolver closed')) };
      this.inflight.add(handle);
      const timer = setTimeout(() => done(new Error('upstream timeout')), this.o.timeoutMs ?? 4000);
      let finished = false;
      const done = (err: Error | undefined, buf?: Buffer) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.inflight.delete(handle);
        s.close();
        if (err) reject(err);
        else resolve(buf!);
      };
      s.on('error', (e) => done(e));
      s.on('message', (buf) => {
        if (buf.length < 12 || buf.readUInt16BE(0) !== id) return;
        if (buf.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE) {
          this.forwardTcp(msg, up).then(
            (full) => (full.length >= 12 && full.readUInt16BE(0) === id ? done(undefined, full) : done(undefined, buf)),
            () => done(undefined, buf),
          );
          return;
        }
        done(undefined, buf);
      });
      s.connect(up.port, up.host, (err?: Error) => (err ? done(err) : s.send(msg, (e) => e && done(e))));
    });
  }

  private forwardTcp(msg: Buffer, up: Upstream): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const c = tcpConnect({ host: up.host, port: up.port });
      let got = Buffer.alloc(0);
      const timer = setTimeout(() => c.destroy(new Error('upstream timeout')), this.o.timeoutMs ?? 4000);
      c.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(msg.length);
        c.write(Buffer.concat([len, msg]));
      });
      c.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
          clearTimeout(timer);
          c.end();
          resolve(got.subarray(2, 2 + got.readUInt16BE(0)));
        }
      });
      c.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      c.on('close', () => {
        clearTimeout(timer);
        reject(new Error('upstream closed'));
      });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      this.o.net.setDnsPorts(0, 0);
    } catch {
      /* sensor already closed */
    }
    for (const h of [...this.inflight]) h.close();
    await Promise.all(this.sockets.splice(0).map((s) => new Promise<void>((res) => s.close(() => res()))));
  }
}

/**
 * The query the upstream gets, built from the client's one question: recursion desired, and a fixed EDNS
 * size when the client sent EDNS (nothing else of the client's message goes upstream; the name keeps its
 * letter case, which clients that randomise it check in the answer).
 */
function upstreamQuery(query: dnsPacket.DecodedPacket, q: dnsPacket.Question): Buffer {
  const edns = (query.additionals ?? []).some((a) => a.type === 'OPT');
  return dnsPacket.encode({
    type: 'query',
    id: 0,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name: q.name, type: q.type, class: q.class }],
    ...(edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as dnsPacket.Answer] } : {}),
  });
}

/** A reply with only the question and an error code. */
function refusal(query: dnsPacket.DecodedPacket, rcode: number): Buffer {
  return dnsPacket.encode({
    type: 'response',
    id: query.id ?? 0,
    flags: (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions: query.questions ?? [],
  });
}
