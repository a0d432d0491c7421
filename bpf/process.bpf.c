// SPDX-License-Identifier: GPL-2.0-only
/*
 * Process sensor: sessions as tagged process trees, lineage keys, and exec decided in the kernel.
 *
 * Hooks: tp_btf sched_process_fork (tag inheritance, lineage), sched_process_exec (decision, events,
 * agent auto-sessions), sched_process_exit (exit events, session refcount), and the syscall tracepoints
 * for mmap (programs run through the dynamic loader) and bpf (a tagged process must not touch maps).
 * This kernel refuses BPF trampolines, so a denied image is killed with SIGKILL at
 * sched_process_exec: the signal is pending before the new image's first user instruction.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bridle.h"

char LICENSE[] SEC("license") = "GPL";

#define SIGKILL 9
#define PROT_EXEC 0x4
#define FNV_OFF 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* Set by the loader before load: size of the process table etc. live in map definitions. */
const volatile u64 session_base = 1ULL << 62; /* kernel-made session ids start here */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct bridle_tag);
} tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, u32);
	__type(value, struct bridle_proc);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct bridle_session);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_ident_key);
	__type(value, struct bridle_rule);
} exec_ident SEC(".maps");

/* dir: rules, keyed by the directory's identity: a file matches when any ancestor is listed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_ident_key);
	__type(value, struct bridle_rule);
} exec_dir SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bridle_argv_key);
	__type(value, struct bridle_rule);
} exec_argv SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, u32);
	__type(value, struct bridle_policy_cfg);
} policies SEC(".maps");

/* Agents by basename hash (key: u64) and by file identity (key: ident with policy 0). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u64);
	__type(value, struct bridle_agent);
} agent_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bridle_ident_key);
	__type(value, struct bridle_agent);
} agent_idents SEC(".maps");

/* Processes bridle itself runs as (the supervisor): never tagged by an agents: match. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u32);
} exempt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BRIDLE_HOOK_MAX);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

/* Scratch for building an exec event before it is copied into the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bridle_exec_ev);
} scratch SEC(".maps");

/*
 * Records written through bpf_ringbuf_reserve() or bpf_seq_write() leave no type in the object's BTF;
 * this one-entry map names them, so the layout test can compare every struct with the decoder.
 */
struct bridle_btf_anchor {
	struct bridle_exit_ev exit;
	struct bridle_session_end_ev session_end;
	struct bridle_guard_ev guard;
	struct bridle_seed seed;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct bridle_btf_anchor);
} btf_anchor SEC(".maps");

u64 session_seq = 0;

static __always_inline void count_loss(u32 hook)
{
	u64 *n = bpf_map_lookup_elem(&lost, &hook);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline u64 task_start(struct task_struct *t)
{
	return BPF_CORE_READ(t, group_leader, start_boottime);
}

/* The tag of process `tgid`, or NULL when untagged or when the entry belongs to a previous owner of the pid. */
static __always_inline struct bridle_tag *tag_of(u32 tgid, struct task_struct *t)
{
	struct bridle_tag *tag = bpf_map_lookup_elem(&tags, &tgid);
	if (!tag)
		return NULL;
	if (tag->start != task_start(t)) {
		bpf_map_delete_elem(&tags, &tgid);
		return NULL;
	}
	return tag;
}

static __always_inline u64 proc_key(u32 tgid, struct task_struct *t)
{
	struct bridle_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	u64 start = task_start(t);
	if (p && p->start == start)
		return p->key;
	/* Predates the sensor (or was evicted): its key is its start time, as the seeding iterator says. */
	return start;
}

static __always_inline void session_ref(u64 session, s64 delta, u32 policy, u32 flags)
{
	struct bridle_session *s = bpf_map_lookup_elem(&sessions, &session);
	if (s) {
		__sync_fetch_and_add(&s->live, delta);
		return;
	}
	if (delta > 0) {
		struct bridle_session ns = { .live = delta, .policy = policy, .flags = flags };
		bpf_map_update_elem(&sessions, &session, &ns, BPF_NOEXIST);
	}
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
	bpf_map_update_elem(&tags, &ctgid, &nt, BPF_ANY);
	session_ref(nt.session, 1, nt.policy, nt.flags);
	return 0;
}

static __always_inline void fnv(u64 *h, u8 c)
{
	*h ^= c;
	*h *= FNV_PRIME;
}

static __always_inline struct bridle_rule *ident_rule(void *map, u32 policy, u64 dev, u64 ino)
{
	struct bridle_ident_key k = { .policy = policy, .dev = dev, .ino = ino };
	return bpf_map_lookup_elem(map, &k);
}

struct decision {
	u32 verdict; /* BRIDLE_ALLOW / BRIDLE_DENY before monitor mode is applied */
	u32 rule_kind;
	u32 rule_id;
	u32 have_allow;
};

/* Deny beats allow beats default: remember the first allow, stop at the first deny. */
static __always_inline bool consider(struct decision *d, struct bridle_rule *r, u32 kind)
{
	if (!r)
		return false;
	if ((r->action & 0xff) == BRIDLE_DENY) {
		d->verdict = BRIDLE_DENY;
		d->rule_kind = kind;
		d->rule_id = r->rule_id;
		return true;
	}
	if ((r->action & 0xff) == BRIDLE_ALLOW && !d->have_allow) {
		d->have_allow = 1;
		d->rule_kind = kind;
		d->rule_id = r->rule_id;
	}
	return false;
}

/* dir: rules: walk the file's ancestors, crossing mount points, up to BRIDLE_DIR_DEPTH levels. */
static __always_inline bool decide_dirs(struct decision *d, u32 policy, struct file *file)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vmnt = BPF_CORE_READ(file, f_path.mnt);
	struct mount *mnt = container_of(vmnt, struct mount, mnt);

	for (int i = 0; i < BRIDLE_DIR_DEPTH; i++) {
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		if (dentry == mnt_root) {
			struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
			if (parent == mnt)
				break; /* the root of the namespace */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = parent;
			continue; /* the mount point stands for the mounted root */
		}
		struct dentry *up = BPF_CORE_READ(dentry, d_parent);
		if (up == dentry)
			break;
		dentry = up;
		struct inode *ino = BPF_CORE_READ(dentry, d_inode);
		u64 dev = BPF_CORE_READ(ino, i_sb, s_dev);
		u64 inr = BPF_CORE_READ(ino, i_ino);
		if (consider(d, ident_rule(&exec_dir, policy, dev, inr), BRIDLE_RULE_DIR))
			return true;
	}
	return false;
}

static __always_inline struct bridle_exec_ev *scratch_ev(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/*
 * Byte loops run under bpf_loop(): the verifier checks the callback once instead of unrolling
 * 1024 iterations of map lookups.
 */
struct argv_walk {
	u64 h;
	u32 words;
	u32 len;
	u32 policy;
	u32 kind; /* out: rule kind hit, or 0 */
	struct bridle_rule hit;
	u32 denied;
	u32 allowed;
};

static long argv_step(u32 i, struct argv_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || i >= w->len || w->words >= BRIDLE_ARGV_RULE_MAX)
		return 1;
	u8 c = ev->args[i & (BRIDLE_ARGS_MAX - 1)];
	if (w->words == 0 && c == '/') {
		w->h = FNV_OFF; /* argv[0] is compared by basename */
		return 0;
	}
	if (c == 0) {
		w->words++;
		struct bridle_argv_key k = { .policy = w->policy, .nargs = w->words, .hash = w->h };
		struct bridle_rule *r = bpf_map_lookup_elem(&exec_argv, &k);
		if (r) {
			if ((r->action & 0xff) == BRIDLE_DENY) {
				w->hit = *r;
				w->denied = 1;
				return 1;
			}
			if (!w->allowed) {
				w->hit = *r;
				w->allowed = 1;
			}
		}
	}
	w->h ^= c;
	w->h *= FNV_PRIME;
	return 0;
}

/* argv: prefix rules: one lookup per word count, on hashes of the copied argv bytes. */
static __always_inline bool decide_argv(struct decision *d, u32 policy, struct bridle_exec_ev *ev)
{
	struct argv_walk w = { .h = FNV_OFF, .len = ev->args_len, .policy = policy };
	bpf_loop(BRIDLE_ARGS_MAX, argv_step, &w, 0);
	if (w.denied || w.allowed)
		return consider(d, &w.hit, BRIDLE_RULE_ARGV);
	return false;
}

static __always_inline void decide(struct decision *d, u32 policy, struct file *file, struct bridle_exec_ev *ev)
{
	struct bridle_policy_cfg *cfg = bpf_map_lookup_elem(&policies, &policy);
	u32 gen = cfg ? cfg->gen : 0xffffffff; /* no policy: no rule matches, fileless still denied */
	d->verdict = BRIDLE_ALLOW;
	d->rule_kind = BRIDLE_RULE_DEFAULT;
	d->rule_id = cfg ? cfg->default_rule : 0;
	d->have_allow = 0;

	if (ev->nlink == 0) {
		u32 act = cfg ? cfg->fileless_action : BRIDLE_DENY;
		struct bridle_rule r = { .action = act, .rule_id = cfg ? cfg->fileless_rule : 0 };
		if (consider(d, &r, BRIDLE_RULE_FILELESS))
			return;
	}
	if (consider(d, ident_rule(&exec_ident, gen, ev->dev, ev->ino), BRIDLE_RULE_PATH))
		return;
	if (decide_argv(d, gen, ev))
		return;
	if (decide_dirs(d, gen, file))
		return;
	if (d->have_allow)
		return;
	d->rule_kind = BRIDLE_RULE_DEFAULT;
	d->rule_id = cfg ? cfg->default_rule : 0;
	d->verdict = (cfg && cfg->default_action == BRIDLE_DENY) ? BRIDLE_DENY : BRIDLE_ALLOW;
}

static __always_inline void fill_file(struct bridle_exec_ev *ev, struct file *file)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	ev->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	ev->ino = BPF_CORE_READ(inode, i_ino);
	ev->nlink = BPF_CORE_READ(inode, __i_nlink);
	const unsigned char *name = BPF_CORE_READ(file, f_path.dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(ev->dname, sizeof(ev->dname), name);
	ev->dname_len = n > 0 ? n - 1 : 0;
	if (ev->nlink == 0)
		ev->flags |= BRIDLE_F_FILELESS;
}

static __always_inline void fill_args(struct bridle_exec_ev *ev, struct task_struct *task)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end - start;
	if (len > BRIDLE_ARGS_MAX) {
		len = BRIDLE_ARGS_MAX;
		ev->flags |= BRIDLE_F_ARGS_TRUNC;
	}
	ev->args_len = 0;
	if (len && bpf_probe_read_user(ev->args, len, (void *)start) == 0)
		ev->args_len = len;
}

struct name_walk {
	u64 h;
	u32 len;
};

static long basename_step(u32 i, struct name_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || i >= w->len)
		return 1;
	u8 c = ev->filename[i & (BRIDLE_NAME_MAX - 1)];
	if (c == '/') {
		w->h = FNV_OFF;
		return 0;
	}
	w->h ^= c;
	w->h *= FNV_PRIME;
	return 0;
}

struct word_walk {
	u64 wh;
	u64 want[BRIDLE_AGENT_ARGV_MAX];
	u32 nwant;
	u32 found;
	u32 word;
	u32 len;
};

static long word_step(u32 i, struct word_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || i >= w->len)
		return 1;
	u8 c = ev->args[i & (BRIDLE_ARGS_MAX - 1)];
	if (c != 0) {
		w->wh ^= c;
		w->wh *= FNV_PRIME;
		return 0;
	}
	if (w->word > 0) {
		for (u32 j = 0; j < BRIDLE_AGENT_ARGV_MAX; j++)
			if (j < w->nwant && w->want[j] == w->wh)
				w->found |= 1u << j;
	}
	w->word++;
	w->wh = FNV_OFF;
	return 0;
}

/* Does this exec start a session? Matches agents: by basename (or identity) and required argv words. */
static __always_inline struct bridle_agent *agent_match(struct bridle_exec_ev *ev, struct task_struct *task)
{
	struct name_walk nw = { .h = FNV_OFF, .len = ev->filename_len };
	bpf_loop(BRIDLE_NAME_MAX, basename_step, &nw, 0);
	u64 h = nw.h;
	struct bridle_agent *a = bpf_map_lookup_elem(&agent_names, &h);
	if (!a) {
		struct bridle_ident_key k = { .dev = ev->dev, .ino = ev->ino };
		a = bpf_map_lookup_elem(&agent_idents, &k);
	}
	if (!a || a->nargv == 0)
		return a;
	fill_args(ev, task);

	/* every required word must appear among argv[1..] */
	struct word_walk ww = { .wh = FNV_OFF, .len = ev->args_len };
	ww.nwant = a->nargv > BRIDLE_AGENT_ARGV_MAX ? BRIDLE_AGENT_ARGV_MAX : a->nargv;
	for (u32 j = 0; j < BRIDLE_AGENT_ARGV_MAX; j++)
		ww.want[j] = a->argv_hash[j];
	bpf_loop(BRIDLE_ARGS_MAX, word_step, &ww, 0);
	return ww.found == (1u << ww.nwant) - 1 ? a : NULL;
}

static __always_inline void submit_exec(struct bridle_exec_ev *ev)
{
	u32 size = sizeof(*ev);
	ev->hdr.size = size;
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), 0))
		count_loss(BRIDLE_HOOK_EXEC);
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

	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev)
		return 0;
	/* Untagged and exempt (bridle itself): keep the lineage entry, emit nothing. */
	if (!tag && exempted) {
		bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
		return 0;
	}

	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	ev->flags = 0;
	ev->agent_id = 0;
	ev->filename_len = 0;
	ev->interp_len = 0;
	long n = bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), BPF_CORE_READ(bprm, filename));
	ev->filename_len = n > 0 ? n - 1 : 0;
	fill_file(ev, file);

	struct bridle_tag nt;
	if (!tag) {
		/* Zero-touch sessions: an untagged process exec'ing an agent binary becomes a session root. */
		ev->args_len = 0;
		struct bridle_agent *a = agent_match(ev, task);
		if (!a) {
			bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
			return 0;
		}
		struct bridle_policy_cfg *cfg = bpf_map_lookup_elem(&policies, &a->policy);
		nt.session = session_base + __sync_fetch_and_add(&session_seq, 1);
		nt.policy = a->policy;
		nt.flags = cfg ? cfg->flags : 0;
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

	ev->hdr.type = BRIDLE_EV_EXEC;
	ev->hdr.ktime = now;
	ev->session = tag->session;
	ev->policy = tag->policy;
	ev->key = now;
	ev->parent_key = np.parent_key;
	ev->parent_pid = np.parent_pid;
	ev->pid = tgid;
	ev->tid = BPF_CORE_READ(task, pid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = BPF_CORE_READ(task, cred, uid.val);
	ev->gid = BPF_CORE_READ(task, cred, gid.val);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));

	const char *interp = BPF_CORE_READ(bprm, interp);
	const char *fname = BPF_CORE_READ(bprm, filename);
	if (interp != fname) {
		/* #! script: bprm->file is the interpreter that will run; the event names both */
		n = bpf_probe_read_kernel_str(ev->interp, sizeof(ev->interp), interp);
		ev->interp_len = n > 0 ? n - 1 : 0;
		ev->flags |= BRIDLE_F_SCRIPT;
	}

	struct decision d;
	decide(&d, tag->policy, file, ev);
	struct bridle_policy_cfg *pc = bpf_map_lookup_elem(&policies, &tag->policy);
	struct bridle_rule *loader = pc ? ident_rule(&exec_ident, pc->gen, ev->dev, ev->ino) : NULL;
	if (d.verdict == BRIDLE_ALLOW && loader && (loader->action & BRIDLE_MARK_LOADER)) {
		/* The dynamic loader run as a program: the program it maps next is decided like an exec. */
		np.flags |= BRIDLE_F_LOADER;
		ev->flags |= BRIDLE_F_LOADER;
	}
	ev->rule_kind = d.rule_kind;
	ev->rule_id = d.rule_id;
	ev->verdict = d.verdict;
	if (d.verdict == BRIDLE_DENY && (tag->flags & BRIDLE_TAG_MONITOR))
		ev->verdict = BRIDLE_WOULD_DENY;
	if (ev->verdict == BRIDLE_DENY)
		bpf_send_signal(SIGKILL);

	bpf_map_update_elem(&procs, &tgid, &np, BPF_ANY);
	submit_exec(ev);
	return 0;
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
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bridle_proc *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p || !(p->flags & BRIDLE_F_LOADER))
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct bridle_tag *tag = tag_of(tgid, task);
	p->flags &= ~BRIDLE_F_LOADER;
	if (!tag)
		return 0;

	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	unsigned int max = BPF_CORE_READ(task, files, fdt, max_fds);
	if (fd >= max)
		return 0;
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return 0;

	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev)
		return 0;
	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	ev->flags = BRIDLE_F_VIA_LOADER;
	ev->agent_id = 0;
	ev->interp_len = 0;
	ev->filename_len = 0;
	fill_file(ev, file);
	/* name the mapped file by its dentry; userspace resolves the rest from the argv */
	fill_args(ev, task);

	u64 now = bpf_ktime_get_boot_ns();
	ev->hdr.type = BRIDLE_EV_EXEC;
	ev->hdr.ktime = now;
	ev->session = tag->session;
	ev->policy = tag->policy;
	ev->key = p->key;
	ev->parent_key = p->parent_key;
	ev->parent_pid = p->parent_pid;
	ev->pid = tgid;
	ev->tid = (u32)bpf_get_current_pid_tgid();
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = BPF_CORE_READ(task, cred, uid.val);
	ev->gid = BPF_CORE_READ(task, cred, gid.val);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));

	struct decision d;
	decide(&d, tag->policy, file, ev);
	ev->rule_kind = d.rule_kind;
	ev->rule_id = d.rule_id;
	ev->verdict = d.verdict;
	if (d.verdict == BRIDLE_DENY && (tag->flags & BRIDLE_TAG_MONITOR))
		ev->verdict = BRIDLE_WOULD_DENY;
	if (ev->verdict == BRIDLE_DENY)
		bpf_send_signal(SIGKILL);
	submit_exec(ev);
	return 0;
}

/* A tagged process calling bpf(2) could rewrite its own tag or the policy maps: refuse it the process. */
SEC("tracepoint/syscalls/sys_enter_bpf")
int bridle_bpf_guard(struct trace_event_raw_sys_enter *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct bridle_tag *tag = tag_of(tgid, task);
	if (!tag)
		return 0;
	u32 verdict = (tag->flags & BRIDLE_TAG_MONITOR) ? BRIDLE_WOULD_DENY : BRIDLE_DENY;
	if (verdict == BRIDLE_DENY)
		bpf_send_signal(SIGKILL);
	struct bridle_guard_ev *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_loss(BRIDLE_HOOK_GUARD);
		return 0;
	}
	ev->hdr.type = BRIDLE_EV_GUARD;
	ev->hdr.flags = 0;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ktime = bpf_ktime_get_boot_ns();
	ev->session = tag->session;
	ev->key = proc_key(tgid, task);
	ev->pid = tgid;
	ev->what = (u32)ctx->id;
	ev->verdict = verdict;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
	return 0;
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
		ev->hdr.type = BRIDLE_EV_EXIT;
		ev->hdr.flags = 0;
		ev->hdr.size = sizeof(*ev);
		ev->hdr.ktime = bpf_ktime_get_boot_ns();
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
		bpf_ringbuf_submit(ev, 0);
	} else {
		count_loss(BRIDLE_HOOK_EXIT);
	}
	bpf_map_delete_elem(&procs, &tgid);
	bpf_map_delete_elem(&tags, &tgid);

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
	se->hdr.type = BRIDLE_EV_SESSION_END;
	se->hdr.flags = 0;
	se->hdr.size = sizeof(*se);
	se->hdr.ktime = bpf_ktime_get_boot_ns();
	se->session = session;
	se->pid = tgid;
	se->pad = 0;
	bpf_ringbuf_submit(se, 0);
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
