// The one event shape every part of bridle shares: NDJSON lines, protobuf messages and collector rows
// carry these field names (DESIGN.md §2). Kernel decoders, the MCP proxy and the collector all produce or
// consume BridleEvent; nothing else crosses module boundaries.

export type Verdict = 'allow' | 'deny' | 'would_deny';

export type EventType =
  | 'session_start'
  | 'session_end'
  | 'exec'
  | 'exit'
  | 'connect'
  | 'dns'
  | 'tool_call'
  | 'violation'
  | 'loss'
  | 'policy';

/** Fields every event carries. `ts` is an ISO-8601 UTC string with millisecond precision. */
export interface EventBase {
  type: EventType;
  ts: string;
  host: string;
  /** Session id (string form of the kernel's 64-bit session number, or a proxy-made id); '' when none. */
  session: string;
  /** Process image id: unique across pid reuse, reboots and hosts. '' when unknown. */
  exec_id: string;
  parent_exec_id: string;
  pid: number;
  ppid: number;
  uid: number;
  /** Agent-side sequence number, strictly increasing per host; assigned when the event is emitted. */
  seq?: number;
  verdict?: Verdict;
  /** Which rule decided, e.g. "exec.deny[1]" or "default"; '' when no rule applied. */
  rule?: string;
  policy?: string;
}

export interface SessionStartEvent extends EventBase {
  type: 'session_start';
  /** How the session started: run | attach | auto */
  origin: 'run' | 'attach' | 'auto';
  agent?: string;
  /** Enforcement backend: bpf-lsm | sigkill | monitor */
  backend: string;
  mode: 'enforce' | 'monitor';
  path?: string;
  argv?: string[];
}

export interface SessionEndEvent extends EventBase {
  type: 'session_end';
  exit_code?: number;
  signal?: number;
  counts?: Record<string, number>;
}

export interface ExecEvent extends EventBase {
  type: 'exec';
  /** The file that actually runs (for a shebang script: the interpreter). */
  path: string;
  argv: string[];
  /** For shebang scripts: the script that was named in execve. */
  script?: string;
  /** Set when the image was run through the dynamic loader as a program. */
  via_loader?: boolean;
  /** Set when the image has no name in any filesystem (memfd, deleted file). */
  fileless?: boolean;
  cwd?: string;
}

export interface ExitEvent extends EventBase {
  type: 'exit';
  exit_code?: number;
  signal?: number;
}

export interface ConnectEvent extends EventBase {
  type: 'connect';
  proto: 'tcp' | 'udp' | 'unix' | 'other';
  family: 'inet' | 'inet6' | 'unix';
  daddr: string;
  dport: number;
  /** connect | sendmsg | revisit (a connection made earlier, judged again after attach or a new policy) */
  op?: string;
}

export interface DnsEvent extends EventBase {
  type: 'dns';
  name: string;
  answers: string[];
  ttl?: number;
}

export interface ToolCallEvent extends EventBase {
  type: 'tool_call';
  server: string;
  tool: string;
  arguments?: unknown;
  latency_ms?: number;
  is_error?: boolean;
  reason?: string;
}

export interface ViolationEvent extends EventBase {
  type: 'violation';
  what: string;
  detail?: string;
}

export interface LossEvent extends EventBase {
  type: 'loss';
  /** Where events were lost: a kernel hook name, 'spool', ... */
  where: string;
  count: number;
}

export interface PolicyEvent extends EventBase {
  type: 'policy';
  action: 'loaded' | 'rejected';
  detail?: string;
}

export type BridleEvent =
  | SessionStartEvent
  | SessionEndEvent
  | ExecEvent
  | ExitEvent
  | ConnectEvent
  | DnsEvent
  | ToolCallEvent
  | ViolationEvent
  | LossEvent
  | PolicyEvent;

/** Anything that takes events: the NDJSON writer, the spool, a test collector. */
export interface EventSink {
  emit(ev: BridleEvent): void;
  close?(): Promise<void>;
}
