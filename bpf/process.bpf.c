// SPDX-License-Identifier: GPL-2.0-only
/*
 * Process sensor: sessions as tagged process trees, lineage keys, and exec decided in the kernel.
 *
 * Hooks: tp_btf sched_process_fork (tag inheritance, lineage), sched_process_exec (decision, events,
 * agent auto-sessions), sched_process_exit (exit events, session refcount); the syscall tracepoints for
 * mmap, mprotect and pkey_mprotect (executable mappings, programs run through the dynamic loader), for
 * the exits of the open calls and tp_btf io_uring_complete (credential files, #! scripts, /proc peeks),
 * and for bpf, ptrace, process_vm_readv, perf_event_open, fanotify_init, prlimit64 and the signal calls (guards).
 * This kernel refuses BPF trampolines, so a denied image is killed with SIGKILL at
 * sched_process_exec: the signal is pending before the new image's first user instruction.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
char LICENSE[] SEC("license") = "GPL";

#include "sensor.h"

/*
 * #! scripts: the exec is decided on the interpreter (bprm->file), and the script's own file is gone by
 * then. The interpreter reads the script by opening it: a file it opens under the path execve was given
 * is the script, and ends the wait; any file it opens under the script's name (the file's own name, or
 * the last part of the path it was opened under) may be, and is decided too, without ending the wait (so
 * a script named like a file opened before it, its C library, is still caught). Each is decided by the
 * exec deny rules (and exec.fileless) before it is read. Key: tgid.
 *
 * A plain hash, as large as the tag table: an entry is only ever made for a tagged process and goes with
 * it at exit, so the table fills only if the tag table was made larger. An LRU table would push out a
 * pending wait, and the script it waits for would then run unchecked; a wait that finds no room kills
 * the process instead (guard script_unseen), when its policy has rules a script could meet.
 */
struct script_wait_v {
	u64 name; /* FNV-1a of the first 63 bytes of the script's base name */
	u64 path; /* FNV-1a of the path given to execve (its first BRIDLE_NAME_MAX - 1 bytes), keyed by path_key */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct script_wait_v);
} script_wait SEC(".maps");

#define SCRIPT_NAME_MAX (BRIDLE_DNAME_MAX - 1) /* as name_fnv hashes a file's name */

extern int bpf_send_signal_task(struct task_struct *task, int sig, enum pid_type type, u64 value) __ksym __weak;

/* Could a #! script be denied to this session: its policy has exec deny rules, or denies fileless code. */
static __always_inline bool script_deniable(struct bridle_tag *tag)
{
	struct bridle_policy_cfg *cfg = tag_policy(tag);
	return cfg && ((cfg->flags & BRIDLE_CFG_EXEC_DENY) || cfg->fileless_action == BRIDLE_DENY);
}

static __always_inline void guard_report(struct bridle_tag *tag, u32 tgid, u64 key, u32 what, u32 verdict, u32 target, u32 gen);

/*
 * A session's new process (`child`, tgid ctgid, image key `key`, made by `creator`) that must not run:
 * killed before its first instruction (enforce mode) and reported. The kfunc that signals a task other
 * than the caller exists since Linux 6.13; before, this is only reported (would_deny).
 */
static __always_inline void refuse_child(struct bridle_tag *tag, struct task_struct *child, u32 ctgid, u64 key, u32 what, u32 creator)
{
	u32 verdict = (tag->flags & BRIDLE_TAG_MONITOR) || !bpf_send_signal_task ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
	if (verdict == BRIDLE_DENY)
		bpf_send_signal_task(child, SIGKILL, PIDTYPE_TGID, 0);
	guard_report(tag, ctgid, key, what, verdict, creator, 0);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(bridle_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = BPF_CORE_READ(parent, tgid);
	u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ptgid == ctgid)
		return 0; /* a new thread: same process, same tag */

	u64 cstart = BPF_CORE_READ(child, start_boottime);
	struct bridle_proc np = {
		.key = cstart,
		.parent_key = proc_key(ptgid, parent),
		.parent_pid = ptgid,
		.start = cstart,
	};
	bpf_map_update_elem(&procs, &ctgid, &np, BPF_ANY);

	struct bridle_tag *tag = tag_of(ptgid, parent);
	if (!tag)
		return 0;
	struct bridle_tag nt = *tag;
	nt.start = cstart;
	if (bpf_map_update_elem(&tags, &ctgid, &nt, BPF_ANY)) {
		/* the tag table is full: the child would run outside every rule */
		refuse_child(&nt, child, ctgid, cstart, BRIDLE_GUARD_UNTAGGED_CHILD, ptgid);
		return 0;
	}
	session_ref(nt.session, 1, nt.policy, nt.flags);
	/*
	 * A new process sharing its creator's descriptor table (clone(CLONE_FILES) without CLONE_THREAD):
	 * killing whichever of the two opens a denied file (or reaches a denied socket) would leave the
	 * descriptor to the other.
	 */
	if (BPF_CORE_READ(child, files) == BPF_CORE_READ(parent, files))
		refuse_child(&nt, child, ctgid, cstart, BRIDLE_GUARD_SHARED_FILES, ptgid);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(bridle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 tgid = BPF_CORE_READ(task, tgid);
	u64 now = bpf_ktime_get_boot_ns();
	struct bridle_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	u64 start = task_start(task);
	struct bridle_proc np = { .key = now, .start = start };
	if (p && p->start == start) {
		np.parent_key = p->parent_key;
		np.parent_pid = p->parent_pid;
	} else {
		struct task_struct *rp = BPF_CORE_READ(task, real_parent);
		np.parent_pid = BPF_CORE_READ(rp, tgid);
		np.parent_key = proc_key(np.parent_pid, rp);
	}

	struct bridle_tag *tag = tag_of(tgid, task);
	struct file *file = BPF_CORE_READ(bprm, file);
	u32 exempted = bpf_map_lookup_elem(&exempt, &tgid) != NULL;

	/* Untagged and exempt (bridle itself): keep the lineage entry, emit nothing. */
	if (!tag && exempted) {
		bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
		return 0;
	}
	struct bridle_exec_ev *ev = exec_begin(0, BPF_CORE_READ(bprm, filename), file);
	if (!ev)
		return 0;

	struct bridle_tag nt;
	if (!tag) {
		/* Zero-touch sessions: an untagged process exec'ing an agent binary becomes a session root. */
		ev->args_len = 0;
		struct bridle_agent *a = agent_match(ev, task, file);
		if (!a) {
			bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
			return 0;
		}
		struct bridle_policy_cfg *cfg = bpf_map_lookup_elem(&policies, &a->policy);
		nt.session = session_base + __sync_fetch_and_add(&session_seq, 1);
		nt.policy = a->policy;
		nt.flags = cfg ? (cfg->flags & BRIDLE_TAG_MONITOR) : 0;
		nt.start = start;
		bpf_map_update_elem(&tags, &tgid, &nt, BPF_ANY);
		session_ref(nt.session, 1, nt.policy, nt.flags);
		ev->flags |= BRIDLE_F_SESSION_NEW;
		ev->agent_id = a->agent_id;
		tag = &nt;
		if (!ev->args_len)
			fill_args(ev, task);
	} else {
		fill_args(ev, task);
	}
	exec_path(ev, file);

	exec_who(ev, task, tag, now, now, np.parent_key, np.parent_pid);

	const char *interp = BPF_CORE_READ(bprm, interp);
	const char *fname = BPF_CORE_READ(bprm, filename);
	/*
	 * A pending script stays pending through later execs of the same process: `#!/usr/bin/env sh` runs
	 * env, which execs sh, which opens the script.
	 */
	if (interp != fname) {
		/* #! script: bprm->file is the interpreter that will run; the event names both */
		long n = bpf_probe_read_kernel_str(ev->interp, sizeof(ev->interp), interp);
		ev->interp_len = n > 0 ? n - 1 : 0;
		ev->flags |= BRIDLE_F_SCRIPT;
		struct name_walk nw = { .h = FNV_OFF, .full = FNV_OFF ^ path_key, .len = ev->filename_len, .max = SCRIPT_NAME_MAX };
		bpf_loop(BRIDLE_NAME_MAX, basename_step, &nw, 0);
		struct script_wait_v w = { .name = nw.h, .path = nw.full };
		if (bpf_map_update_elem(&script_wait, &tgid, &w, BPF_ANY) && script_deniable(tag)) {
			/* no room to wait for the script: it would be read unchecked (fail closed) */
			u32 verdict = (tag->flags & BRIDLE_TAG_MONITOR) ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
			if (verdict == BRIDLE_DENY)
				bpf_send_signal(SIGKILL);
			guard_report(tag, tgid, now, BRIDLE_GUARD_SCRIPT_UNSEEN, verdict, 0, 0);
		}
	}

	struct decision d;
	decide(&d, tag->policy, file, ev);
	if (d.verdict == BRIDLE_ALLOW && d.loader) {
		/* The dynamic loader run as a program: the program it maps next is decided like an exec. */
		np.flags |= BRIDLE_F_LOADER;
		ev->flags |= BRIDLE_F_LOADER;
	}
	if (exec_verdict(ev, &d, tag))
		bpf_send_signal(SIGKILL);

	bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
	submit_exec(ev);
	return 0;
}

/* The file behind descriptor `fd` of `task`, or NULL. */
static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (u64)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* The caller's process, task and tag (NULL when it is in no session). */
static __always_inline struct bridle_tag *current_tag(u32 *tgid, struct task_struct **task)
{
	*tgid = bpf_get_current_pid_tgid() >> 32;
	*task = (struct task_struct *)bpf_get_current_task_btf();
	return tag_of(*tgid, *task);
}

/* A guard event: process tgid (image `key`) of `tag`'s session did `what`; target and gen as the guard says. */
static __always_inline void guard_report(struct bridle_tag *tag, u32 tgid, u64 key, u32 what, u32 verdict, u32 target, u32 gen)
{
	struct bridle_guard_ev *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_loss(BRIDLE_HOOK_GUARD);
		return;
	}
	hdr_fill(&ev->hdr, BRIDLE_EV_GUARD, sizeof(*ev));
	ev->session = tag->session;
	ev->key = key;
	ev->pid = tgid;
	ev->what = what;
	ev->verdict = verdict;
	ev->target = target;
	ev->gen = gen;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, rb_flags(true));
}

/* Reports (and in enforce mode kills) a session process for a guarded act; target and gen as the guard says. */
static __always_inline int guard_refuse(struct task_struct *task, u32 tgid, struct bridle_tag *tag, u32 what, u32 target, u32 gen)
{
	u32 verdict = (tag->flags & BRIDLE_TAG_MONITOR) ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
	if (verdict == BRIDLE_DENY)
		bpf_send_signal(SIGKILL);
	guard_report(tag, tgid, proc_key(tgid, task), what, verdict, target, gen);
	return 0;
}

/* denied_by_rule() for one identity of the file: its inode, its name in its directory, its directories. */
static __always_inline bool denied_as(struct decision *d, struct bridle_policy_cfg *cfg, u32 kind, struct file *file)
{
	u32 gen = cfg->gen;
	bool cred = kind == BRIDLE_KEY_CRED;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (consider(d, ident_rule(&exec_ident, gen, kind, ident_dev(inode), BPF_CORE_READ(inode, i_ino)), BRIDLE_RULE_PATH))
		return true;
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	if (consider(d, name_rule(gen, cred ? BRIDLE_KEY_CRED_NAME : BRIDLE_KEY_EXEC_NAME, dentry, dname_hash(dentry)), BRIDLE_RULE_PATH))
		return true;
	return decide_dirs(d, gen, kind, file, cfg->flags & (cred ? BRIDLE_CFG_CRED_DIRS : BRIDLE_CFG_EXEC_DIR_DENY));
}

/*
 * Does a deny rule of `kind` (BRIDLE_KEY_EXEC or BRIDLE_KEY_CRED) name this file: by identity, by its name
 * in its directory, or by a directory above it? Through an overlay, both the overlay's file (what a rule
 * naming a path on the overlay holds) and the file beneath it (what a rule naming the layer's path holds)
 * are looked at, as in decide(). Allow rules do not matter to the callers (credential files and
 * executable code are refused by deny rules only).
 */
static __always_inline bool denied_by_rule(struct decision *d, struct bridle_policy_cfg *cfg, u32 kind, struct file *file)
{
	*d = (struct decision){ .verdict = BRIDLE_ALLOW };
	struct file *real = real_file(file);
	if (denied_as(d, cfg, kind, file))
		return true;
	return real != file && denied_as(d, cfg, kind, real);
}

/*
 * Code a session process maps executable (a shared library, LD_PRELOAD, dlopen, ctypes) is decided by the
 * exec deny rules, by identity and directory, and by exec.fileless; allow rules and the default decide
 * programs only (libraries come from everywhere a program's own do). Decided at mmap(PROT_EXEC) and at
 * mprotect(PROT_EXEC) of a file's mapping; a denied mapping kills the process before the call returns,
 * so none of that code runs.
 */
static __always_inline int exec_map(struct task_struct *task, u32 tgid, struct bridle_tag *tag, struct bridle_policy_cfg *cfg,
				    struct file *file, bool shared, u32 what)
{
	if (!cfg)
		return 0;
	u32 gen = cfg->gen;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct decision d;
	if (BPF_CORE_READ(inode, __i_nlink) == 0) {
		/*
		 * A loader maps an object's segments private. A shared executable view of a memfd is how JITs
		 * keep code write-xor-execute (.NET's double mapping), not a fileless program.
		 */
		if (cfg->fileless_action != BRIDLE_DENY || shared)
			return 0;
		d.rule_id = cfg->fileless_rule;
	} else if (!(cfg->flags & BRIDLE_CFG_EXEC_DENY) || !denied_by_rule(&d, cfg, BRIDLE_KEY_EXEC, file)) {
		return 0;
	}
	return guard_refuse(task, tgid, tag, what, d.rule_id, gen);
}

/*
 * Programs run through the dynamic loader (`ld.so /usr/bin/x`): the kernel only ever sees ld.so exec.
 * ld.so then maps the program with PROT_EXEC from an fd; that file (a kernel object, not a user path) is
 * decided like an exec, once, for processes whose exec was the loader.
 */
SEC("tracepoint/syscalls/sys_enter_mmap")
int bridle_mmap(struct trace_event_raw_sys_enter *ctx)
{
	if (!(ctx->args[2] & PROT_EXEC))
		return 0;
	long fd = (long)ctx->args[4];
	if (fd < 0)
		return 0;
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag) /* the loader mark is only ever set on tagged processes */
		return 0;
	struct bridle_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	bool loader = p && (p->flags & BRIDLE_F_LOADER);
	if (loader)
		p->flags &= ~BRIDLE_F_LOADER;
	struct file *file = fd_file(task, fd);
	if (!file)
		return 0;
	if (!loader) /* an ordinary executable mapping: a library, LD_PRELOAD, dlopen */
		return exec_map(task, tgid, tag, tag_policy(tag), file, ctx->args[3] & MAP_SHARED, BRIDLE_GUARD_EXEC_MAP);

	/* the mapped file has no name here: its dentry name, and userspace matches it against the argv */
	struct bridle_exec_ev *ev = exec_begin(BRIDLE_F_VIA_LOADER, NULL, file);
	if (!ev)
		return 0;
	fill_args(ev, task);
	exec_path(ev, file);
	exec_who(ev, task, tag, bpf_ktime_get_boot_ns(), p->key, p->parent_key, p->parent_pid);

	/* argv: rules on the program's own argv, past ld.so's argv[0] and options (decide_argv) */
	struct decision d;
	decide_as(&d, tag->policy, file, ev, true);
	if (exec_verdict(ev, &d, tag))
		bpf_send_signal(SIGKILL);
	submit_exec(ev);
	return 0;
}

/*
 * Guards: syscalls by which a session process could leave its session or rewrite bridle's state.
 * The caller is killed before the syscall returns (monitor mode only reports).
 */

/* Acting on a process of the same session (itself included) is that session's own business. */
static __always_inline bool same_session(u32 tgid, struct bridle_tag *tag, u32 target)
{
	if (target == tgid)
		return true;
	struct bridle_tag *other = bpf_map_lookup_elem(&tags, &target);
	return other && other->session == tag->session;
}

extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

/*
 * The process a system call's pid argument names, as a global tgid (what `tags` is keyed by); 0 when
 * it cannot be told. The argument is a pid of the caller's pid namespace, and may be a thread's: inside a
 * container, a local pid equal to the global pid of one of the session's own processes would otherwise
 * pass for it. Without bpf_task_from_vpid (Linux 6.13+) only the initial namespace, where the two agree,
 * can be told.
 */
static __always_inline u32 target_tgid(struct task_struct *task, u32 vpid, bool *gone)
{
	if (bpf_task_from_vpid && bpf_task_release) {
		struct task_struct *t = bpf_task_from_vpid((s32)vpid);
		if (!t) {
			*gone = true; /* no such process: the call reaches nothing (ESRCH) */
			return 0;
		}
		u32 tgid = t->tgid;
		/*
		 * one that has exited (a zombie: its tag went at exit) can be neither signalled nor read; a
		 * leader that exited before its threads is not the process exiting
		 */
		*gone = t->exit_state != 0 && BPF_CORE_READ(t, signal, live.counter) == 0;
		bpf_task_release(t);
		return tgid;
	}
	return BPF_CORE_READ(task, thread_pid, level) == 0 ? vpid : 0;
}

static __always_inline int guard(u32 what, u32 target)
{
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	if (target) {
		bool gone = false;
		u32 g = target_tgid(task, target, &gone);
		if (gone || (g && same_session(tgid, tag, g)))
			return 0;
		if (g)
			target = g;
	}
	return guard_refuse(task, tgid, tag, what, target, 0);
}

#define PROC_SUPER_MAGIC 0x9fa0

/*
 * /proc/<pid>/environ and /proc/<pid>/mem of a process outside the session: its environment holds the
 * credentials `credentials.env.allow` kept out of the session, its memory everything else (and writing
 * it runs code there, untagged). Opening them is refused like ptrace. Returns the guard, or 0.
 */
static __always_inline u32 proc_peek(struct file *file, struct inode *inode, u32 tgid, struct bridle_tag *tag, u32 *target)
{
	if (BPF_CORE_READ(inode, i_sb, s_magic) != PROC_SUPER_MAGIC)
		return 0;
	/* the file's name as one little-endian word: "environ" and "mem" with their NUL fit in 8 bytes */
	u64 name = 0;
	bpf_probe_read_kernel_str(&name, sizeof(name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
	u32 what;
	if (name == 0x006e6f7269766e65ULL) /* "environ" */
		what = BRIDLE_GUARD_PROC_ENVIRON;
	else if (name == 0x6d656dULL) /* "mem" */
		what = BRIDLE_GUARD_PROC_MEM;
	else
		return 0;
	/* the process the file is about: its struct pid, then the task that has it, then that task's process */
	struct proc_inode *pi = container_of(inode, struct proc_inode, vfs_inode);
	struct hlist_node *first = BPF_CORE_READ(pi, pid, tasks[PIDTYPE_PID].first);
	if (!first)
		return 0; /* the process is gone: the open reads nothing */
	struct task_struct *t = container_of(first, struct task_struct, pid_links[PIDTYPE_PID]);
	*target = BPF_CORE_READ(t, tgid);
	return same_session(tgid, tag, *target) ? 0 : what;
}

/*
 * The path the current system call was given (its argument `arg`, in user memory), hashed as the path
 * given to execve is: whole and its last part. False when there is none. For the #! script wait: an
 * interpreter opens the path it was handed, and behind a symlink its last part is not the file's name.
 */
static __always_inline bool given_path(int arg, struct name_walk *nw)
{
	if (arg < 0)
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	const char *upath = (const char *)(arg == 0 ? PT_REGS_PARM1_CORE_SYSCALL(regs) : PT_REGS_PARM2_CORE_SYSCALL(regs));
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || !upath)
		return false;
	long n = bpf_probe_read_user_str(ev->filename, sizeof(ev->filename), upath);
	if (n <= 1)
		return false;
	nw->h = FNV_OFF;
	nw->full = FNV_OFF ^ path_key;
	nw->len = n - 1;
	nw->n = 0;
	nw->max = SCRIPT_NAME_MAX;
	bpf_loop(BRIDLE_NAME_MAX, basename_step, nw, 0);
	return true;
}

/*
 * A new descriptor of a session process: /proc peeks at other processes, the #! script its interpreter
 * waits to read (by the file's name, or by the name it was opened under), and credentials.files.deny. A credential file the policy keeps from the session (by
 * identity, so hard links, symlinks, relative and /proc/<pid>/root paths are the same file; or anything
 * beneath a denied directory) kills the process before open() returns: it never holds the descriptor in
 * user space. ret: what the open returned (a descriptor); path_arg: which argument of the system call is
 * the path (-1: none, or not a system call).
 */
static __always_inline int opened(long ret, int path_arg)
{
	if (ret < 0)
		return 0;
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	struct bridle_policy_cfg *cfg = tag_policy(tag);
	bool cred = cfg && (cfg->flags & BRIDLE_CFG_CRED_FILES);
	struct file *file = fd_file(task, ret);
	if (!file)
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	u32 target = 0;
	u32 peek = proc_peek(file, inode, tgid, tag, &target);
	if (peek)
		return guard_refuse(task, tgid, tag, peek, target, 0);
	/* A credential file first: a file of the awaited script's name is still a file the session may not read. */
	struct decision d;
	if (cred && denied_by_rule(&d, cfg, BRIDLE_KEY_CRED, file)) {
		if (d.rule_id == BRIDLE_RULE_ID_BRIDLE_FILES) {
			/*
			 * bridle's own files (its key, its spool): self-protection is no policy decision, monitor
			 * mode included. Its directories may be listed (`find /` walks through them): their files
			 * are what is kept.
			 */
			if ((BPF_CORE_READ(inode, i_mode) & BRIDLE_S_IFMT) == BRIDLE_S_IFDIR)
				return 0;
			bpf_send_signal(SIGKILL);
			guard_report(tag, tgid, proc_key(tgid, task), BRIDLE_GUARD_CRED_FILE, BRIDLE_DENY, d.rule_id, cfg->gen);
			return 0;
		}
		return guard_refuse(task, tgid, tag, BRIDLE_GUARD_CRED_FILE, d.rule_id, cfg->gen);
	}
	struct script_wait_v *w = bpf_map_lookup_elem(&script_wait, &tgid);
	if (!w)
		return 0;
	u64 name = w->name, path = w->path;
	struct name_walk given = {};
	bool have = given_path(path_arg, &given);
	if (have && given.full == path) {
		/* the path execve was given: the script itself */
		bpf_map_delete_elem(&script_wait, &tgid);
		return exec_map(task, tgid, tag, cfg, file, false, BRIDLE_GUARD_SCRIPT);
	}
	if (dname_hash(BPF_CORE_READ(file, f_path.dentry)) == name || (have && given.h == name))
		return exec_map(task, tgid, tag, cfg, file, false, BRIDLE_GUARD_SCRIPT);
	return 0;
}

struct vma_seen {
	struct file *file;
	bool shared;
};

static long vma_file(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct vma_seen *seen = data;
	seen->file = BPF_CORE_READ(vma, vm_file);
	seen->shared = BPF_CORE_READ(vma, vm_flags) & VM_SHARED;
	return 0;
}

/* mprotect(PROT_EXEC) (and pkey_mprotect) on a file's mapping: the same decision as mmap(PROT_EXEC). */
static __always_inline int exec_protect(u64 addr, u64 prot)
{
	if (!(prot & PROT_EXEC))
		return 0;
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	struct vma_seen seen = {};
	bpf_find_vma(task, addr, vma_file, &seen, 0);
	return seen.file ? exec_map(task, tgid, tag, tag_policy(tag), seen.file, seen.shared, BRIDLE_GUARD_EXEC_MAP) : 0; /* anonymous memory (a JIT) is not a file's code */
}

SEC("tracepoint/syscalls/sys_enter_mprotect")
int bridle_mprotect(struct trace_event_raw_sys_enter *ctx)
{
	return exec_protect(ctx->args[0], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_pkey_mprotect")
int bridle_pkey_mprotect(struct trace_event_raw_sys_enter *ctx)
{
	return exec_protect(ctx->args[0], ctx->args[2]);
}

/* One program per system call that returns a new descriptor for a named file (credentials, /proc peeks). */
#define OPENED_EXIT(name, syscall, path_arg)                          \
	SEC("tracepoint/syscalls/sys_exit_" #syscall)                    \
	int name(struct trace_event_raw_sys_exit *ctx)                   \
	{                                                                \
		return opened(ctx->ret, path_arg);                       \
	}

OPENED_EXIT(bridle_opened_openat, openat, 1)
OPENED_EXIT(bridle_opened_openat2, openat2, 1)
OPENED_EXIT(bridle_opened_open, open, 0)
OPENED_EXIT(bridle_opened_creat, creat, 0)
OPENED_EXIT(bridle_opened_by_handle, open_by_handle_at, -1)

#define URING_OPEN 1    /* IORING_OP_OPENAT, IORING_OP_OPENAT2 */
#define URING_INSTALL 2 /* IORING_OP_FIXED_FD_INSTALL: a fixed file into the descriptor table */

/* Which io_uring requests make a new descriptor (0: none). */
static __always_inline int uring_open_kind(u8 op)
{
	if (op == bpf_core_enum_value(enum io_uring_op, IORING_OP_OPENAT) ||
	    op == bpf_core_enum_value(enum io_uring_op, IORING_OP_OPENAT2))
		return URING_OPEN;
	if (bpf_core_enum_value_exists(enum io_uring_op, IORING_OP_FIXED_FD_INSTALL) &&
	    op == bpf_core_enum_value(enum io_uring_op, IORING_OP_FIXED_FD_INSTALL))
		return URING_INSTALL;
	return 0;
}

/*
 * io_uring opens bypass the system calls above. Their completion runs in a thread of the process that
 * submitted them (the submitter, its io-wq workers or its SQPOLL thread share its file table), so an
 * open into the descriptor table is decided like open(2). An open into a fixed file slot returns no
 * descriptor: it is decided when submitted (bridle_uring_submit).
 */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(bridle_opened_uring, struct io_ring_ctx *ring, void *req, struct io_uring_cqe *cqe)
{
	struct io_kiocb *r = req;
	int kind = uring_open_kind(BPF_CORE_READ(r, opcode));
	struct io_open *o = (void *)&r->cmd;
	if (!kind || (kind == URING_OPEN && BPF_CORE_READ(o, file_slot)))
		return 0;
	return opened(BPF_CORE_READ(cqe, res), -1);
}

/*
 * Decided when an io_uring request is submitted, before it runs:
 * - IOSQE_CQE_SKIP_SUCCESS: a request that succeeds posts no completion, and the checks above run on
 *   completions. A session process may not ask that of an open, a fixed-file install or a connect (the
 *   network sensor checks unix connects on completion).
 * - An open into a fixed file slot has no descriptor to check: sessions with credential rules may not
 *   make one (fail closed).
 */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(bridle_uring_submit, struct io_kiocb *req)
{
	u8 op = BPF_CORE_READ(req, opcode);
	int kind = uring_open_kind(op);
	if (!kind && op != bpf_core_enum_value(enum io_uring_op, IORING_OP_CONNECT))
		return 0;
	if (BPF_CORE_READ(req, flags) & REQ_F_CQE_SKIP)
		return guard(BRIDLE_GUARD_URING_UNSEEN, 0);
	struct io_open *o = (void *)&req->cmd;
	if (kind != URING_OPEN || !BPF_CORE_READ(o, file_slot))
		return 0;
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	struct bridle_policy_cfg *cfg = tag_policy(tag);
	if (!cfg || !(cfg->flags & BRIDLE_CFG_CRED_FILES))
		return 0;
	return guard_refuse(task, tgid, tag, BRIDLE_GUARD_URING_FIXED_OPEN, 0, cfg->gen);
}

/*
 * A full completion ring parks a completion on the overflow list, past io_uring_complete: its result is
 * checked as a new descriptor would be (a result that is no descriptor of a named file is passed over;
 * the overflow does not say which request it was, so a unix connect that overflows is not checked).
 */
SEC("tp_btf/io_uring_cqe_overflow")
int BPF_PROG(bridle_uring_overflow, void *ring, u64 user_data, s32 res, u32 cflags, void *ocqe)
{
	return opened(res, -1);
}

SEC("tracepoint/syscalls/sys_enter_bpf")
int bridle_bpf_guard(struct trace_event_raw_sys_enter *ctx)
{
	return guard(BRIDLE_GUARD_BPF, 0);
}

#define PTRACE_TRACEME 0
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

SEC("tracepoint/syscalls/sys_enter_ptrace")
int bridle_ptrace_guard(struct trace_event_raw_sys_enter *ctx)
{
	long req = (long)ctx->args[0];
	if (req != PTRACE_ATTACH && req != PTRACE_SEIZE)
		return 0; /* other requests act on a tracee already attached (and so already judged) */
	return guard(BRIDLE_GUARD_PTRACE, (u32)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int bridle_vm_write_guard(struct trace_event_raw_sys_enter *ctx)
{
	return guard(BRIDLE_GUARD_VM_WRITE, (u32)ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int bridle_vm_read_guard(struct trace_event_raw_sys_enter *ctx)
{
	return guard(BRIDLE_GUARD_VM_READ, (u32)ctx->args[0]);
}

#define TIOCSTI 0x5412
#define TIOCLINUX 0x541C

/*
 * ioctl(2) requests a session may not make:
 *  - setting an inode's generation (FS_IOC_SETVERSION, EXT4_IOC_SETVERSION and their 32-bit forms;
 *    ext2/3/4 without metadata checksums let a file's owner do it): rule keys hold generations, so a
 *    session could make a denied file or directory another one to them;
 *  - typing into a terminal's input (TIOCSTI where dev.tty.legacy_tiocsti allows it; TIOCLINUX's
 *    selection paste on a virtual console): a session shares the terminal of the shell that started it,
 *    which would read and run the text untagged once the session ends.
 */
SEC("tracepoint/syscalls/sys_enter_ioctl")
int bridle_ioctl_guard(struct trace_event_raw_sys_enter *ctx)
{
	u32 cmd = (u32)ctx->args[1];
	if (cmd == 0x40087602 || cmd == 0x40047602 || cmd == 0x40086604 || cmd == 0x40046604)
		return guard(BRIDLE_GUARD_SETVERSION, 0);
	if (cmd == TIOCSTI || cmd == TIOCLINUX)
		return guard(BRIDLE_GUARD_TTY_INJECT, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_pidfd_getfd")
int bridle_pidfd_getfd_guard(struct trace_event_raw_sys_enter *ctx)
{
	return guard(BRIDLE_GUARD_PIDFD_GETFD, 0);
}

#define PERF_FLAG_PID_CGROUP (1UL << 2)

/*
 * perf_event_open(attr, pid, cpu, group_fd, flags) on another process samples its registers and its user
 * stack (PERF_SAMPLE_STACK_USER copies the stack, and the environment above it). A session process may
 * open events on itself (pid 0) and on its session's processes, the pid judged as ptrace's is; pid -1
 * (every process on a CPU) and PERF_FLAG_PID_CGROUP (pid is a cgroup: every process in it) are refused.
 */
SEC("tracepoint/syscalls/sys_enter_perf_event_open")
int bridle_perf_guard(struct trace_event_raw_sys_enter *ctx)
{
	int pid = (int)ctx->args[1];
	if (pid == 0 && !(ctx->args[4] & PERF_FLAG_PID_CGROUP))
		return 0;
	return guard(BRIDLE_GUARD_PERF_OTHER, pid > 0 && !(ctx->args[4] & PERF_FLAG_PID_CGROUP) ? pid : 0);
}

#define FAN_REPORT_FID 0x00000200
#define FAN_REPORT_DIR_FID 0x00000400

/*
 * fanotify hands a listener an open descriptor of each file an event is about, made inside read(): no
 * open system call for the credential file checks to see. Sessions with credential rules may make only
 * groups that report file handles instead (FAN_REPORT_FID, FAN_REPORT_DIR_FID; handles are opened with
 * open_by_handle_at, which is checked). Such groups never carry descriptors: the kernel allows them only
 * in the notification class.
 */
SEC("tracepoint/syscalls/sys_enter_fanotify_init")
int bridle_fanotify_guard(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[0] & (FAN_REPORT_FID | FAN_REPORT_DIR_FID))
		return 0;
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	struct bridle_policy_cfg *cfg = tag_policy(tag);
	if (!cfg || !(cfg->flags & BRIDLE_CFG_CRED_FILES))
		return 0;
	return guard_refuse(task, tgid, tag, BRIDLE_GUARD_FANOTIFY_FD, 0, 0);
}

/*
 * Core dumps: a process's core file holds its memory and environment. A session may not change the
 * limits of a process outside it (prlimit64(pid, resource, new, old) with pid != 0 and a new limit:
 * RLIMIT_CORE decides whether it dumps), nor send one a signal whose default action dumps core.
 * Reading another process's limits is allowed.
 */
SEC("tracepoint/syscalls/sys_enter_prlimit64")
int bridle_prlimit_guard(struct trace_event_raw_sys_enter *ctx)
{
	int pid = (int)ctx->args[0];
	if (pid == 0 || !ctx->args[2])
		return 0;
	return guard(BRIDLE_GUARD_PRLIMIT_OTHER, pid > 0 ? pid : 0);
}

/* SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGXCPU, SIGXFSZ, SIGSYS (the kernel's SIG_KERNEL_COREDUMP_MASK) */
#define CORE_SIGNALS ((1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 11) | (1u << 24) | (1u << 25) | (1u << 31))

static __always_inline bool core_signal(u64 sig)
{
	return sig < 32 && ((CORE_SIGNALS >> sig) & 1);
}

/*
 * A core signal to the process (or thread) `pid` names in the caller's pid namespace; pid <= 0 (a process
 * group, or every process the caller may signal) cannot be told to be the session's and is refused.
 */
static __always_inline int core_signal_to(u64 sig, int pid)
{
	if (!core_signal(sig))
		return 0;
	return guard(BRIDLE_GUARD_CORE_SIGNAL, pid > 0 ? pid : 0);
}

/* A guard on a signal system call: argument `sig_arg` is the signal, `pid_arg` the process it goes to. */
#define CORE_SIGNAL_GUARD(name, syscall, sig_arg, pid_arg)            \
	SEC("tracepoint/syscalls/sys_enter_" #syscall)                \
	int name(struct trace_event_raw_sys_enter *ctx)               \
	{                                                             \
		return core_signal_to(ctx->args[sig_arg], (int)ctx->args[pid_arg]); \
	}

CORE_SIGNAL_GUARD(bridle_kill_guard, kill, 1, 0)
CORE_SIGNAL_GUARD(bridle_tkill_guard, tkill, 1, 0)
CORE_SIGNAL_GUARD(bridle_sigqueue_guard, rt_sigqueueinfo, 1, 0)
/*
 * tgkill(tgid, tid, sig) and rt_tgsigqueueinfo(tgid, tid, sig, info): judged by the process (the kernel
 * delivers only when the thread is one of it); a thread id is not a key of the tag table.
 */
CORE_SIGNAL_GUARD(bridle_tgkill_guard, tgkill, 2, 0)
CORE_SIGNAL_GUARD(bridle_tgsigqueue_guard, rt_tgsigqueueinfo, 2, 0)

#define PID_FS_MAGIC 0x50494446
#define ANON_INODE_FS_MAGIC 0x09041934
#define PIDFD_SELF_THREAD -10000
#define PIDFD_SELF_THREAD_GROUP -20000
#define PIDFD_SIGNAL_PROCESS_GROUP (1UL << 2)

/*
 * pidfd_send_signal(pidfd, sig, info, flags): the process is the one the descriptor names, read from the
 * caller's descriptor table: a pidfd (pidfs keeps its struct pid in the inode) or a /proc/<pid> directory
 * (the proc inode's). A descriptor that is neither is refused by the kernel (EBADF), and one whose process
 * is gone signals nothing (ESRCH): both pass. PIDFD_SIGNAL_PROCESS_GROUP signals the process's group,
 * refused like kill() of a group.
 */
SEC("tracepoint/syscalls/sys_enter_pidfd_send_signal")
int bridle_pidfd_signal_guard(struct trace_event_raw_sys_enter *ctx)
{
	if (!core_signal(ctx->args[1]))
		return 0;
	int pidfd = (int)ctx->args[0];
	if (pidfd == PIDFD_SELF_THREAD || pidfd == PIDFD_SELF_THREAD_GROUP)
		return 0; /* the caller itself */
	u32 tgid;
	struct task_struct *task;
	struct bridle_tag *tag = current_tag(&tgid, &task);
	if (!tag)
		return 0;
	if (ctx->args[3] & PIDFD_SIGNAL_PROCESS_GROUP)
		return guard_refuse(task, tgid, tag, BRIDLE_GUARD_CORE_SIGNAL, 0, 0);
	struct file *file = pidfd >= 0 ? fd_file(task, pidfd) : NULL;
	if (!file)
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	u64 magic = BPF_CORE_READ(inode, i_sb, s_magic);
	struct pid *pid;
	if (magic == PID_FS_MAGIC) {
		pid = BPF_CORE_READ(inode, i_private);
	} else if (magic == ANON_INODE_FS_MAGIC) {
		/* before pidfs (Linux 6.9) a pidfd is an anonymous inode's file holding its struct pid */
		pid = BPF_CORE_READ(file, private_data);
	} else if (magic == PROC_SUPER_MAGIC) {
		struct proc_inode *pi = container_of(inode, struct proc_inode, vfs_inode);
		pid = BPF_CORE_READ(pi, pid);
	} else {
		return 0;
	}
	if (!pid)
		return 0;
	struct hlist_node *first = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);
	if (!first)
		return 0;
	struct task_struct *t = container_of(first, struct task_struct, pid_links[PIDTYPE_PID]);
	u32 target = BPF_CORE_READ(t, tgid);
	if (same_session(tgid, tag, target))
		return 0;
	return guard_refuse(task, tgid, tag, BRIDLE_GUARD_CORE_SIGNAL, target, 0);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(bridle_exit, struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0;
	u32 tgid = BPF_CORE_READ(task, tgid);
	struct bridle_tag *tag = tag_of(tgid, task);
	if (!tag) {
		bpf_map_delete_elem(&procs, &tgid);
		return 0;
	}
	u64 session = tag->session;
	struct bridle_exit_ev *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (ev) {
		hdr_fill(&ev->hdr, BRIDLE_EV_EXIT, sizeof(*ev));
		ev->session = session;
		ev->key = proc_key(tgid, task);
		ev->pid = tgid;
		ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
		/* group exit code when the whole group was told to exit, else the last thread's own */
		u32 code = BPF_CORE_READ(task, signal, group_exit_code);
		if (!(BPF_CORE_READ(task, signal, flags) & 0x4 /* SIGNAL_GROUP_EXIT */))
			code = BPF_CORE_READ(task, exit_code);
		ev->exit_code = code;
		ev->pad = 0;
		bpf_ringbuf_submit(ev, rb_flags(false));
	} else {
		count_loss(BRIDLE_HOOK_EXIT);
	}
	bpf_map_delete_elem(&procs, &tgid);
	bpf_map_delete_elem(&tags, &tgid);
	bpf_map_delete_elem(&script_wait, &tgid);

	struct bridle_session *s = bpf_map_lookup_elem(&sessions, &session);
	if (!s)
		return 0;
	if (__sync_fetch_and_add(&s->live, -1) != 1)
		return 0;
	bpf_map_delete_elem(&sessions, &session);
	struct bridle_session_end_ev *se = bpf_ringbuf_reserve(&events, sizeof(*se), 0);
	if (!se) {
		count_loss(BRIDLE_HOOK_EXIT);
		return 0;
	}
	hdr_fill(&se->hdr, BRIDLE_EV_SESSION_END, sizeof(*se));
	se->session = session;
	se->pid = tgid;
	se->pad = 0;
	bpf_ringbuf_submit(se, rb_flags(false));
	return 0;
}

#define OVL_LOWER_MAX 8 /* lower layers reported per overlay directory */

static __always_inline void fd_ident_write(struct seq_file *seq, u32 fd, struct inode *inode)
{
	if (!inode)
		return;
	struct bridle_fd_ident r = {
		.fd = fd,
		.generation = BPF_CORE_READ(inode, i_generation),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
		.ino = BPF_CORE_READ(inode, i_ino),
	};
	bpf_seq_write(seq, &r, sizeof(r));
}

/* The inode of lower layer `i` of an overlay entry (NULL when there is none, or not looked up yet). */
static __always_inline struct inode *ovl_lower_inode(struct ovl_entry *oe, u32 i)
{
	struct ovl_path p = {};
	void *at = (void *)oe + bpf_core_field_offset(struct ovl_entry, __lowerstack) + (u64)i * bpf_core_type_size(struct ovl_path);
	if (bpf_probe_read_kernel(&p, sizeof(p), at) || !p.dentry)
		return NULL;
	return BPF_CORE_READ(p.dentry, d_inode);
}

/*
 * Identities as rule keys hold them (with the inode's generation, which stat() does not give): made for
 * the supervisor's own task (link info), it reports every file the supervisor holds open. The policy
 * compiler opens the paths a policy names and reads their identities here.
 *
 * A file on an overlay has identities beneath it too (decide() looks at both the overlay's file and the
 * file beneath it): after its own record come records with BRIDLE_FD_BENEATH in fd, for a regular file
 * the file that holds its data (upper, else the lowest lower layer: what an open of it reads, and so
 * what real_file() finds at exec), for a directory its upper directory and each lower one. The compiler
 * enters a rule under all of them, so the lower or upper path of a file a rule names on the overlay is
 * the same file, and a dir: walk from beneath meets the rule. stat() is no help here: on an overlay it
 * reports the overlay's device and (for a copied-up file) the lower file's inode number, neither the
 * upper file's identity nor, with layers on different file systems, the overlay inode's.
 */
SEC("iter/task_file")
int bridle_fd_idents(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	/* the loader asks for one task; a kernel that ignores that (before 6.1) walks them all */
	if (!file || !task || task->tgid != (u32)(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	u32 fd = ctx->fd;
	fd_ident_write(ctx->meta->seq, fd, inode);
	if (!inode || BPF_CORE_READ(inode, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return 0;
	/*
	 * overlayfs's own structures, as they are since Linux 6.5 (and only in the overlay module's BTF when
	 * it is a module): a kernel without them gets the overlay's identity alone, and the object still loads.
	 */
	if (!bpf_core_type_exists(struct ovl_inode) || !bpf_core_field_exists(struct ovl_inode, oe) ||
	    !bpf_core_field_exists(struct ovl_entry, __numlower) || !bpf_core_field_exists(struct ovl_entry, __lowerstack) ||
	    !bpf_core_enum_value_exists(enum ovl_inode_flag, OVL_UPPERDATA))
		return 0;
	u32 mode = BPF_CORE_READ(inode, i_mode) & BRIDLE_S_IFMT;
	if (mode != BRIDLE_S_IFREG && mode != BRIDLE_S_IFDIR)
		return 0;
	struct ovl_inode *oi = container_of(inode, struct ovl_inode, vfs_inode);
	struct dentry *upper = BPF_CORE_READ(oi, __upperdentry);
	struct ovl_entry *oe = BPF_CORE_READ(oi, oe);
	u32 nlower = oe ? BPF_CORE_READ(oe, __numlower) : 0;
	fd |= BRIDLE_FD_BENEATH;
	if (mode == BRIDLE_S_IFREG) {
		/* the upper file when it holds the data (not a metacopy), else the lower file that does */
		bool upperdata = BPF_CORE_READ(oi, flags) & (1UL << bpf_core_enum_value(enum ovl_inode_flag, OVL_UPPERDATA));
		if (upper && upperdata)
			fd_ident_write(ctx->meta->seq, fd, BPF_CORE_READ(upper, d_inode));
		else if (nlower)
			fd_ident_write(ctx->meta->seq, fd, ovl_lower_inode(oe, nlower - 1));
		return 0;
	}
	if (upper)
		fd_ident_write(ctx->meta->seq, fd, BPF_CORE_READ(upper, d_inode));
	for (u32 i = 0; i < OVL_LOWER_MAX; i++) {
		if (i >= nlower)
			break;
		fd_ident_write(ctx->meta->seq, fd, ovl_lower_inode(oe, i));
	}
	return 0;
}

/* Seeding: one record per process that exists when the sensor starts, so lineage has no holes. */
SEC("iter/task")
int bridle_seed_iter(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	if (task->pid != task->tgid)
		return 0; /* one record per process */
	struct bridle_seed s = {};
	s.pid = task->tgid;
	s.ppid = BPF_CORE_READ(task, real_parent, tgid);
	s.start = task->start_boottime;
	s.uid = BPF_CORE_READ(task, cred, uid.val);
	bpf_probe_read_kernel(s.comm, sizeof(s.comm), task->comm);
	bpf_seq_write(ctx->meta->seq, &s, sizeof(s));
	return 0;
}
