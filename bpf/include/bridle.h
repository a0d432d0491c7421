/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct that crosses kernel <-> user lives here. Fixed-width types, natural alignment, explicit
 * padding, no bitfields: src/kernel/layout.ts mirrors these offsets and test/kernel/layout.test.ts
 * compares them with the BTF of the built objects, failing on any mismatch.
 */
#ifndef BRIDLE_H
#define BRIDLE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
#endif

#define BRIDLE_ARGS_MAX 1024 /* bytes of argv copied per exec (power of two) */
#define BRIDLE_NAME_MAX 256  /* filename / interpreter path as given to execve */
#define BRIDLE_DNAME_MAX 64  /* the executed file's own name in its directory */
#define BRIDLE_PATH_MAX 512  /* the executed file's absolute path as the kernel resolves it (power of two) */
#define BRIDLE_ARGV_RULE_MAX 8 /* argv prefix rules look at most this many words */
#define BRIDLE_AGENT_ARGV_MAX 4
/*
 * dir: rules look this many directories up. A file deeper than that, opened or run by a session whose
 * policy has deny dir: rules of that kind, is denied by the builtin rule BRIDLE_RULE_ID_DEEP: its unseen
 * ancestors could be the denied directory (a session can nest directories without limit).
 */
#define BRIDLE_DIR_DEPTH 256
#define BRIDLE_RULE_ID_DEEP 2 /* rule id of `builtin.dir_depth` (index 2 of every compiled rule table) */
/*
 * argv[0] is the caller's to choose (`exec -a`): one this long may have pushed the words argv: rules look
 * at past the BRIDLE_ARGS_MAX bytes copied. With the copy cut short, a policy with argv: deny rules denies
 * the exec by `builtin.argv_unseen` (rule id 3).
 */
#define BRIDLE_ARGV0_MAX 512
#define BRIDLE_RULE_ID_ARGV_UNSEEN 3
/* rule id of `builtin.bridle_files` (index 4): bridle's own files, denied to every session in every mode */
#define BRIDLE_RULE_ID_BRIDLE_FILES 4
#define BRIDLE_S_IFMT 00170000 /* an inode's type bits, and two of the types */
#define BRIDLE_S_IFREG 0100000
#define BRIDLE_S_IFDIR 0040000
#define BRIDLE_MNT_INTERNAL 0x4000 /* MNT_INTERNAL: a mount the kernel made for itself (pipefs, sockfs, the memfd mount) */

/* Event types (bridle_hdr.type). */
enum bridle_ev {
	BRIDLE_EV_EXEC = 1,
	BRIDLE_EV_EXIT = 2,
	BRIDLE_EV_SESSION_END = 3,
	BRIDLE_EV_GUARD = 4, /* a tagged process touched bridle itself (bpf syscall) */
};

/* Hooks, for the loss counters (index into the `lost` per-CPU array). */
enum bridle_hook {
	BRIDLE_HOOK_EXEC = 0,
	BRIDLE_HOOK_EXIT = 1,
	BRIDLE_HOOK_FORK = 2,
	BRIDLE_HOOK_MMAP = 3,
	BRIDLE_HOOK_GUARD = 4,
	BRIDLE_HOOK_MAX = 8,
};

enum bridle_verdict {
	BRIDLE_ALLOW = 0,
	BRIDLE_DENY = 1,
	BRIDLE_WOULD_DENY = 2,
};

/* How a verdict was reached (bridle_exec_ev.rule_kind). */
enum bridle_rule_kind {
	BRIDLE_RULE_DEFAULT = 0,
	BRIDLE_RULE_PATH = 1,
	BRIDLE_RULE_DIR = 2,
	BRIDLE_RULE_ARGV = 3,
	BRIDLE_RULE_FILELESS = 4,
};

/* bridle_exec_ev.flags */
#define BRIDLE_F_SCRIPT (1u << 0)      /* named file was a #! script; `interp` ran */
#define BRIDLE_F_LOADER (1u << 1)      /* the dynamic loader was run as a program; decided at its first exec mmap */
#define BRIDLE_F_FILELESS (1u << 2)    /* the image has no link in any filesystem (memfd, deleted, O_TMPFILE) */
#define BRIDLE_F_SESSION_NEW (1u << 3) /* this exec started a session (agents: match) */
#define BRIDLE_F_ARGS_TRUNC (1u << 4)
#define BRIDLE_F_VIA_LOADER (1u << 5)  /* event for the program a loader mapped, not an execve */
#define BRIDLE_F_LSM_DENIED (1u << 6)  /* refused with EPERM by the BPF-LSM hook: the exec never happened */

/* Session policy flags (bridle_tag.flags). */
#define BRIDLE_TAG_MONITOR (1u << 0)

/* Common header of every ring-buffer record. */
struct bridle_hdr {
	u16 type;
	u16 flags;
	u32 size;
	u64 ktime; /* bpf_ktime_get_boot_ns() */
};

/* A session tag, per process (key: tgid). `start` guards against pid reuse. */
struct bridle_tag {
	u64 session;
	u32 policy; /* compiled policy slot; rules are keyed by it */
	u32 flags;
	u64 start; /* task->group_leader->start_boottime of the tagged process */
};

/* Lineage, per process (key: tgid): the current image and the image that created it. */
struct bridle_proc {
	u64 key;        /* image start: fork time, then exec time after each exec */
	u64 parent_key; /* the creator's image key at fork */
	u32 parent_pid;
	u32 flags;      /* BRIDLE_F_LOADER while a loader-run program is still unmapped */
	u64 start;      /* task start_boottime, to detect a stale entry after pid reuse */
};

/* Per-session state in the kernel (key: session id). */
struct bridle_session {
	s64 live; /* processes of the session that have not exited */
	u32 policy;
	u32 flags;
};

/*
 * exec_ident / exec_dir / agent_idents key: a file by identity. dev is the kernel's s_dev
 * (MAJOR<<20 | MINOR) with the inode's i_generation in the upper 32 bits (ident_dev()), so a rule for a
 * deleted file does not apply to a later file that reuses its inode number. Userspace learns generations
 * from bridle_fd_idents (struct bridle_fd_ident).
 */
struct bridle_ident_key {
	u32 policy; /* rule generation (bridle_policy_cfg.gen); 0 for agent identities */
	u32 kind;   /* enum bridle_key_kind: which rules the entry belongs to */
	u64 dev;
	u64 ino;
};

/* exec_ident / exec_dir hold two kinds of identity rules, told apart by bridle_ident_key.kind. */
enum bridle_key_kind {
	BRIDLE_KEY_EXEC = 0, /* exec: path / dir rules, agent identities */
	BRIDLE_KEY_CRED = 1, /* credentials.files.deny: files (and everything beneath directories) a session may not open */
	/*
	 * Deny rules on a file by its name in its directory (exec_ident only): dev = the directory's s_dev,
	 * with the low 32 bits of the FNV-1a 64 of the name's first 63 bytes above it; ino = the directory's
	 * inode. A file put at a denied path later (an upgrade, a credential file rewritten by rename: a new
	 * inode) is denied at once. A hash collision can only deny more.
	 */
	BRIDLE_KEY_EXEC_NAME = 2,
	BRIDLE_KEY_CRED_NAME = 3,
};

/* exec_argv key: FNV-1a 64 of "basename(argv0)\0argv1\0...argv[n-1]". */
struct bridle_argv_key {
	u32 policy; /* rule generation */
	u32 nargs;
	u64 hash;
};

/* Verdict of one rule table entry. */
struct bridle_rule {
	u32 action;  /* BRIDLE_ALLOW / BRIDLE_DENY; ident entries may also carry BRIDLE_RULE_LOADER_MARK */
	u32 rule_id; /* index into the compiled policy's rule table (userspace names it) */
};

#define BRIDLE_MARK_LOADER 0x100 /* exec_ident action bit: this file is a dynamic loader */

/*
 * Per-policy settings (key: policy id, the number tags carry). Rules are keyed by `gen`, so a new policy
 * is written beside the old one under a new generation and takes effect in one map update of this
 * entry: no moment where neither policy holds.
 */
struct bridle_policy_cfg {
	u32 gen;
	u32 default_action;
	u32 fileless_action;
	u32 fileless_rule;
	u32 default_rule;
	u32 flags; /* BRIDLE_TAG_MONITOR, BRIDLE_CFG_* */
};

/* bridle_policy_cfg.flags beyond BRIDLE_TAG_MONITOR: the policy has credentials.files.deny rules; */
#define BRIDLE_CFG_CRED_FILES (1u << 1)
/* it has exec deny rules by path or directory (what executable mappings and scripts are checked against); */
#define BRIDLE_CFG_EXEC_DENY (1u << 2)
/* it has exec deny dir: rules; it has credentials.files.deny directories (BRIDLE_DIR_DEPTH applies). */
#define BRIDLE_CFG_EXEC_DIR_DENY (1u << 3)
#define BRIDLE_CFG_CRED_DIRS (1u << 4)
/* it has argv: deny rules. */
#define BRIDLE_CFG_ARGV_DENY (1u << 5)

/* Agents that start sessions by themselves (key: FNV-1a 64 of the exe basename, or ident). */
struct bridle_agent {
	u32 agent_id;
	u32 policy;
	u32 nargv; /* how many of argv_hash must appear in argv */
	u32 flags;
	u64 argv_hash[BRIDLE_AGENT_ARGV_MAX];
};

struct bridle_exec_ev {
	struct bridle_hdr hdr;
	u64 session;
	u64 key;
	u64 parent_key;
	u64 dev;
	u64 ino;
	u32 pid;
	u32 tid;
	u32 ppid;        /* real parent's tgid now */
	u32 parent_pid;  /* the creator's tgid (lineage) */
	u32 uid;
	u32 gid;
	u32 policy;
	u32 flags;
	u32 verdict;
	u32 rule_kind;
	u32 rule_id;
	u32 agent_id;
	u16 filename_len;
	u16 interp_len;
	u16 args_len;
	u16 dname_len;
	u32 nlink;
	u32 gen;         /* generation of the policy that decided: its rule table names rule_id */
	u16 path_len;    /* bytes of path; 0: none could be built */
	u16 pad16;
	u32 pad32;
	char comm[16];
	char filename[BRIDLE_NAME_MAX];
	char interp[BRIDLE_NAME_MAX];
	char dname[BRIDLE_DNAME_MAX];
	char path[BRIDLE_PATH_MAX]; /* the executed file (for a #! script, its interpreter), whatever name ran it */
	char args[BRIDLE_ARGS_MAX];
};

struct bridle_exit_ev {
	struct bridle_hdr hdr;
	u64 session;
	u64 key;
	u32 pid;
	u32 ppid;
	u32 exit_code; /* task->exit_code of the last thread: (status << 8) | signal */
	u32 pad;
};

struct bridle_session_end_ev {
	struct bridle_hdr hdr;
	u64 session;
	u32 pid; /* the last process to exit */
	u32 pad;
};

/* What a guard event is about (bridle_guard_ev.what). */
enum bridle_guard {
	BRIDLE_GUARD_BPF = 1,         /* bpf(2): could rewrite tags or policy maps */
	BRIDLE_GUARD_PTRACE = 2,      /* ptrace of a process outside the session: would run code untagged */
	BRIDLE_GUARD_VM_WRITE = 3,    /* process_vm_writev into a process outside the session */
	BRIDLE_GUARD_PIDFD_GETFD = 4, /* pidfd_getfd: taking another process's files */
	BRIDLE_GUARD_CRED_FILE = 5,   /* opened a file credentials.files.deny names (target: rule id) */
	BRIDLE_GUARD_URING_FIXED_OPEN = 6, /* io_uring open into a fixed file slot, which cannot be checked (sessions with credential rules) */
	BRIDLE_GUARD_VM_READ = 7,     /* process_vm_readv of a process outside the session: its secrets, its environment */
	BRIDLE_GUARD_PROC_ENVIRON = 8, /* opened /proc/<pid>/environ of a process outside the session */
	BRIDLE_GUARD_PROC_MEM = 9,    /* opened /proc/<pid>/mem of a process outside the session */
	BRIDLE_GUARD_EXEC_MAP = 10,   /* mapped a file's code a deny rule (or exec.fileless) names (target: rule id) */
	BRIDLE_GUARD_SCRIPT = 11,     /* the interpreter of a #! script opened the script, which a deny rule names (target: rule id) */
	BRIDLE_GUARD_URING_UNSEEN = 12, /* an io_uring open or connect asked to post no completion: the checks run on completions */
	BRIDLE_GUARD_SETVERSION = 13, /* set an inode's generation, which identity rules are keyed by */
	BRIDLE_GUARD_SHARED_FILES = 14, /* a new process sharing its creator's descriptor table (target: the creator) */
	BRIDLE_GUARD_UNTAGGED_CHILD = 15, /* a new process the full tag table had no room for (target: the creator) */
	BRIDLE_GUARD_TTY_INJECT = 16, /* typed into a terminal's input (TIOCSTI, TIOCLINUX): what a shell outside the session then runs */
	BRIDLE_GUARD_PERF_OTHER = 17, /* perf_event_open on a process outside the session, or on every process of a CPU or cgroup (target: the process) */
	BRIDLE_GUARD_FANOTIFY_FD = 18, /* fanotify_init for events that carry open descriptors, which no open system call shows (sessions with credential rules) */
	BRIDLE_GUARD_PRLIMIT_OTHER = 19, /* prlimit64 changing a limit of a process outside the session (its core dump size) */
	BRIDLE_GUARD_CORE_SIGNAL = 20, /* a signal that dumps core sent to a process outside the session, or to a process group or everyone */
	BRIDLE_GUARD_SCRIPT_UNSEEN = 21, /* a #! script whose wait the full script_wait table had no room for */
};

struct bridle_guard_ev {
	struct bridle_hdr hdr;
	u64 session;
	u64 key;
	u32 pid;
	u32 what; /* enum bridle_guard */
	u32 verdict;
	u32 target; /* the other process, when there is one; the rule id for CRED_FILE, EXEC_MAP and SCRIPT */
	u32 gen;    /* rule generation that decided, for the guards that name a rule */
	u32 pad;
};

/*
 * One record per open file of the process the iterator was made for (bridle_fd_idents). A file on an
 * overlay is followed by records of the files beneath it, with BRIDLE_FD_BENEATH set in fd.
 */
#define BRIDLE_FD_BENEATH 0x80000000u
struct bridle_fd_ident {
	u32 fd;
	u32 generation; /* i_generation */
	u64 dev;        /* s_dev */
	u64 ino;
};

/* One record per process from the task iterator (attach, seeding). */
struct bridle_seed {
	u32 pid;
	u32 ppid;
	u64 start;
	u32 uid;
	u32 pad;
	char comm[16];
};

#ifdef __BPF__
_Static_assert(sizeof(struct bridle_hdr) == 16, "hdr");
_Static_assert(sizeof(struct bridle_tag) == 24, "tag");
_Static_assert(sizeof(struct bridle_proc) == 32, "proc");
_Static_assert(sizeof(struct bridle_ident_key) == 24, "ident key");
_Static_assert(sizeof(struct bridle_argv_key) == 16, "argv key");
_Static_assert(sizeof(struct bridle_exec_ev) % 8 == 0, "exec ev");
#endif

#endif
