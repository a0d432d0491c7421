// The network sensor: loads bpf/build/net.bpf.o with the process sensor's `tags` and `procs` maps,
// attaches its cgroup sock_addr programs at the cgroup v2 root (BPF links, multi-attach: other programs
// there keep working), and writes network policies under generations. Its records go into the process
// sensor's ring buffer (decodeNet reads them). close() detaches everything and is idempotent; links die
// with the process anyway.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LoadedObject } from './loaded.js';
import { ATTACH, BpfObject, probe, type BpfMap } from './binding.js';
import { NET_EV, NET_LAYOUT } from './layout.js';
import { DROP_DELAY_MS, ROOT } from './sensor.js';
import { emptyMap } from './failclosed.js';
import { bytesToIp } from '../policy/load.js';
import { RULE_NODE, unixForms, type CompiledNet } from '../policy/netcompile.js';

export const NET_OBJ = join(ROOT, 'bpf', 'build', 'net.bpf.o');

/** cgroup programs (sock_addr, then sock_create and setsockopt), attached in this order (replies are fixed up before anything is redirected). */
export const NET_PROGRAMS = [
  'bridle_recvmsg4',
  'bridle_recvmsg6',
  'bridle_sendmsg4',
  'bridle_sendmsg6',
  'bridle_connect4',
  'bridle_connect6',
  'bridle_sock_create',
  'bridle_setsockopt',
] as const;

/** unix: rules by name (cgroup hooks, Linux 6.7+) and by identity after connect (syscall tracepoints). */
export const UNIX_PROGRAMS = [
  ['bridle_connect_unix', ATTACH.CGROUP_UNIX_CONNECT],
  ['bridle_sendmsg_unix', ATTACH.CGROUP_UNIX_SENDMSG],
] as const;
/**
 * Tracepoints: unix identity checks after a connect (connect(2), and io_uring's), and sockets of families
 * no cgroup hook sees (packet, vsock, ...), asked for through socket(2) or io_uring.
 */
export const NET_TRACEPOINTS = ['bridle_unix_enter', 'bridle_unix_exit', 'bridle_packet_guard', 'bridle_uring_socket_guard', 'bridle_uring_unix_connect'] as const;

/** Does this kernel have the cgroup unix socket hooks (connect_unix, sendmsg_unix)? */
export function unixHooksAvailable(): boolean {
  try {
    return UNIX_PROGRAMS.every(([, at]) => probe.attachType('cgroup_sock_addr', at));
  } catch {
    return false;
  }
}

export interface RawNet {
  type: 'net';
  ktime: bigint;
  session: bigint;
  key: bigint;
  pid: number;
  tid: number;
  uid: number;
  policy: number;
  ruleId: number;
  ruleKind: number;
  dport: number;
  /** the socket's family */
  family: 4 | 6;
  proto: number;
  op: number;
  verdict: number;
  flags: number;
  /** generation of the policy that decided (names ruleId) */
  gen: number;
  /** op SOCKET: the socket's address family (AF_INET 2, AF_INET6 10, AF_PACKET 17) */
  rawFamily: number;
  /** as the caller gave it */
  daddr: string;
}

export interface RawUnix {
  type: 'unix';
  ktime: bigint;
  session: bigint;
  key: bigint;
  pid: number;
  tid: number;
  uid: number;
  policy: number;
  ruleId: number;
  ruleKind: number;
  verdict: number;
  /** connect or sendmsg (NET_OP) */
  op: number;
  /** NET_UEVF: abstract name; decided after connect (the process was killed) */
  flags: number;
  /** generation of the policy that decided (names ruleId) */
  gen: number;
  path: string;
}

export type RawNetRecord = RawNet | RawUnix;

export interface DnsClient {
  session: bigint;
  key: bigint;
  ktime: bigint;
  pid: number;
  policy: number;
  /** the server the client asked */
  server: string;
  serverPort: number;
  family: 4 | 6;
}

const EV = NET_LAYOUT.bridle_net_ev.fields;
const UEV = NET_LAYOUT.bridle_unix_ev.fields;

function addrString(b: Buffer, off: number, family: number): string {
  if (family === 4) return bytesToIp(b.subarray(off, off + 4));
  const bytes = b.subarray(off, off + 16);
  // IPv4-mapped: the usual ::ffff:a.b.c.d form
  if (bytes.subarray(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${bytesToIp(bytes.subarray(12, 16))}`;
  }
  return bytesToIp(bytes);
}

/** Decodes one record of the net ring buffer; undefined for an unknown type or a short record. */
export function decodeNet(b: Buffer): RawNetRecord | undefined {
  if (b.length < NET_LAYOUT.bridle_hdr.size) return undefined;
  const type = b.readUInt16LE(0);
  const ktime = b.readBigUInt64LE(8);
  if (type === NET_EV.NET && b.length >= NET_LAYOUT.bridle_net_ev.size) {
    const family = b.readUInt8(EV.family) === 6 ? 6 : 4;
    return {
      type: 'net',
      ktime,
      session: b.readBigUInt64LE(EV.session),
      key: b.readBigUInt64LE(EV.key),
      pid: b.readUInt32LE(EV.pid),
      tid: b.readUInt32LE(EV.tid),
      uid: b.readUInt32LE(EV.uid),
      policy: b.readUInt32LE(EV.policy),
      ruleId: b.readUInt32LE(EV.rule_id),
      ruleKind: b.readUInt8(EV.rule_kind),
      dport: b.readUInt16LE(EV.dport),
      family,
      proto: b.readUInt8(EV.proto),
      op: b.readUInt8(EV.op),
      verdict: b.readUInt8(EV.verdict),
      flags: b.readUInt8(EV.flags),
      gen: b.readUInt32LE(EV.gen),
      rawFamily: b.readUInt8(EV.daddr),
      daddr: addrString(b, EV.daddr, family),
    };
  }
  if (type === NET_EV.UNIX && b.length >= NET_LAYOUT.bridle_unix_ev.size) {
    const len = Math.min(b.readUInt16LE(UEV.path_len), 108);
    return {
      type: 'unix',
      ktime,
      session: b.readBigUInt64LE(UEV.session),
      key: b.readBigUInt64LE(UEV.key),
      pid: b.readUInt32LE(UEV.pid),
      tid: b.readUInt32LE(UEV.tid),
      uid: b.readUInt32LE(UEV.uid),
      policy: b.readUInt32LE(UEV.policy),
      ruleId: b.readUInt32LE(UEV.rule_id),
      ruleKind: b.readUInt8(UEV.rule_kind),
      verdict: b.readUInt8(UEV.verdict),
      op: b.readUInt8(UEV.op),
      flags: b.readUInt8(UEV.flags),
      gen: b.readUInt32LE(UEV.gen),
      path: b.toString('utf8', UEV.path, UEV.path + len).replace(/\0.*$/s, ''),
    };
  }
  return undefined;
}

/** Where cgroup v2 is mounted (the root every process is in on this kind of host). */
export function cgroup2Root(): string | undefined {
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const [, dir, type] = line.split(' ');
      if (type === 'cgroup2' && dir) return dir;
    }
  } catch {
    /* no /proc */
  }
  return undefined;
}

export interface NetSensorOptions {
  obj?: string;
  /** The process sensor's maps, shared so the session lookup is the same. */
  tags: BpfMap;
  procs: BpfMap;
  /** The process sensor's ring buffer: net records go there too (one order for everything); decode them with decodeNet. */
  events: BpfMap;
  /** cgroup v2 directory to attach at; default: the root of the cgroup2 mount. */
  cgroup?: string;
  onWarning?: (msg: string) => void;
}

interface Written {
  gen: number;
  keys: [BpfMap, Buffer][];
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

/** 16 bytes, network order: IPv4 in the first four. */
export function addr16(bytes: Uint8Array): Buffer {
  const b = Buffer.alloc(16);
  b.set(bytes.subarray(0, Math.min(16, bytes.length)));
  return b;
}

export class NetSensor extends LoadedObject {
  private nextGen = 1;
  /** Port-set ids are global (never reused while the sensor lives) so generations never share one. */
  private nextSet = 1;
  private gens = new Map<number, Written>();
  private compiledBy = new Map<number, CompiledNet>();
  /**
   * Replaced generations, dropped DROP_DELAY_MS after their switch (a decision may still be reading them),
   * each with the timer that drops it.
   */
  private retiring = new Map<Written, NodeJS.Timeout>();
  /** dns_addrs keys written per session, so a session's addresses go when it ends. */
  private sessionAddrs = new Map<bigint, Set<string>>();
  private protectedKeys: Written['keys'] = [];
  readonly cgroup: string;
  /** unix: rules decided at connect by name (the kernel has connect_unix), not only by identity afterwards */
  unixHooks = false;

  private constructor(obj: BpfObject, cgroup: string) {
    super(obj);
    this.cgroup = cgroup;
  }

  static open(opts: NetSensorOptions): NetSensor {
    const path = opts.obj ?? NET_OBJ;
    if (!existsSync(path)) throw new Error(`${path} is missing: run scripts/build.sh (or npm run build)`);
    const cgroup = opts.cgroup ?? cgroup2Root();
    if (!cgroup) throw new Error('no cgroup v2 mount: network rules need one (mount -t cgroup2 none /sys/fs/cgroup/unified)');
    const obj = BpfObject.open(path);
    const s = new NetSensor(obj, cgroup);
    try {
      obj.reuseMap('tags', opts.tags);
      obj.reuseMap('procs', opts.procs);
      obj.reuseMap('net_events', opts.events);
      s.unixHooks = unixHooksAvailable();
      for (const [name, at] of UNIX_PROGRAMS) {
        if (s.unixHooks) obj.setProgType(name, 'cgroup_sock_addr', at);
        else obj.setAutoload(name, false);
      }
      if (!s.unixHooks) {
        opts.onWarning?.('this kernel has no cgroup unix socket hooks (connect_unix, Linux 6.7+): unix: rules are enforced only after a connect completes, by killing the process');
      }
      obj.load();
      for (const name of NET_PROGRAMS) {
        s.links.push(obj.program(name).attachCgroup(cgroup));
        s.attached.push(name);
      }
      if (s.unixHooks) {
        for (const [name] of UNIX_PROGRAMS) {
          s.links.push(obj.program(name).attachCgroup(cgroup));
          s.attached.push(name);
        }
      }
      for (const name of NET_TRACEPOINTS) {
        s.links.push(obj.program(name).attach());
        s.attached.push(name);
      }
    } catch (err) {
      s.closeSync();
      throw err;
    }
    return s;
  }

  /**
   * Judges again the outgoing connections session processes hold (TCP, and UDP sockets with a peer)
   * against their session's policy in force, as a connect to the peer would be: after `bridle attach`
   * tags processes that connected before, and after a new policy. A denied one the session alone holds is
   * closed (ECONNABORTED); either way it is reported (op `revisit`). Returns how many sockets of sessions
   * were looked at.
   */
  revisit(): number {
    const owners = this.map('revisit');
    const listeners = this.map('revisit_listen');
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    const cfg = Buffer.alloc(8);
    cfg.writeUInt32LE(lo ?? 32768, 0);
    cfg.writeUInt32LE(hi ?? 60999, 4);
    this.map('revisit_conf').update(u32(0), cfg);
    try {
      this.obj.program('bridle_session_socks').iterRead();
      const n = owners.keys().length;
      if (n) {
        this.obj.program('bridle_revisit_tcp').iterRead();
        this.obj.program('bridle_revisit_udp').iterRead();
      }
      return n;
    } finally {
      // empty for the next run (they start empty)
      emptyMap(owners);
      emptyMap(listeners);
    }
  }

  /** Where bridle's resolver listens (host order, 0 = not listening): port-53 UDP of sessions goes there. */
  setDnsPorts(port4: number, port6: number): void {
    const f = NET_LAYOUT.bridle_net_conf.fields;
    const v = Buffer.alloc(NET_LAYOUT.bridle_net_conf.size);
    v.writeUInt16LE(port4, f.dns_port4);
    v.writeUInt16LE(port6, f.dns_port6);
    this.map('net_conf').update(u32(0), v);
  }

  /**
   * Installs `compiled` as the network policy of policy `policyId`: every entry is written under a new
   * generation, then one update of the policy's config entry switches all its sessions at once; the
   * previous generation's entries are removed DROP_DELAY_MS later. A failure before the switch removes
   * what it wrote and leaves the old policy in force.
   */
  applyPolicy(policyId: number, compiled: CompiledNet): number {
    try {
      return this.applyOnce(policyId, compiled);
    } catch (err) {
      // The tables full of generations replaced moments ago (reloads in quick succession): those go
      // now, rather than fail the new policy, and it is written once more.
      const code = (err as { code?: string }).code;
      if (!this.retiring.size || (code !== 'E2BIG' && code !== 'ENOSPC' && code !== 'ENOMEM')) throw err;
      this.dropRetiring();
      return this.applyOnce(policyId, compiled);
    }
  }

  private applyOnce(policyId: number, compiled: CompiledNet): number {
    const gen = this.nextGen++;
    const written: Written = { gen, keys: [] };
    const setBase = this.nextSet;
    this.nextSet += compiled.sets.length;
    const setId = (local: number) => (local === 0 ? 0 : setBase + local - 1);
    try {
      this.writeSets(compiled, setId, written);
      for (const [mapName, entries] of [['net_deny', compiled.deny], ['net_allow', compiled.allow]] as const) {
        const kf = NET_LAYOUT.bridle_net_key.fields;
        const keys: Buffer[] = [];
        const vals: Buffer[] = [];
        for (const e of entries) {
          const k = Buffer.alloc(NET_LAYOUT.bridle_net_key.size);
          k.writeUInt32LE(64 + e.prefix, kf.prefixlen);
          k.writeUInt32LE(gen, kf.gen);
          k.writeUInt32LE(e.family, kf.family);
          addr16(e.addr).copy(k, kf.addr);
          keys.push(k);
          vals.push(nodeValue(setId(e.set), e.parent >= 0 ? 64 + e.parent : 0, e.rule));
        }
        this.writeAll(this.map(mapName), keys, vals, written);
      }
      const hk = NET_LAYOUT.bridle_host_key.fields;
      this.writeAll(
        this.map('net_hosts'),
        compiled.hosts.map((h) => {
          const k = Buffer.alloc(NET_LAYOUT.bridle_host_key.size);
          k.writeUInt32LE(gen, hk.gen);
          k.writeBigUInt64LE(h.hash, hk.pattern);
          return k;
        }),
        compiled.hosts.map((h) => nodeValue(setId(h.set), 0, h.rule)),
        written,
      );
      this.writeUnix(gen, compiled.unix, written);
    } catch (err) {
      this.drop(written);
      throw err;
    }
    const cf = NET_LAYOUT.bridle_net_cfg.fields;
    const cfg = Buffer.alloc(NET_LAYOUT.bridle_net_cfg.size);
    cfg.writeUInt32LE(gen, cf.gen);
    cfg.writeUInt32LE(compiled.cfg.defaultAction, cf.default_action);
    cfg.writeUInt32LE(compiled.cfg.defaultRule, cf.default_rule);
    cfg.writeUInt32LE(compiled.cfg.flags, cf.flags);
    cfg.writeUInt32LE(compiled.cfg.unixDefault, cf.unix_default);
    this.map('net_policies').update(u32(policyId), cfg); // the switch
    const prev = this.gens.get(policyId);
    this.gens.set(policyId, written);
    this.compiledBy.set(policyId, compiled);
    if (prev) this.retire(prev);
    return gen;
  }

  /** Drops `w` DROP_DELAY_MS from now: a connect decided a moment before the switch may still look its rules up. */
  private retire(w: Written): void {
    const timer = setTimeout(() => {
      if (this.retiring.delete(w)) this.drop(w);
    }, DROP_DELAY_MS).unref();
    this.retiring.set(w, timer);
  }

  /** Drops every retiring generation now, and stops their timers. */
  private dropRetiring(): void {
    for (const [w, timer] of this.retiring) {
      clearTimeout(timer);
      this.drop(w);
    }
    this.retiring.clear();
  }

  /**
   * Removes policy `policyId`'s network policy (its sessions are over): its config entry at once, its
   * rules DROP_DELAY_MS later like a replaced generation's.
   */
  removePolicy(policyId: number): void {
    const prev = this.gens.get(policyId);
    this.map('net_policies').delete(u32(policyId)); // its sessions now have no network section
    this.gens.delete(policyId);
    this.compiledBy.delete(policyId);
    if (prev) this.retire(prev);
  }

  /** Replaced generations still in the maps (their rules go DROP_DELAY_MS after the switch). */
  retiringGenerations(): number[] {
    return [...this.retiring.keys()].map((w) => w.gen);
  }

  protected override closeObjects(): void {
    // Replaced generations go now: pinned links (sessions still alive) keep these maps after we exit,
    // and a timer firing later would find them closed.
    try {
      this.dropRetiring();
    } catch {
      /* the maps are going with the object */
    }
    this.retiring.clear();
    this.obj.close();
  }

  /** unix: entries of generation `gen` (0: bridle's own sockets, for every session): by name, and by identity. */
  private writeUnix(gen: number, entries: CompiledNet['unix'], written: Written): void {
    const uk = NET_LAYOUT.bridle_unix_key.fields;
    const ik = NET_LAYOUT.bridle_unix_ino_key.fields;
    const rule = (u: CompiledNet['unix'][number]) => {
      const v = Buffer.alloc(8);
      v.writeUInt32LE(u.action === 'deny' ? 1 : 0, 0);
      v.writeUInt32LE(u.rule, 4);
      return v;
    };
    const byName = entries.flatMap((u) => u.hashes.map((h) => ({ h, u })));
    this.writeAll(
      this.map('unix_rules'),
      byName.map(({ h }) => {
        const k = Buffer.alloc(NET_LAYOUT.bridle_unix_key.size);
        k.writeUInt32LE(gen, uk.gen);
        k.writeBigUInt64LE(h, uk.path);
        return k;
      }),
      byName.map(({ u }) => rule(u)),
      written,
    );
    // bridle's own sockets (gen 0) by identity too: the kernel checks them for every session
    const byIdent = entries.filter((u) => u.ident);
    this.writeAll(
      this.map('unix_inodes'),
      byIdent.map((u) => {
        const k = Buffer.alloc(NET_LAYOUT.bridle_unix_ino_key.size);
        k.writeUInt32LE(gen, ik.gen);
        k.writeBigUInt64LE(u.ident!.dev, ik.dev);
        k.writeBigUInt64LE(u.ident!.ino, ik.ino);
        return k;
      }),
      byIdent.map(rule),
      written,
    );
  }

  /** bridle's own unix sockets (the control socket): no session reaches them, whatever its policy. */
  protectSocket(path: string): void {
    const w: Written = { gen: 0, keys: [] };
    this.writeUnix(0, [{ path, ...unixForms(path), action: 'deny', rule: 0 }], w);
    this.protectedKeys.push(...w.keys);
  }

  /** Undoes protectSocket (the socket is gone). */
  unprotectSockets(): void {
    this.drop({ gen: 0, keys: this.protectedKeys.splice(0) });
  }

  compiled(policyId: number): CompiledNet | undefined {
    return this.compiledBy.get(policyId);
  }

  private writeSets(compiled: CompiledNet, setId: (local: number) => number, written: Written): void {
    const pf = NET_LAYOUT.bridle_port_key.fields;
    const keys: Buffer[] = [];
    const vals: Buffer[] = [];
    compiled.sets.forEach((blocks, local) => {
      if (local === 0) return;
      for (const b of blocks) {
        const k = Buffer.alloc(NET_LAYOUT.bridle_port_key.size);
        k.writeUInt32LE(48 + b.bits, pf.prefixlen);
        k.writeUInt32LE(setId(local), pf.set);
        k.writeUInt16LE(b.proto, pf.proto);
        k.writeUInt16BE(b.port, pf.port);
        keys.push(k);
        vals.push(u32(b.rule === RULE_NODE ? RULE_NODE : b.rule));
      }
    });
    this.writeAll(this.map('net_ports'), keys, vals, written);
  }

  private writeAll(m: BpfMap, keys: Buffer[], vals: Buffer[], written: Written): void {
    if (!keys.length) return;
    // record first: a batch that fails half way is removed completely
    for (const k of keys) written.keys.push([m, k]);
    m.updateBatch(Buffer.concat(keys), Buffer.concat(vals), keys.length);
  }

  private drop(w: Written): void {
    for (const [m, k] of w.keys) {
      try {
        m.delete(k);
      } catch {
        /* map closed */
      }
    }
    w.keys = [];
  }

  /** The session that sent the query arriving from local port `port` (family of the client's socket). */
  dnsClient(family: 4 | 6, port: number): DnsClient | undefined {
    const v = this.map('dns_clients').lookup(u32((family << 16) | port));
    if (!v) return undefined;
    const f = NET_LAYOUT.bridle_dns_client.fields;
    const fam = v.readUInt16LE(f.family) === 6 ? 6 : 4;
    return {
      session: v.readBigUInt64LE(f.session),
      key: v.readBigUInt64LE(f.key),
      ktime: v.readBigUInt64LE(f.ktime),
      pid: v.readUInt32LE(f.pid),
      policy: v.readUInt32LE(f.policy),
      server: addrString(v, f.orig, fam),
      serverPort: v.readUInt16BE(f.orig_port),
      family: fam,
    };
  }

  /**
   * Lets `session` reach `addr` (4 or 16 bytes; v4-mapped IPv6 counts as IPv4) under the host: patterns
   * `patterns` until boot-time `expires` (ns). Patterns already recorded for the address are kept.
   */
  allowResolved(session: bigint, addr: Uint8Array, patterns: bigint[], expires: bigint): void {
    let bytes = addr;
    let family = addr.length === 4 ? 4 : 6;
    if (family === 6 && addr.subarray(0, 10).every((x) => x === 0) && addr[10] === 0xff && addr[11] === 0xff) {
      bytes = addr.subarray(12, 16);
      family = 4;
    }
    const kf = NET_LAYOUT.bridle_dnsaddr_key.fields;
    const k = Buffer.alloc(NET_LAYOUT.bridle_dnsaddr_key.size);
    k.writeBigUInt64LE(session, kf.session);
    k.writeUInt32LE(family, kf.family);
    addr16(bytes).copy(k, kf.addr);
    const m = this.map('dns_addrs');
    const vf = NET_LAYOUT.bridle_dnsaddr.fields;
    const old = m.lookup(k);
    const pats: bigint[] = [...patterns];
    if (old) {
      for (let i = 0; i < 4; i++) {
        const p = old.readBigUInt64LE(vf.pattern + 8 * i);
        if (p && !pats.includes(p)) pats.push(p);
      }
    }
    const oldExp = old ? old.readBigUInt64LE(vf.expires) : 0n;
    const v = Buffer.alloc(NET_LAYOUT.bridle_dnsaddr.size);
    v.writeBigUInt64LE(expires > oldExp ? expires : oldExp, vf.expires);
    pats.slice(0, 4).forEach((p, i) => v.writeBigUInt64LE(p, vf.pattern + 8 * i));
    m.update(k, v);
    const set = this.sessionAddrs.get(session) ?? new Set<string>();
    set.add(k.toString('hex'));
    this.sessionAddrs.set(session, set);
  }

  /** Sessions holding DNS-answered addresses. */
  sessionsWithAddresses(): bigint[] {
    return [...this.sessionAddrs.keys()];
  }

  /** Addresses a session was given by its DNS answers (for tests and `bridle sessions`). */
  resolvedCount(session: bigint): number {
    return this.sessionAddrs.get(session)?.size ?? 0;
  }

  /** Removes everything the session's DNS answers allowed (the session ended). */
  forgetSession(session: bigint): void {
    const set = this.sessionAddrs.get(session);
    if (!set) return;
    this.sessionAddrs.delete(session);
    const m = this.map('dns_addrs');
    for (const hex of set) m.delete(Buffer.from(hex, 'hex'));
  }

  /** Ring-buffer reservation failures since load. */
  lost(): number {
    return this.perCpuSum('net_lost', 0) + this.perCpuSum('net_lost', 1);
  }


}

function nodeValue(set: number, parent: number, rule: number): Buffer {
  const f = NET_LAYOUT.bridle_net_node.fields;
  const v = Buffer.alloc(NET_LAYOUT.bridle_net_node.size);
  v.writeUInt32LE(set, f.set);
  v.writeUInt32LE(parent, f.parent);
  v.writeUInt32LE(rule >>> 0, f.rule);
  return v;
}
