// Byte offsets of the structs in bpf/include/bridle.h. test/kernel/layout.test.ts reads the BTF of the
// built objects and fails on any difference, so the decoder can never drift from the kernel side.

export const HDR = { size: 16, type: 0, flags: 2, len: 4, ktime: 8 } as const;

export const EV = { EXEC: 1, EXIT: 2, SESSION_END: 3, GUARD: 4 } as const;

export const VERDICT = { ALLOW: 0, DENY: 1, WOULD_DENY: 2 } as const;
export const RULE_KIND = { DEFAULT: 0, PATH: 1, DIR: 2, ARGV: 3, FILELESS: 4 } as const;

export const FLAG = {
  SCRIPT: 1 << 0,
  LOADER: 1 << 1,
  FILELESS: 1 << 2,
  SESSION_NEW: 1 << 3,
  ARGS_TRUNC: 1 << 4,
  VIA_LOADER: 1 << 5,
  LSM_DENIED: 1 << 6,
} as const;

export const TAG_MONITOR = 1;
/** bridle_policy_cfg.flags: the policy has credentials.files.deny rules. */
export const CFG_CRED_FILES = 1 << 1;
/** bridle_policy_cfg.flags: the policy has exec deny rules by path or directory. */
export const CFG_EXEC_DENY = 1 << 2;
/** bridle_policy_cfg.flags: the policy has exec deny dir: rules; it has credentials.files.deny directories. */
export const CFG_EXEC_DIR_DENY = 1 << 3;
export const CFG_CRED_DIRS = 1 << 4;
/** Rule id of `builtin.dir_depth` (BRIDLE_RULE_ID_DEEP): index 2 of every compiled rule table. */
export const RULE_ID_DEEP = 2;
/** Rule id of `builtin.argv_unseen` (BRIDLE_RULE_ID_ARGV_UNSEEN): index 3. */
export const RULE_ID_ARGV_UNSEEN = 3;
/** bridle_policy_cfg.flags: the policy has argv: deny rules. */
export const CFG_ARGV_DENY = 1 << 5;
/** Directories above a file that dir: rules look at (BRIDLE_DIR_DEPTH). */
export const DIR_DEPTH = 256;
/** bridle_ident_key.kind: by identity; by name in a directory (deny rules only). */
export const KEY_KIND = { EXEC: 0, CRED: 1, EXEC_NAME: 2, CRED_NAME: 3 } as const;
export const MARK_LOADER = 0x100;
export const HOOKS = ['exec', 'exit', 'fork', 'mmap', 'guard'] as const;

/** struct name → { size, field → offset }, as in bridle.h. */
export const LAYOUT = {
  bridle_hdr: { size: 16, fields: { type: 0, flags: 2, size: 4, ktime: 8 } },
  bridle_tag: { size: 24, fields: { session: 0, policy: 8, flags: 12, start: 16 } },
  bridle_proc: { size: 32, fields: { key: 0, parent_key: 8, parent_pid: 16, flags: 20, start: 24 } },
  bridle_session: { size: 16, fields: { live: 0, policy: 8, flags: 12 } },
  bridle_ident_key: { size: 24, fields: { policy: 0, kind: 4, dev: 8, ino: 16 } },
  bridle_argv_key: { size: 16, fields: { policy: 0, nargs: 4, hash: 8 } },
  bridle_rule: { size: 8, fields: { action: 0, rule_id: 4 } },
  bridle_policy_cfg: {
    size: 24,
    fields: { gen: 0, default_action: 4, fileless_action: 8, fileless_rule: 12, default_rule: 16, flags: 20 },
  },
  bridle_agent: { size: 48, fields: { agent_id: 0, policy: 4, nargv: 8, flags: 12, argv_hash: 16 } },
  bridle_exec_ev: {
    size: 2256,
    fields: {
      hdr: 0, session: 16, key: 24, parent_key: 32, dev: 40, ino: 48, pid: 56, tid: 60, ppid: 64,
      parent_pid: 68, uid: 72, gid: 76, policy: 80, flags: 84, verdict: 88, rule_kind: 92, rule_id: 96,
      agent_id: 100, filename_len: 104, interp_len: 106, args_len: 108, dname_len: 110, nlink: 112,
      gen: 116, path_len: 120, pad16: 122, pad32: 124, comm: 128, filename: 144, interp: 400, dname: 656, path: 720, args: 1232,
    },
  },
  bridle_exit_ev: { size: 48, fields: { hdr: 0, session: 16, key: 24, pid: 32, ppid: 36, exit_code: 40, pad: 44 } },
  bridle_session_end_ev: { size: 32, fields: { hdr: 0, session: 16, pid: 24, pad: 28 } },
  bridle_guard_ev: { size: 56, fields: { hdr: 0, session: 16, key: 24, pid: 32, what: 36, verdict: 40, target: 44, gen: 48, pad: 52 } },
  bridle_seed: { size: 40, fields: { pid: 0, ppid: 4, start: 8, uid: 16, pad: 20, comm: 24 } },
  bridle_fd_ident: { size: 24, fields: { fd: 0, generation: 4, dev: 8, ino: 16 } },
} as const;

const X = LAYOUT.bridle_exec_ev.fields;

export interface RawExec {
  type: 'exec';
  ktime: bigint;
  session: bigint;
  key: bigint;
  parentKey: bigint;
  dev: bigint;
  ino: bigint;
  pid: number;
  tid: number;
  ppid: number;
  parentPid: number;
  uid: number;
  gid: number;
  policy: number;
  flags: number;
  verdict: number;
  ruleKind: number;
  ruleId: number;
  agentId: number;
  nlink: number;
  /** generation of the policy that decided (names rule_id) */
  gen: number;
  comm: string;
  filename: string;
  interp: string;
  dname: string;
  /** The executed file's absolute path as the kernel resolved it ('' when it could not; '...' leads a cut one). */
  path: string;
  argv: string[];
}
export interface RawExit { type: 'exit'; ktime: bigint; session: bigint; key: bigint; pid: number; ppid: number; exitCode: number }
export interface RawSessionEnd { type: 'session_end'; ktime: bigint; session: bigint; pid: number }
export interface RawGuard { type: 'guard'; ktime: bigint; session: bigint; key: bigint; pid: number; what: number; verdict: number; target: number; gen: number }

/** enum bridle_guard → (name, why it is refused[, 'rule': its target is the deciding rule's id, not a pid]). */
export const GUARDS: Record<number, [string, string, 'rule'?]> = {
  1: ['bpf_syscall', 'a session process called bpf(2); sessions may not touch BPF maps or programs'],
  2: ['ptrace', 'a session process tried to ptrace a process outside its session (it could run code there untagged)'],
  3: ['process_vm_writev', 'a session process tried to write into the memory of a process outside its session'],
  4: ['pidfd_getfd', "a session process tried to take another process's file descriptors"],
  5: ['credential_file', 'a session process opened a file its policy keeps from it (credentials.files.deny)', 'rule'],
  7: ['process_vm_readv', 'a session process tried to read the memory of a process outside its session'],
  8: ['proc_environ', 'a session process opened the environment (/proc/<pid>/environ) of a process outside its session'],
  9: ['proc_mem', 'a session process opened the memory (/proc/<pid>/mem) of a process outside its session'],
  10: ['exec_mapping', 'a session process mapped code an exec rule denies (a library, LD_PRELOAD, dlopen, a fileless object)', 'rule'],
  11: ['script', 'a session process ran a #! script an exec rule denies (its interpreter is allowed; the script is not)', 'rule'],
  6: ['uring_fixed_open', 'a session process opened a file into an io_uring fixed slot, which bridle cannot check against credentials.files.deny'],
  14: ['shared_files', "a session process made a process that shares its descriptor table (clone(CLONE_FILES)), which could keep a file or socket the other is killed for"],
  15: ['untagged_child', 'a session process made a process when the tag table was full: it would have run outside every rule'],
  13: ['setversion', "a session process tried to set a file's generation (FS_IOC_SETVERSION), which bridle's identity rules are keyed by"],
  16: ['tty_inject', "a session process tried to type into its terminal's input (TIOCSTI, TIOCLINUX), which a shell outside the session would read and run"],
  17: ['perf_other', "a session process tried to open a perf event on a process outside its session, or on every process of a CPU or cgroup (its samples copy that process's registers and stack)"],
  18: ['fanotify_fd', 'a session process with credential file rules made an fanotify group whose events carry open descriptors, which no open call shows (only FAN_REPORT_FID or FAN_REPORT_DIR_FID groups are allowed)'],
  19: ['prlimit_other', 'a session process tried to change the resource limits of a process outside its session (RLIMIT_CORE lets it dump its memory and environment)'],
  20: ['core_signal', 'a session process sent a signal that dumps core (SIGQUIT, SIGSEGV, SIGABRT, …) to a process outside its session, a process group or every process: the core file holds that memory and environment'],
  21: ['script_unseen', 'a session process ran a #! script when the table of scripts awaiting their interpreter was full: it could not have been checked'],
  12: ['uring_unseen', 'a session process asked io_uring not to report an open or a connect (IOSQE_CQE_SKIP_SUCCESS), whose completion is what bridle checks'],
};
/** Guards whose target is the deciding rule's id (credential file, executable mapping, #! script). */
export const RULE_GUARDS: ReadonlySet<number> = new Set(Object.keys(GUARDS).map(Number).filter((k) => GUARDS[k]![2] === 'rule'));
export type RawRecord = RawExec | RawExit | RawSessionEnd | RawGuard;

function cstr(b: Buffer, off: number, len: number): string {
  return b.toString('utf8', off, off + len);
}

function cstrz(b: Buffer, off: number, max: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end < 0 || end > off + max ? off + max : end);
}

/** Decodes one ring-buffer record; returns undefined for a record of an unknown type or short length. */
export function decode(b: Buffer): RawRecord | undefined {
  if (b.length < HDR.size) return undefined;
  const type = b.readUInt16LE(HDR.type);
  const ktime = b.readBigUInt64LE(HDR.ktime);
  switch (type) {
    case EV.EXEC: {
      // the record ends after the argv bytes actually used (bpf/include/sensor.h: submit_exec)
      if (b.length < X.args) return undefined;
      const argsLen = Math.min(b.readUInt16LE(X.args_len), 1024, b.length - X.args);
      const args = b.subarray(X.args, X.args + argsLen);
      const argv = args.length ? args.toString('utf8').replace(/\0$/, '').split('\0') : [];
      return {
        type: 'exec',
        ktime,
        session: b.readBigUInt64LE(X.session),
        key: b.readBigUInt64LE(X.key),
        parentKey: b.readBigUInt64LE(X.parent_key),
        dev: b.readBigUInt64LE(X.dev),
        ino: b.readBigUInt64LE(X.ino),
        pid: b.readUInt32LE(X.pid),
        tid: b.readUInt32LE(X.tid),
        ppid: b.readUInt32LE(X.ppid),
        parentPid: b.readUInt32LE(X.parent_pid),
        uid: b.readUInt32LE(X.uid),
        gid: b.readUInt32LE(X.gid),
        policy: b.readUInt32LE(X.policy),
        flags: b.readUInt32LE(X.flags),
        verdict: b.readUInt32LE(X.verdict),
        ruleKind: b.readUInt32LE(X.rule_kind),
        ruleId: b.readUInt32LE(X.rule_id),
        agentId: b.readUInt32LE(X.agent_id),
        nlink: b.readUInt32LE(X.nlink),
        gen: b.readUInt32LE(X.gen),
        comm: cstrz(b, X.comm, 16),
        filename: cstr(b, X.filename, Math.min(b.readUInt16LE(X.filename_len), 255)),
        interp: cstr(b, X.interp, Math.min(b.readUInt16LE(X.interp_len), 255)),
        dname: cstr(b, X.dname, Math.min(b.readUInt16LE(X.dname_len), 63)),
        path: cstr(b, X.path, Math.min(b.readUInt16LE(X.path_len), 511)),
        argv,
      };
    }
    case EV.EXIT: {
      const f = LAYOUT.bridle_exit_ev.fields;
      if (b.length < LAYOUT.bridle_exit_ev.size) return undefined;
      return {
        type: 'exit',
        ktime,
        session: b.readBigUInt64LE(f.session),
        key: b.readBigUInt64LE(f.key),
        pid: b.readUInt32LE(f.pid),
        ppid: b.readUInt32LE(f.ppid),
        exitCode: b.readUInt32LE(f.exit_code),
      };
    }
    case EV.SESSION_END: {
      const f = LAYOUT.bridle_session_end_ev.fields;
      if (b.length < LAYOUT.bridle_session_end_ev.size) return undefined;
      return { type: 'session_end', ktime, session: b.readBigUInt64LE(f.session), pid: b.readUInt32LE(f.pid) };
    }
    case EV.GUARD: {
      const f = LAYOUT.bridle_guard_ev.fields;
      if (b.length < LAYOUT.bridle_guard_ev.size) return undefined;
      return {
        type: 'guard',
        ktime,
        session: b.readBigUInt64LE(f.session),
        key: b.readBigUInt64LE(f.key),
        pid: b.readUInt32LE(f.pid),
        what: b.readUInt32LE(f.what),
        verdict: b.readUInt32LE(f.verdict),
        target: b.readUInt32LE(f.target),
        gen: b.readUInt32LE(f.gen),
      };
    }
    default:
      return undefined;
  }
}

export interface SeedRecord { pid: number; ppid: number; start: bigint; uid: number; comm: string }

export function decodeSeeds(b: Buffer): SeedRecord[] {
  const f = LAYOUT.bridle_seed.fields;
  const out: SeedRecord[] = [];
  for (let off = 0; off + LAYOUT.bridle_seed.size <= b.length; off += LAYOUT.bridle_seed.size) {
    out.push({
      pid: b.readUInt32LE(off + f.pid),
      ppid: b.readUInt32LE(off + f.ppid),
      start: b.readBigUInt64LE(off + f.start),
      uid: b.readUInt32LE(off + f.uid),
      comm: cstrz(b, off + f.comm, 16),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Network sensor (bpf/include/bridle_net.h, bpf/net.bpf.c). Checked against the BTF of net.bpf.o by
// test/net/layout.test.ts; decoders live in src/kernel/net.ts.

export const NET_EV = { NET: 16, UNIX: 17 } as const;
export const NET_OP = { CONNECT: 1, SENDMSG: 2, UNIX: 3, SOCKET: 4, SOCKOPT: 5, REVISIT: 6 } as const;
export const NET_KIND = { DEFAULT: 0, CIDR: 1, HOST: 2, DNS_TCP: 3, DNS_BIND: 4, UNIX: 5, CONTROL: 6, UNIX_INODE: 7, RAW: 8 } as const;
export const NET_EVF = { MAPPED: 1, ANY: 2 } as const;
export const NET_UEVF = { ABSTRACT: 1, KILLED: 2 } as const;

export const NET_LAYOUT = {
  bridle_hdr: LAYOUT.bridle_hdr,
  bridle_tag: LAYOUT.bridle_tag,
  bridle_proc: LAYOUT.bridle_proc,
  bridle_rule: LAYOUT.bridle_rule,
  bridle_net_cfg: { size: 24, fields: { gen: 0, default_action: 4, default_rule: 8, flags: 12, unix_default: 16, pad: 20 } },
  bridle_net_conf: { size: 8, fields: { dns_port4: 0, dns_port6: 2, flags: 4 } },
  bridle_net_key: { size: 28, fields: { prefixlen: 0, gen: 4, family: 8, addr: 12 } },
  bridle_net_node: { size: 16, fields: { set: 0, parent: 4, rule: 8, pad: 12 } },
  bridle_port_key: { size: 12, fields: { prefixlen: 0, set: 4, proto: 8, port: 10 } },
  bridle_host_key: { size: 16, fields: { gen: 0, pad: 4, pattern: 8 } },
  bridle_dnsaddr_key: { size: 32, fields: { session: 0, family: 8, pad: 12, addr: 16 } },
  bridle_dnsaddr: { size: 40, fields: { expires: 0, pattern: 8 } },
  bridle_dns_client: {
    size: 56,
    fields: { session: 0, key: 8, ktime: 16, pid: 24, policy: 28, orig: 32, orig_port: 48, family: 50, pad: 52 },
  },
  bridle_unix_key: { size: 16, fields: { gen: 0, pad: 4, path: 8 } },
  bridle_unix_ino_key: { size: 24, fields: { gen: 0, pad: 4, dev: 8, ino: 16 } },
  bridle_net_recent: { size: 24, fields: { pid: 0, port: 4, family: 6, proto: 7, addr: 8 } },
  bridle_net_ev: {
    size: 80,
    fields: {
      hdr: 0, session: 16, key: 24, pid: 32, tid: 36, uid: 40, policy: 44, rule_id: 48, dport: 52, family: 54,
      proto: 55, op: 56, verdict: 57, rule_kind: 58, flags: 59, gen: 60, daddr: 64,
    },
  },
  bridle_unix_ev: {
    size: 176,
    fields: {
      hdr: 0, session: 16, key: 24, pid: 32, tid: 36, uid: 40, policy: 44, rule_id: 48, verdict: 52, rule_kind: 53,
      path_len: 54, path: 56, op: 164, flags: 165, pad: 166, gen: 168, pad2: 172,
    },
  },
} as const;
