/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The sensor's maps and its exec decision, shared by process.bpf.c (tracepoints, SIGKILL backend) and
 * lsm.bpf.c (BPF-LSM backend, where the kernel allows it). Both objects declare the same maps; the
 * loader makes the LSM object reuse the process object's maps, so there is one tag table and one
 * policy store whichever hook decides.
 */
#ifndef BRIDLE_SENSOR_H
#define BRIDLE_SENSOR_H

#include "bridle.h"
#include "tags.h"
#include "path.h"

#define SIGKILL 9
#define PROT_EXEC 0x4
#define MAP_SHARED 0x01 /* MAP_SHARED_VALIDATE (0x03) has it too */
#define VM_SHARED 0x8

/* Set by the loader before load: size of the process table etc. live in map definitions. */
const volatile u64 session_base = 1ULL << 62; /* kernel-made session ids start here */
/*
 * Set by the loader to a random value: the key of the whole-path hash that ends a #! script wait, so a
 * session cannot search offline for a path whose hash equals the script's.
 */
const volatile u64 path_key = 0;
/* Set by the loader: the inode number of the mount namespace bridle runs in (the host's). */
const volatile u32 host_mnt_ns = 0;

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
	struct bridle_fd_ident fd_ident;
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

/*
 * A file's identity as rule keys hold it: s_dev with the inode's generation above it. The generation tells
 * a file from a later one that got its inode number after it was deleted, which a rule for the first
 * must not deny.
 */
static __always_inline u64 ident_dev(struct inode *inode)
{
	return BPF_CORE_READ(inode, i_sb, s_dev) | ((u64)BPF_CORE_READ(inode, i_generation) << 32);
}

static __always_inline struct bridle_rule *ident_rule(void *map, u32 policy, u32 kind, u64 dev, u64 ino)
{
	struct bridle_ident_key k = { .policy = policy, .kind = kind, .dev = dev, .ino = ino };
	return bpf_map_lookup_elem(map, &k);
}

struct decision {
	u32 verdict; /* BRIDLE_ALLOW / BRIDLE_DENY before monitor mode is applied */
	u32 rule_kind;
	u32 rule_id;
	u32 have_allow;
	u32 loader; /* decide(): the executed file is a dynamic loader (BRIDLE_MARK_LOADER on its identity) */
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

struct dir_walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct decision d;
	u32 policy;
	u32 kind;
	u32 end;     /* 0: ran out of steps (or a disconnected dentry); 1: reached the root; 2: a deny rule matched */
	u32 foreign; /* crossed a mount of another mount namespace: allow rules above it do not count */
};

static long dir_step(u32 i, struct dir_walk *w)
{
	struct dentry *dentry = w->dentry; /* locals: CO-RE relocates kernel types, not this struct */
	struct mount *mnt = w->mnt;
	struct dentry *up = BPF_CORE_READ(dentry, d_parent);
	if (up == dentry) {
		/*
		 * A dentry that is its own parent but not its file system's root is disconnected (a file opened
		 * by handle): its directories are unknown, so the walk does not end (deny, with deny dir rules).
		 * Unless it is on one of the kernel's internal mounts: a pipe, a socket or a memfd (reopened
		 * through /dev/stdin or /proc/self/fd/N) is beneath no directory at all.
		 */
		if (dentry != BPF_CORE_READ(dentry, d_sb, s_root)) {
			if (BPF_CORE_READ(mnt, mnt.mnt_flags) & BRIDLE_MNT_INTERNAL)
				w->end = 1;
			return 1;
		}
		/*
		 * The root of this file system: go on from where the mount was mounted. The walk reaches the
		 * file system's root, not the mount's: a mount of a subdirectory (a bind mount, made in a mount
		 * namespace the session owns) does not hide the directories above that subdirectory.
		 */
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt) {
			w->end = 1; /* the root of the namespace, or a mount attached nowhere */
			return 1;
		}
		/*
		 * Where a mount of another mount namespace (one a session made, a detached clone) was put says
		 * nothing about what is in it: `mount --bind ~/x /usr/bin/ls` is not a file of /usr/bin. Deny
		 * rules above it still count; allow rules do not.
		 */
		if (BPF_CORE_READ(mnt, mnt_ns, ns.inum) != host_mnt_ns)
			w->foreign = 1;
		up = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
	}
	w->dentry = up;
	struct inode *ino = BPF_CORE_READ(up, d_inode);
	struct bridle_rule *r = ident_rule(&exec_dir, w->policy, w->kind, ident_dev(ino), BPF_CORE_READ(ino, i_ino));
	if (r && w->foreign && (r->action & 0xff) != BRIDLE_DENY)
		return 0;
	if (consider(&w->d, r, BRIDLE_RULE_DIR)) {
		w->end = 2;
		return 1;
	}
	return 0;
}

/*
 * dir: rules (of `kind`): every directory above the file, across mounts (a mount point counts as a
 * directory above what is mounted on it). `deep_denies`: the policy has deny dir: rules of this kind, so a
 * file whose walk does not end within BRIDLE_DIR_DEPTH steps is denied by BRIDLE_RULE_ID_DEEP.
 */
static __always_inline bool decide_dirs(struct decision *d, u32 policy, u32 kind, struct file *file, bool deep_denies)
{
	struct vfsmount *vmnt = BPF_CORE_READ(file, f_path.mnt);
	struct dir_walk w = {
		.dentry = BPF_CORE_READ(file, f_path.dentry),
		.mnt = container_of(vmnt, struct mount, mnt),
		.d = *d,
		.policy = policy,
		.kind = kind,
	};
	bpf_loop(BRIDLE_DIR_DEPTH, dir_step, &w, 0);
	*d = w.d;
	if (w.end == 0 && deep_denies) {
		struct bridle_rule deep = { .action = BRIDLE_DENY, .rule_id = BRIDLE_RULE_ID_DEEP };
		return consider(d, &deep, BRIDLE_RULE_DIR);
	}
	return w.end == 2;
}

/*
 * FNV-1a of a file's name (`len` bytes, or up to a NUL), of its first BRIDLE_DNAME_MAX - 1 bytes: names
 * longer than that share a hash. Name rules, argv: rules' word 0 and the #! script wait all hash names so.
 */
static __always_inline u64 name_fnv(const char *name, u32 len)
{
	u64 h = FNV_OFF;
	for (u32 i = 0; i < BRIDLE_DNAME_MAX - 1; i++) {
		if (i >= len || !name[i])
			break;
		fnv(&h, name[i]);
	}
	return h;
}

/* name_fnv of a dentry's name. */
static __always_inline u64 dname_hash(struct dentry *dentry)
{
	char name[BRIDLE_DNAME_MAX] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(dentry, d_name.name));
	return name_fnv(name, BRIDLE_DNAME_MAX);
}

/* A deny rule on the file's name in its directory (BRIDLE_KEY_EXEC_NAME / BRIDLE_KEY_CRED_NAME). */
static __always_inline struct bridle_rule *name_rule(u32 policy, u32 kind, struct dentry *dentry, u64 name_hash)
{
	struct inode *dir = BPF_CORE_READ(dentry, d_parent, d_inode);
	u64 dev = BPF_CORE_READ(dir, i_sb, s_dev) | (name_hash << 32);
	u64 ino = BPF_CORE_READ(dir, i_ino) ^ ((u64)BPF_CORE_READ(dir, i_generation) << 32);
	return ident_rule(&exec_ident, policy, kind, dev, ino);
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
	u64 h;  /* prefix hash with word 0 = basename(argv[0]) */
	u64 hf; /* the same prefix with word 0 = the executed file's own name */
	/*
	 * A program run by the loader with --argv0 NAME: the same prefix with word 0 = basename(NAME); else
	 * equal to hf (no flag to test: fewer states for the verifier).
	 */
	u64 ha;
	u32 words;
	u32 len;
	u32 start; /* where argv[0] starts in the copy (0; through the loader, the program's word 0) */
	u32 policy;
	u32 len0; /* bytes of the copy up to the end of argv[0], once it ended within the copy */
	struct bridle_rule hit;
	u32 denied;
	u32 allowed;
};

/*
 * A program run through the dynamic loader (`ld.so [OPTION]... PROGRAM [ARGS]...`, decided when ld.so
 * maps it) is judged on the argv ld.so gives it: ld.so's argv[0] and options skipped, PROGRAM as word 0
 * (by basename, as the regular exec compares argv[0]), and with `--argv0 NAME`, NAME as word 0 too.
 * glibc's ld.so takes a word that starts with `--` as an option and refuses one it does not know; the
 * options it knows (glibc 2.36, `ld.so --help`) are hashed below (FNV-1a 64 of the whole word). A pass
 * of its own before the argv walk (one walk doing both had too many states for the verifier).
 */
struct ld_walk {
	u64 wh; /* the current word, whole */
	u64 ha; /* basename of --argv0's NAME (the file's own name when none is given) */
	u32 len;
	u32 ld;    /* LD_*: which of ld.so's words the walk is in */
	u32 ws;    /* where the current word starts */
	u32 start; /* where PROGRAM starts; past the copy while not found (or after an option bridle does not know) */
	/*
	 * A word in option place: 0 at its start, 1 after a first '-', 2 after "--" (an option), 3 otherwise.
	 * Few values, not a byte count: the verifier checks the callback once per distinct state.
	 */
	u32 lead;
};

#define LD_ARGV0 1 /* ld.so's own argv[0] */
#define LD_OPT 2   /* an option, or PROGRAM */
#define LD_ARG 3   /* an option's argument */
#define LD_NAME 4  /* --argv0's NAME */
#define LD_OPT_ARGV0 0xb7a0c846cdf5ef13ULL /* --argv0 */

static __always_inline bool ld_opt_with_arg(u64 wh)
{
	return wh == 0x7ef3a12304d5d1eeULL || /* --library-path */
	       wh == 0x638c7b60c598ca5eULL || /* --inhibit-rpath */
	       wh == 0xe463e5822f01fdb6ULL || /* --audit */
	       wh == 0xc3509065c096f3d4ULL || /* --preload */
	       wh == 0x817bedb492f1c1eeULL || /* --glibc-hwcaps-prepend */
	       wh == 0xfd743853e492b652ULL;   /* --glibc-hwcaps-mask */
}

static __always_inline bool ld_opt_alone(u64 wh)
{
	return wh == 0x8eb3c4c22078a137ULL || /* --list */
	       wh == 0x55ffc1e6eb3978f2ULL || /* --verify */
	       wh == 0xfdd4226d1b382c9dULL || /* --inhibit-cache */
	       wh == 0x31379e40fdbba74aULL || /* --list-tunables */
	       wh == 0xaf4192b927be2d46ULL || /* --list-diagnostics */
	       wh == 0x5daaf2e4c8a8bf3cULL || /* --help */
	       wh == 0x7139422d517b1111ULL;   /* --version */
}

/* One byte of ld.so's own words, up to the first byte of PROGRAM (found) or an unknown option. */
static long ld_step(u32 i, struct ld_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || i >= w->len)
		return 1;
	u8 c = ev->args[i & (BRIDLE_ARGS_MAX - 1)];
	if (w->ld == LD_OPT) {
		if (c != 0) {
			if (w->lead < 2)
				w->lead = c == '-' ? w->lead + 1 : 3;
			if (w->lead == 3) {
				w->start = w->ws; /* no option: PROGRAM */
				return 1;
			}
			fnv(&w->wh, c);
			return 0;
		}
		if (w->lead != 2) {
			w->start = w->ws; /* "" or "-": PROGRAM, as ld.so takes it */
			return 1;
		}
		u64 wh = w->wh;
		w->wh = FNV_OFF;
		w->lead = 0;
		w->ws = i + 1;
		if (wh == LD_OPT_ARGV0) {
			w->ld = LD_NAME;
			w->ha = FNV_OFF;
		} else if (ld_opt_with_arg(wh)) {
			w->ld = LD_ARG;
		} else if (!ld_opt_alone(wh)) {
			return 1; /* PROGRAM not found: the argv walk sees no words */
		}
		return 0;
	}
	if (c != 0) {
		if (w->ld == LD_NAME) {
			if (c == '/')
				w->ha = FNV_OFF; /* compared by basename, as argv[0] is */
			else
				fnv(&w->ha, c);
		}
		return 0;
	}
	w->ld = LD_OPT;
	w->ws = i + 1;
	return 0;
}

static __always_inline void argv_rule(struct argv_walk *w, u64 h)
{
	struct bridle_argv_key k = { .policy = w->policy, .nargs = w->words, .hash = h };
	struct bridle_rule *r = bpf_map_lookup_elem(&exec_argv, &k);
	if (!r)
		return;
	if ((r->action & 0xff) == BRIDLE_DENY) {
		w->hit = *r;
		w->denied = 1;
	} else if (!w->allowed) {
		w->hit = *r;
		w->allowed = 1;
	}
}

static long argv_step(u32 i, struct argv_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	i += w->start;
	if (!ev || i >= w->len || w->words >= BRIDLE_ARGV_RULE_MAX)
		return 1;
	u8 c = ev->args[i & (BRIDLE_ARGS_MAX - 1)];
	if (w->words == 0) {
		if (c == '/')
			w->h = FNV_OFF; /* argv[0] is compared by basename */
		else if (c != 0) {
			fnv(&w->h, c);
			return 0;
		}
		if (c == '/')
			return 0;
	}
	if (c == 0) {
		if (w->words == 0)
			w->len0 = i;
		w->words++;
		argv_rule(w, w->h);
		if (!w->denied && w->hf != w->h)
			argv_rule(w, w->hf);
		if (!w->denied && w->ha != w->h && w->ha != w->hf)
			argv_rule(w, w->ha);
		if (w->denied)
			return 1;
	}
	fnv(&w->h, c);
	fnv(&w->hf, c);
	fnv(&w->ha, c);
	return 0;
}

/*
 * argv: prefix rules: one lookup per word count, on hashes of the copied argv bytes. argv[0] is chosen
 * by the caller (`exec -a`), so each prefix is also tried with the executed file's own name as word 0.
 * A program the dynamic loader maps is judged on its own argv, past ld.so's words (ld_step).
 */
static __always_inline bool decide_argv(struct decision *d, u32 policy, struct bridle_exec_ev *ev, u64 name_hash, u32 flags,
					bool via_loader)
{
	struct argv_walk w = { .h = FNV_OFF, .hf = name_hash, .ha = name_hash, .len = ev->args_len, .policy = policy };
	if (via_loader) { /* a constant: the exec hook, already near the verifier's limit, carries none of this */
		struct ld_walk l = { .wh = FNV_OFF, .ha = name_hash, .len = ev->args_len, .ld = LD_ARGV0, .start = 2 * BRIDLE_ARGS_MAX };
		bpf_loop(BRIDLE_ARGS_MAX, ld_step, &l, 0);
		/* no flags out of the loader pass: each one the checks below tested doubled the states after it */
		w.start = l.start;
		w.ha = l.ha;
	}
	bpf_loop(BRIDLE_ARGS_MAX, argv_step, &w, 0);
	if (w.denied)
		return consider(d, &w.hit, BRIDLE_RULE_ARGV);
	/*
	 * Before an allow: the words a deny rule needs may be the ones a long argv[0] (or the loader's words
	 * before the program's) pushed out of the copy, or follow a loader option bridle does not know (the
	 * loader maps no program without a word naming it: through the loader, no words is one of these).
	 */
	if ((flags & BRIDLE_CFG_ARGV_DENY) &&
	    (((ev->flags & BRIDLE_F_ARGS_TRUNC) && (w.words == 0 || w.len0 > BRIDLE_ARGV0_MAX)) || (via_loader && w.words == 0))) {
		struct bridle_rule unseen = { .action = BRIDLE_DENY, .rule_id = BRIDLE_RULE_ID_ARGV_UNSEEN };
		return consider(d, &unseen, BRIDLE_RULE_ARGV);
	}
	if (w.allowed)
		return consider(d, &w.hit, BRIDLE_RULE_ARGV);
	return false;
}

/* The policy a session is under (NULL while none is installed). */
static __always_inline struct bridle_policy_cfg *tag_policy(struct bridle_tag *tag)
{
	u32 policy = tag->policy;
	return bpf_map_lookup_elem(&policies, &policy);
}

#define OVERLAYFS_SUPER_MAGIC 0x794c7630

/*
 * The file an overlay file reads (the file itself when it is on no overlay). Deciders look at both: an
 * overlay a session mounts in a user and mount namespace of its own would otherwise show a denied file
 * under an identity and directories no rule knows, and a rule naming a path on an overlay (a container's
 * root) holds the overlay's identity. Regular files only (an overlay directory keeps other data); at
 * most two overlays deep (a deeper one keeps the identity it shows). An overlay file opened with O_PATH
 * opened nothing beneath it: it is its own real file.
 */
static __always_inline struct file *real_file(struct file *file)
{
	for (int i = 0; i < 2; i++) {
		struct inode *inode = BPF_CORE_READ(file, f_inode);
		if (BPF_CORE_READ(inode, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC ||
		    (BPF_CORE_READ(inode, i_mode) & BRIDLE_S_IFMT) != BRIDLE_S_IFREG)
			return file;
		void *pd = BPF_CORE_READ(file, private_data);
		struct file *real;
		if (bpf_core_type_exists(struct ovl_file))
			real = BPF_CORE_READ((struct ovl_file *)pd, realfile); /* Linux 6.13+ */
		else
			real = pd;
		if (!real)
			return file;
		file = real;
	}
	return file;
}

/*
 * Through an overlay a file has two identities: the overlay's file as opened (the overlay inode, its name
 * in the overlay's directory, the overlay's directories up through the overlay mount), which is what a
 * rule naming a path on the overlay holds, and the file beneath it (real_file: its inode and its real
 * directories), which is what a rule naming the lower or upper directory holds, and what an overlay a
 * session mounts over a denied file shows. Both are decided, deny winning. Any other file is its own
 * real file: one comparison, and the second look is skipped. `via_loader`: the program the dynamic loader
 * maps (its argv is ld.so's, decide_argv), a constant.
 */
static __always_inline void decide_as(struct decision *d, u32 policy, struct file *file, struct bridle_exec_ev *ev, bool via_loader)
{
	struct file *real = real_file(file);
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	struct bridle_policy_cfg *cfg = bpf_map_lookup_elem(&policies, &policy);
	u32 gen = cfg ? cfg->gen : 0xffffffff; /* no policy: no rule matches, fileless still denied */
	ev->gen = gen;
	d->verdict = BRIDLE_ALLOW;
	d->rule_kind = BRIDLE_RULE_DEFAULT;
	d->rule_id = cfg ? cfg->default_rule : 0;
	d->have_allow = 0;
	d->loader = 0;

	if (ev->nlink == 0) {
		u32 act = cfg ? cfg->fileless_action : BRIDLE_DENY;
		struct bridle_rule r = { .action = act, .rule_id = cfg ? cfg->fileless_rule : 0 };
		if (consider(d, &r, BRIDLE_RULE_FILELESS))
			return;
	}
	struct bridle_rule *id = ident_rule(&exec_ident, gen, BRIDLE_KEY_EXEC, ident_dev(inode), BPF_CORE_READ(inode, i_ino));
	d->loader = id && (id->action & BRIDLE_MARK_LOADER);
	if (consider(d, id, BRIDLE_RULE_PATH))
		return;
	if (real != file) {
		inode = BPF_CORE_READ(real, f_inode);
		id = ident_rule(&exec_ident, gen, BRIDLE_KEY_EXEC, ident_dev(inode), BPF_CORE_READ(inode, i_ino));
		d->loader |= id && (id->action & BRIDLE_MARK_LOADER);
		if (consider(d, id, BRIDLE_RULE_PATH))
			return;
	}
	/* the executed file's own name (fill_file read it): the hash argv: rules and name rules share */
	u64 name_hash = name_fnv(ev->dname, ev->dname_len);
	u32 flags = cfg ? cfg->flags : 0;
	if (flags & BRIDLE_CFG_EXEC_DENY) {
		if (consider(d, name_rule(gen, BRIDLE_KEY_EXEC_NAME, BPF_CORE_READ(file, f_path.dentry), name_hash), BRIDLE_RULE_PATH))
			return;
		if (real != file) {
			struct dentry *rd = BPF_CORE_READ(real, f_path.dentry);
			if (consider(d, name_rule(gen, BRIDLE_KEY_EXEC_NAME, rd, dname_hash(rd)), BRIDLE_RULE_PATH))
				return;
		}
	}
	if (decide_argv(d, gen, ev, name_hash, flags, via_loader))
		return;
	if (decide_dirs(d, gen, BRIDLE_KEY_EXEC, file, flags & BRIDLE_CFG_EXEC_DIR_DENY))
		return;
	if (real != file && decide_dirs(d, gen, BRIDLE_KEY_EXEC, real, flags & BRIDLE_CFG_EXEC_DIR_DENY))
		return;
	if (d->have_allow)
		return;
	d->rule_kind = BRIDLE_RULE_DEFAULT;
	d->rule_id = cfg ? cfg->default_rule : 0;
	d->verdict = (cfg && cfg->default_action == BRIDLE_DENY) ? BRIDLE_DENY : BRIDLE_ALLOW;
}

/* The exec decision on the file that will run (an execve). */
static __always_inline void decide(struct decision *d, u32 policy, struct file *file, struct bridle_exec_ev *ev)
{
	decide_as(d, policy, file, ev, false);
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

/* FNV-1a of the last component of ev->filename, of at most `max` bytes of it. */
struct name_walk {
	u64 h;    /* the last component (its first `max` bytes) */
	u64 full; /* the whole path */
	u32 len;
	u32 n; /* bytes of the current component hashed */
	u32 max;
};

static long basename_step(u32 i, struct name_walk *w)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev || i >= w->len)
		return 1;
	u8 c = ev->filename[i & (BRIDLE_NAME_MAX - 1)];
	fnv(&w->full, c);
	if (c == '/') {
		w->h = FNV_OFF;
		w->n = 0;
	} else if (w->n < w->max) {
		fnv(&w->h, c);
		w->n++;
	}
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
		fnv(&w->wh, c);
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
static __always_inline struct bridle_agent *agent_match(struct bridle_exec_ev *ev, struct task_struct *task, struct file *file)
{
	struct name_walk nw = { .h = FNV_OFF, .full = FNV_OFF, .len = ev->filename_len, .max = BRIDLE_NAME_MAX };
	bpf_loop(BRIDLE_NAME_MAX, basename_step, &nw, 0);
	u64 h = nw.h;
	struct bridle_agent *a = bpf_map_lookup_elem(&agent_names, &h);
	if (!a && ev->filename[0] == '/') /* a #! agent named by absolute path: by the whole path given (its file is released by now) */
		a = bpf_map_lookup_elem(&agent_names, &nw.full);
	if (!a) {
		struct bridle_ident_key k = { .dev = ident_dev(BPF_CORE_READ(file, f_inode)), .ino = ev->ino };
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

/* Starts an exec record in the scratch buffer: header cleared, the file's identity and name. */
static __always_inline struct bridle_exec_ev *exec_begin(u32 flags, const char *filename, struct file *file)
{
	struct bridle_exec_ev *ev = scratch_ev();
	if (!ev)
		return NULL;
	__builtin_memset(&ev->hdr, 0, sizeof(ev->hdr));
	ev->flags = flags;
	ev->agent_id = 0;
	ev->interp_len = 0;
	ev->args_len = 0;
	ev->filename_len = 0;
	ev->path_len = 0;
	if (filename) {
		long n = bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), filename);
		ev->filename_len = n > 0 ? n - 1 : 0;
	}
	fill_file(ev, file);
	return ev;
}

/*
 * The executed file's absolute path (path.h), for records that are sent: the name the caller gave (a
 * relative one, a symlink, a descriptor) says where it looked, this says what ran.
 */
static __always_inline void exec_path(struct bridle_exec_ev *ev, struct file *file)
{
	ev->path_len = file_path(file, ev->path);
}

/* Who acts: the process, its session, and the lineage keys of this image and its creator. */
static __always_inline void exec_who(struct bridle_exec_ev *ev, struct task_struct *task, struct bridle_tag *tag,
				     u64 now, u64 key, u64 parent_key, u32 parent_pid)
{
	ev->hdr.type = BRIDLE_EV_EXEC;
	ev->hdr.ktime = now;
	ev->session = tag->session;
	ev->policy = tag->policy;
	ev->key = key;
	ev->parent_key = parent_key;
	ev->parent_pid = parent_pid;
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->tid = BPF_CORE_READ(task, pid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = BPF_CORE_READ(task, cred, uid.val);
	ev->gid = BPF_CORE_READ(task, cred, gid.val);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
}

/* Records the decision; monitor mode turns deny into would_deny. Returns true when the exec must stop. */
static __always_inline bool exec_verdict(struct bridle_exec_ev *ev, struct decision *d, struct bridle_tag *tag)
{
	ev->rule_kind = d->rule_kind;
	ev->rule_id = d->rule_id;
	ev->verdict = d->verdict;
	if (d->verdict == BRIDLE_DENY && (tag->flags & BRIDLE_TAG_MONITOR))
		ev->verdict = BRIDLE_WOULD_DENY;
	return ev->verdict == BRIDLE_DENY;
}

static __always_inline u64 rb_flags(bool urgent)
{
	return rb_wake(&events, urgent);
}

/* Only the used part of argv travels: the record ends at args + args_len, rounded up to 8 bytes. */
static __always_inline void submit_exec(struct bridle_exec_ev *ev)
{
	u64 size = (__builtin_offsetof(struct bridle_exec_ev, args) + (u64)ev->args_len + 7) & ~7ULL;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	if (size < __builtin_offsetof(struct bridle_exec_ev, args))
		size = __builtin_offsetof(struct bridle_exec_ev, args);
	ev->hdr.size = size;
	if (bpf_ringbuf_output(&events, ev, size, rb_flags(ev->verdict != BRIDLE_ALLOW)))
		count_loss(BRIDLE_HOOK_EXEC);
}

#endif
