// Net sensor records → connect events (the engine calls this from handleNet).
import type { ConnectEvent, Verdict } from '../events/types.js';
import { NET_KIND, NET_OP, VERDICT } from '../kernel/layout.js';
import type { RawNet, RawNetRecord } from '../kernel/net.js';
import type { CompiledNet } from '../policy/netcompile.js';

const verdictName = (v: number): Verdict => (v === VERDICT.DENY ? 'deny' : v === VERDICT.WOULD_DENY ? 'would_deny' : 'allow');

/** The name events give the rule that decided. */
export function netRuleName(compiled: CompiledNet | undefined, kind: number, ruleId: number): string {
  switch (kind) {
    case NET_KIND.DEFAULT:
      return 'network.default';
    case NET_KIND.DNS_TCP:
      return 'builtin.dns_tcp';
    case NET_KIND.DNS_BIND:
      return 'builtin.dns_redirect';
    case NET_KIND.CONTROL:
      return 'builtin.control_socket';
    default:
      return compiled?.rules[ruleId]?.id ?? `rule#${ruleId}`;
  }
}

type Base = Pick<ConnectEvent, 'type' | 'ts' | 'host' | 'session' | 'exec_id' | 'parent_exec_id' | 'pid' | 'ppid' | 'uid'>;

/** Builds the connect event of a record on `base` (ts, host, session, pid, exec_id), which it fills in. */
export function connectEvent(base: Base, r: RawNetRecord, compiled: CompiledNet | undefined, policy: string): ConnectEvent {
  const rule = netRuleName(compiled, r.ruleKind, r.ruleId);
  if (r.type === 'unix') {
    const op = r.op === NET_OP.SENDMSG ? 'sendmsg' : 'connect';
    return Object.assign(base, { type: 'connect' as const, uid: r.uid, proto: 'unix' as const, family: 'unix' as const, daddr: r.path, dport: 0, op, verdict: verdictName(r.verdict), rule, policy });
  }
  // no object spread on this path: see Engine.base
  return Object.assign(base, {
    type: 'connect' as const,
    uid: r.uid,
    proto: (r.proto === 6 ? 'tcp' : r.proto === 17 ? 'udp' : 'other') as ConnectEvent['proto'],
    family: (r.family === 6 ? 'inet6' : 'inet') as ConnectEvent['family'],
    daddr: r.daddr,
    dport: r.dport,
    op: r.op === NET_OP.SENDMSG ? 'sendmsg' : r.op === NET_OP.REVISIT ? 'revisit' : 'connect',
    verdict: verdictName(r.verdict),
    rule,
    policy,
  });
}

const FAMILIES: Record<number, string> = {
  2: 'AF_INET', 10: 'AF_INET6', 17: 'AF_PACKET', 21: 'AF_RDS', 29: 'AF_CAN', 30: 'AF_TIPC', 31: 'AF_BLUETOOTH', 40: 'AF_VSOCK', 44: 'AF_XDP',
};
const TYPES: Record<number, string> = { 1: 'SOCK_STREAM', 2: 'SOCK_DGRAM', 3: 'SOCK_RAW', 5: 'SOCK_SEQPACKET', 10: 'SOCK_PACKET' };

/** A raw, ICMP or packet socket a session tried to open: what the violation event says. */
export function rawSocketDetail(r: RawNet): { what: string; detail: string } {
  const family = r.rawFamily;
  const call = `socket(${FAMILIES[family] ?? family}, ${TYPES[r.dport] ?? r.dport}, ${r.proto})`;
  const icmp = r.dport === 2 && (r.proto === 1 || r.proto === 58);
  const inet = family === 2 || family === 10;
  const what = family === 17 ? 'packet_socket' : !inet ? 'uncovered_protocol' : r.dport === 3 ? 'raw_socket' : icmp ? 'icmp_socket' : 'uncovered_protocol';
  return { what, detail: `${call}: a session with a network policy may not open sockets that bypass its connect and send rules` };
}

/** The rule a refused socket names: raw, ICMP and packet sockets, or a protocol no hook decides. */
export function rawSocketRule(what: string): string {
  return what === 'uncovered_protocol' ? 'builtin.no_uncovered_protocol' : 'builtin.no_raw_socket';
}

const SOCKOPTS: Record<string, string> = { '0:4': 'IPPROTO_IP, IP_OPTIONS', '41:5': 'IPPROTO_IPV6, IPV6_2292RTHDR', '41:6': 'IPPROTO_IPV6, IPV6_2292PKTOPTIONS', '41:57': 'IPPROTO_IPV6, IPV6_RTHDR' };

/** A socket option that would route packets past the connect and send rules (NET_OP.SOCKOPT: dport is the option, proto the level). */
export function sourceRouteDetail(r: RawNet): { what: string; detail: string } {
  const opt = SOCKOPTS[`${r.proto}:${r.dport}`] ?? `level ${r.proto}, option ${r.dport}`;
  return { what: 'source_route', detail: `setsockopt(${opt}): a routing header or source route would send packets to an address the connect and send rules did not judge` };
}
