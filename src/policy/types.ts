// The policy as the rest of bridle sees it: validated, with every rule carrying a stable id
// ("exec.deny[1]") that events report in their `rule` field, and its source position.
import type { McpPolicy } from './mcp.js';

export type Mode = 'enforce' | 'monitor';
export type Action = 'allow' | 'deny';

export interface Source {
  file: string;
  line: number;
  col: number;
}

export interface AgentRule {
  id: string; // agents[0]
  name: string;
  /** Basenames (no '/') or absolute paths. */
  exe: string[];
  /** Tokens that must also appear in argv (any position). */
  argv: string[];
  src: Source;
}

export type ExecMatch = { kind: 'path'; path: string } | { kind: 'dir'; dir: string } | { kind: 'argv'; argv: string[] };

export type ExecRule = ExecMatch & { id: string; action: Action; src: Source };

export interface ExecPolicy {
  default: Action;
  allow: ExecRule[];
  deny: ExecRule[];
  /** Images with no name in any filesystem (memfd, deleted files). Denied unless the policy says allow. */
  fileless: Action;
}

export interface PortRange {
  from: number;
  to: number;
}

export type NetProto = 'tcp' | 'udp' | 'any';

export type NetMatch = { kind: 'cidr'; cidr: string } | { kind: 'host'; host: string };

export type NetRule = NetMatch & { id: string; action: Action; ports: PortRange[]; proto: NetProto; src: Source };

export interface NetworkPolicy {
  default: Action;
  allow: NetRule[];
  deny: NetRule[];
  unix: { deny: string[]; allow: string[] };
  /** Upstream resolver for host: rules; default: the first nameserver in /etc/resolv.conf. */
  dns?: {
    upstream?: string;
    /** seconds an answered address stays allowed at least */
    minTtl?: number;
    /** `hosts`: the resolver answers only names a host: allow rule matches (names cannot carry data out) */
    names?: 'any' | 'hosts';
  };
}

export interface CredentialsPolicy {
  env: { allow: string[] };
  files: { deny: string[] };
}

export interface Policy {
  version: 1;
  name: string;
  mode: Mode;
  agents: AgentRule[];
  exec: ExecPolicy;
  network: NetworkPolicy;
  credentials: CredentialsPolicy;
  mcp: McpPolicy;
  /** Where the policy came from and a digest of its text, for events and `bridle doctor`. */
  file: string;
  sha256: string;
}
