// The network section → what the net sensor writes into its maps. Pure: no map is touched here; the
// sensor (src/kernel/net.ts) turns the result into keys under a fresh generation and switches to it with
// one update of the policy's config entry.
//
// Shape in the kernel (bpf/include/bridle_net.h): two LPM tries over addresses (deny, allow). Every
// address entry names a port set (an LPM trie over {set, proto, port}: a port range is stored as the
// aligned power-of-two blocks covering it) and its nearest shorter prefix in the same trie, so a port
// rule on 10.0.0.0/8 still applies to an address that also matches a port rule on 10.1.0.0/16.
import { lstatSync, realpathSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, dirname, join, normalize } from 'node:path';
import { PolicyError, type PolicyProblem } from './yamlctx.js';
import { fnv1a, identity, type RuleRef } from './compile.js';
import { ipToBytes } from './load.js';
import type { NetProto, NetRule, Policy, PortRange } from './types.js';

export const PROTO = { tcp: 6, udp: 17, other: 0 } as const;
/** Address entries may nest at most this deep in one trie with port restrictions (bridle_net.h). */
export const NET_DEPTH = 8;
/** Port set 0: every port and protocol, no second lookup. */
export const SET_ALL = 0;
/** Port-set value meaning "the address entry's rule". */
export const RULE_NODE = 0xffffffff;

export interface PortBlock {
  proto: number;
  /** first port of an aligned block of 2^(16-bits) ports */
  port: number;
  /** prefix length of the block within the 16-bit port (16 = one port, 0 = all) */
  bits: number;
  rule: number;
}

/** One address prefix of a trie, with its port set (index into `sets`, 0 = all) and parent prefix. */
export interface AddrEntry {
  family: 4 | 6;
  /** 4 or 16 bytes, network order, host bits zero */
  addr: Uint8Array;
  prefix: number;
  set: number;
  /** the parent's address prefix length (not the trie prefixlen), or -1 */
  parent: number;
  rule: number;
}

export interface HostEntry {
  /** as written, lower case: "api.github.com" or "*.github.com" */
  pattern: string;
  hash: bigint;
  set: number;
  rule: number;
}

export interface HostMatcher {
  pattern: string;
  hash: bigint;
  action: 'allow' | 'deny';
  rule: number;
}

export interface UnixEntry {
  path: string;
  /** FNV-1a 64 of every spelling the kernel hook may see: as written, normalized, the real path */
  hashes: bigint[];
  /** the socket file's identity when it exists at compile time: also checked after a connect, whatever name reached it */
  ident?: { dev: bigint; ino: bigint };
  action: 'allow' | 'deny';
  rule: number;
}

export interface CompiledNet {
  /** Indexed by rule_id. 0 = network.default. */
  rules: RuleRef[];
  deny: AddrEntry[];
  allow: AddrEntry[];
  /** Port sets by local index (1..n; index 0 unused = all ports). The sensor gives them global ids. */
  sets: PortBlock[][];
  /** allow host: rules for the kernel (per pattern). */
  hosts: HostEntry[];
  /** every host: rule, deny first, for the resolver */
  hostMatchers: HostMatcher[];
  unix: UnixEntry[];
  cfg: { defaultAction: number; defaultRule: number; flags: number; unixDefault: number };
  /** Upstream resolver for this policy's sessions, if the policy names one. */
  upstream?: string;
  /** network.dns.min_ttl, if the policy sets it. */
  minTtl?: number;
  /** network.dns.names: hosts: the rule id the resolver names when it refuses a name no host: allow rule matches. */
  namesRule?: number;
}

/** bridle_net_cfg.flags: MONITOR; DNS: port-53 UDP goes to bridle's resolver; NAMES: host: rules decide, so DNS
 * that cannot reach the resolver is denied and TCP to port 53 needs an explicit allow. */
export const NET_F = { MONITOR: 1, DNS: 2, NAMES: 4, UNIX_INO: 8 } as const;

const ALLOW = 0;
const DENY = 1;

export function hostHash(pattern: string): bigint {
  return fnv1a(Buffer.from(pattern.toLowerCase(), 'utf8'));
}

export function unixHash(path: string): bigint {
  return fnv1a(Buffer.from(path, 'utf8'));
}

/**
 * A unix: entry's spellings and identity. `@name` is an abstract socket (no file). A path is taken as
 * written, normalized, and resolved through symlinks (/var/run/docker.sock is /run/docker.sock); any
 * other name of the same socket file is caught by its identity after the connect.
 */
export function unixForms(path: string): { hashes: bigint[]; ident?: { dev: bigint; ino: bigint } } {
  const hashes = unixHashes(path);
  if (path.startsWith('@')) return { hashes };
  try {
    return { hashes, ident: identity(path) };
  } catch {
    return { hashes }; // not there yet: by name only until it exists when the policy is next applied
  }
}

/** The hashes of every spelling of a unix: entry the kernel hook may see (as written, normalized, real). */
function unixHashes(path: string): bigint[] {
  if (path.startsWith('@')) return [unixHash(path)];
  const forms = new Set([path, normalize(path)]);
  try {
    forms.add(realpathSync(path));
  } catch {
    /* not there yet */
  }
  return [...forms].filter((f) => Buffer.byteLength(f) <= 108).map(unixHash);
}

/**
 * The identity of the socket file an allow entry names: the path itself when it is one (directories on the
 * way may be symlinks, /var/run → /run). Through a symlink only when `followLinks` (a policy being loaded:
 * podman's /var/run/docker.sock). When the policy compiles again because a watched path changed, a
 * symlink at an allowed path may be a session's (one that can write there), so `previous`, the identity
 * the compile in force took, is kept only if the link still leads to it.
 */
export function allowedSocketIdent(path: string, followLinks = true, previous?: { dev: bigint; ino: bigint }): { dev: bigint; ino: bigint } | undefined {
  if (path.startsWith('@')) return undefined;
  try {
    const real = join(realpathSync(dirname(path)), basename(path));
    const st = lstatSync(real);
    if (st.isSocket()) return identity(real);
    if (!st.isSymbolicLink() || !lstatSync(realpathSync(real)).isSocket()) return undefined;
    const target = identity(real);
    if (followLinks) return target;
    return previous && previous.dev === target.dev && previous.ino === target.ino ? target : undefined;
  } catch {
    return undefined;
  }
}

/** Does `name` (a DNS name, any case, trailing dot allowed) match host pattern `pattern`? */
export function hostMatches(pattern: string, name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase();
  if (p.startsWith('*.')) return n.endsWith(p.slice(1)) && n.length > p.length - 1;
  return n === p;
}

/** Splits [from, to] into aligned power-of-two blocks (at most 30 for 16-bit ports). */
export function portBlocks(from: number, to: number): { port: number; bits: number }[] {
  const out: { port: number; bits: number }[] = [];
  let lo = from;
  while (lo <= to) {
    let size = 1;
    let bits = 16;
    // grow the block while it stays aligned and inside the range
    while (bits > 0 && lo % (size * 2) === 0 && lo + size * 2 - 1 <= to) {
      size *= 2;
      bits--;
    }
    out.push({ port: lo, bits });
    lo += size;
  }
  return out;
}

function protos(p: NetProto): number[] {
  return p === 'tcp' ? [PROTO.tcp] : p === 'udp' ? [PROTO.udp] : [PROTO.tcp, PROTO.udp, PROTO.other];
}

function allPortsAnyProto(r: NetRule): boolean {
  return r.proto === 'any' && (r.ports.length === 0 || r.ports.some((x) => x.from <= 1 && x.to >= 65535));
}

function describe(r: NetRule): string {
  const what = r.kind === 'cidr' ? `cidr ${r.cidr}` : `host ${r.host}`;
  const ports = r.ports.length ? ` ports ${r.ports.map((p: PortRange) => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`)).join(',')}` : '';
  const proto = r.proto !== 'any' ? ` ${r.proto}` : '';
  return `${r.action} ${what}${ports}${proto}`;
}

/** Parses "10.1.2.0/24" (already normalized by the loader) into family, bytes and prefix; v4-mapped v6 becomes v4. */
export function parseCidr(cidr: string): { family: 4 | 6; addr: Uint8Array; prefix: number } {
  const [a, p] = cidr.split('/') as [string, string | undefined];
  const fam = isIP(a);
  let bytes = ipToBytes(a);
  let prefix = p === undefined ? (fam === 4 ? 32 : 128) : Number(p);
  if (fam === 6 && prefix >= 96 && bytes.subarray(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    // ::ffff:a.b.c.d/n is the IPv4 prefix a.b.c.d/(n-96): the kernel judges mapped addresses as IPv4
    return { family: 4, addr: bytes.slice(12), prefix: prefix - 96 };
  }
  if (fam === 4) bytes = bytes.slice(0, 4);
  return { family: fam === 4 ? 4 : 6, addr: bytes, prefix };
}

function addrKey(family: number, addr: Uint8Array, prefix: number): string {
  return `${family}/${Buffer.from(addr).toString('hex')}/${prefix}`;
}

function maskTo(addr: Uint8Array, prefix: number): Uint8Array {
  const out = Uint8Array.from(addr);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    out[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

class SetTable {
  readonly sets: PortBlock[][] = [[]];
  private byContent = new Map<string, number>();

  /** The port set for `rules` (all at one address entry), and the rule the entry itself reports. */
  build(rules: { rule: NetRule; id: number }[]): { set: number; rule: number } {
    const first = rules[0]!;
    if (rules.length === 1 && allPortsAnyProto(first.rule)) return { set: SET_ALL, rule: first.id };
    const blocks = new Map<string, PortBlock>();
    for (const { rule, id } of rules) {
      const ranges = rule.ports.length ? rule.ports : [{ from: 0, to: 65535 }];
      for (const proto of protos(rule.proto)) {
        for (const range of ranges) {
          for (const b of portBlocks(range.from, range.to)) {
            const k = `${proto}/${b.port}/${b.bits}`;
            // the first rule in the file that lists a block is the one reported for it
            if (!blocks.has(k)) blocks.set(k, { proto, port: b.port, bits: b.bits, rule: id === first.id ? RULE_NODE : id });
          }
        }
      }
    }
    const list = [...blocks.values()];
    const content = list.map((b) => `${b.proto}/${b.port}/${b.bits}/${b.rule}`).sort().join(',');
    let set = this.byContent.get(content);
    if (set === undefined) {
      set = this.sets.length;
      this.sets.push(list);
      this.byContent.set(content, set);
    }
    return { set, rule: first.id };
  }
}

function buildTrie(items: { rule: NetRule; id: number }[], table: SetTable, problems: PolicyProblem[]): AddrEntry[] {
  const byPrefix = new Map<string, { family: 4 | 6; addr: Uint8Array; prefix: number; rules: { rule: NetRule; id: number }[] }>();
  for (const it of items) {
    if (it.rule.kind !== 'cidr') continue;
    const c = parseCidr(it.rule.cidr);
    const k = addrKey(c.family, c.addr, c.prefix);
    const cur = byPrefix.get(k);
    if (cur) cur.rules.push(it);
    else byPrefix.set(k, { ...c, rules: [it] });
  }
  const entries = new Map<string, AddrEntry & { src: NetRule }>();
  for (const [k, e] of byPrefix) {
    const { set, rule } = table.build(e.rules);
    entries.set(k, { family: e.family, addr: e.addr, prefix: e.prefix, set, rule, parent: -1, src: e.rules[0]!.rule });
  }
  // parents: the nearest shorter prefix present, looked up only at the prefix lengths that exist
  const lengths = new Map<number, number[]>();
  for (const e of entries.values()) {
    const l = lengths.get(e.family) ?? [];
    if (!l.includes(e.prefix)) l.push(e.prefix);
    lengths.set(e.family, l);
  }
  for (const l of lengths.values()) l.sort((a, b) => b - a);
  for (const e of entries.values()) {
    if (e.set === SET_ALL) continue; // a hit on every port: nothing above it is ever consulted
    for (const len of lengths.get(e.family)!) {
      if (len >= e.prefix) continue;
      if (entries.has(addrKey(e.family, maskTo(e.addr, len), len))) {
        e.parent = len;
        break;
      }
    }
  }
  // the kernel follows at most NET_DEPTH entries of a chain
  const out: AddrEntry[] = [];
  for (const e of entries.values()) {
    let depth = 1;
    let cur: AddrEntry | undefined = e;
    while (cur && cur.parent >= 0) {
      cur = entries.get(addrKey(cur.family, maskTo(cur.addr, cur.parent), cur.parent));
      depth++;
    }
    if (depth > NET_DEPTH) {
      problems.push({ ...e.src.src, message: `${e.src.id}: more than ${NET_DEPTH} nested ${e.src.action} prefixes with port or protocol limits contain ${e.src.kind === 'cidr' ? e.src.cidr : ''}; merge some of them` });
    }
    const { src: _src, ...plain } = e;
    out.push(plain);
  }
  return out;
}

/**
 * Compiles the network section. Throws PolicyError (file:line:col) for what the kernel cannot hold.
 * `inForce`: the compile in force when a watched path changed (not a policy being loaded): allowed unix
 * sockets are then not followed through symlinks that lead somewhere new (allowedSocketIdent).
 */
export function compileNet(policy: Policy, inForce?: CompiledNet): CompiledNet {
  const net = policy.network;
  const rules: RuleRef[] = [{ id: 'network.default', text: `default ${net.default}` }];
  const problems: PolicyProblem[] = [];
  const ids = new Map<NetRule, number>();
  for (const r of [...net.deny, ...net.allow]) {
    ids.set(r, rules.length);
    rules.push({ id: r.id, text: describe(r) });
  }
  const table = new SetTable();
  const deny = buildTrie(net.deny.map((rule) => ({ rule, id: ids.get(rule)! })), table, problems);
  const allow = buildTrie(net.allow.map((rule) => ({ rule, id: ids.get(rule)! })), table, problems);

  // host: allow rules per pattern (deny host rules are enforced by the resolver, which refuses the name)
  const byPattern = new Map<string, { rule: NetRule; id: number }[]>();
  for (const r of net.allow) {
    if (r.kind !== 'host') continue;
    const l = byPattern.get(r.host) ?? [];
    l.push({ rule: r, id: ids.get(r)! });
    byPattern.set(r.host, l);
  }
  const hosts: HostEntry[] = [...byPattern].map(([pattern, rs]) => ({ pattern, hash: hostHash(pattern), ...table.build(rs) }));
  const hostMatchers: HostMatcher[] = [...net.deny, ...net.allow]
    .filter((r): r is NetRule & { kind: 'host'; host: string } => r.kind === 'host')
    .map((r) => ({ pattern: r.host, hash: hostHash(r.host), action: r.action, rule: ids.get(r)! }));

  const unix: UnixEntry[] = [];
  net.unix.deny.forEach((path, i) => {
    unix.push({ path, ...unixForms(path), action: 'deny', rule: rules.length });
    rules.push({ id: `network.unix.deny[${i}]`, text: `deny unix ${path}` });
  });
  net.unix.allow.forEach((path, i) => {
    if (unix.some((u) => u.path === path)) return; // deny beats allow
    // By name at the connect, and by identity after it: under an allow list, a socket reached under an
    // allowed name must be one of the allowed sockets (not, say, the Docker socket bind mounted there).
    const hashes = unixHashes(path);
    const ident = allowedSocketIdent(path, !inForce, inForce?.unix.find((u) => u.action === 'allow' && u.path === path)?.ident);
    const same = (a?: { dev: bigint; ino: bigint }) => !!a && !!ident && a.dev === ident.dev && a.ino === ident.ino;
    const denied = unix.some((u) => u.action === 'deny' && same(u.ident)); // another name of a denied socket
    unix.push({ path, hashes, ...(ident && !denied ? { ident } : {}), action: 'allow', rule: rules.length });
    rules.push({ id: `network.unix.allow[${i}]`, text: `allow unix ${path}` });
  });

  let namesRule: number | undefined;
  if (net.dns?.names === 'hosts') {
    namesRule = rules.length;
    rules.push({ id: 'network.dns.names', text: 'names hosts: the resolver answers only names a host: allow rule matches' });
  }
  if (problems.length) throw new PolicyError(problems);
  const hasHosts = hostMatchers.length > 0;
  return {
    rules,
    deny,
    allow,
    sets: table.sets,
    hosts,
    hostMatchers,
    unix,
    cfg: {
      defaultAction: net.default === 'deny' ? DENY : ALLOW,
      defaultRule: 0,
      // every session's DNS goes through the resolver; once names decide anything, DNS that would bypass
      // it (TCP to port 53, a datagram that cannot be redirected) needs an explicit allow
      flags: (policy.mode === 'monitor' ? NET_F.MONITOR : 0) | NET_F.DNS | (hasHosts ? NET_F.NAMES : 0) |
        (unix.some((u) => u.action === 'deny' && u.ident) || net.unix.allow.length ? NET_F.UNIX_INO : 0),
      // unix sockets: an allow list makes everything else denied; otherwise only the deny list applies
      unixDefault: net.unix.allow.length ? DENY : ALLOW,
    },
    ...(net.dns?.upstream ? { upstream: net.dns.upstream } : {}),
    ...(net.dns?.minTtl !== undefined ? { minTtl: net.dns.minTtl } : {}),
    ...(namesRule !== undefined ? { namesRule } : {}),
  };
}

/** The host: rules a DNS name matches for the resolver: a deny beats an allow. */
export function matchHost(compiled: CompiledNet, name: string): { action: 'allow' | 'deny'; rule: number; hashes: bigint[] } | undefined {
  const hits = compiled.hostMatchers.filter((m) => hostMatches(m.pattern, name));
  if (!hits.length) return undefined;
  const deny = hits.find((h) => h.action === 'deny');
  if (deny) return { action: 'deny', rule: deny.rule, hashes: [] };
  const hashes = [...new Set(hits.map((h) => h.hash))];
  return { action: 'allow', rule: hits[0]!.rule, hashes };
}
