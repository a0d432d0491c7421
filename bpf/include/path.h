/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A file's absolute path as the kernel resolves it, built in BPF from its dentries and mounts (this kernel
 * gives tracepoint programs no bpf_d_path): what an exec event records as the program that ran, whatever
 * name the caller gave (a relative name, a symlink, a descriptor given to execveat). The walk goes up the
 * dentries to each mount's root and on from where that mount is mounted, to the root of the mount tree,
 * so a path is the one a process in the initial mount namespace would use (a container's or a chroot's
 * files show where they are on the host).
 */
#ifndef BRIDLE_PATH_H
#define BRIDLE_PATH_H

#include "bridle.h"

#define BRIDLE_PATH_STEPS 64  /* directories walked at most; a deeper path is cut like a long one */
#define BRIDLE_PATH_COMP 255  /* NAME_MAX */
#define PATH_BUF 1024         /* scratch: the path is built backwards in [off, PATH_HALF) */
#define PATH_HALF 512

struct path_scratch {
	char buf[PATH_BUF];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct path_scratch);
} path_scratch SEC(".maps");

struct path_walk {
	struct dentry *dentry;
	struct mount *mnt;
	struct path_scratch *s;
	u32 off;  /* where the path built so far starts */
	u32 cut;  /* a name did not fit, or the steps ran out */
	u32 done; /* reached the root of the mount tree */
};

static long path_step(u32 i, struct path_walk *w)
{
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *mroot = BPF_CORE_READ(mnt, mnt.mnt_root);
	struct dentry *up = BPF_CORE_READ(dentry, d_parent);
	if (dentry == mroot || up == dentry) {
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt || dentry != mroot) {
			/* the root of the tree; or a dentry cut off from its tree (a file opened by handle) */
			w->done = parent == mnt && dentry == mroot;
			return 1;
		}
		/* the root of a mount: on from where it is mounted */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = parent;
		return 0;
	}
	u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	/* "/name", with 3 bytes kept free in front for a "..." and the whole at most BRIDLE_PATH_MAX - 1 */
	if (len > BRIDLE_PATH_COMP || w->off < len + 5) {
		w->cut = 1;
		return 1;
	}
	u32 off = w->off - len - 1;
	struct path_scratch *s = w->s;
	s->buf[off & (PATH_HALF - 1)] = '/';
	bpf_probe_read_kernel(&s->buf[(off + 1) & (PATH_HALF - 1)], len & BRIDLE_PATH_COMP, name);
	w->off = off;
	w->dentry = up;
	return 0;
}

/*
 * Writes `file`'s absolute path into out[0..BRIDLE_PATH_MAX) (not NUL-terminated) and returns its length,
 * or 0 when there is none to give. A path that did not fit, or that no walk could finish (more than
 * BRIDLE_PATH_STEPS deep, or cut off from its tree), starts with "..." before the part that was found.
 */
static __always_inline u32 file_path(struct file *file, char *out)
{
	u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&path_scratch, &zero);
	if (!s || !file)
		return 0;
	struct vfsmount *vmnt = BPF_CORE_READ(file, f_path.mnt);
	struct path_walk w = {
		.dentry = BPF_CORE_READ(file, f_path.dentry),
		.mnt = container_of(vmnt, struct mount, mnt),
		.s = s,
		.off = PATH_HALF,
	};
	bpf_loop(BRIDLE_PATH_STEPS, path_step, &w, 0);
	u32 off = w.off;
	if (off > PATH_HALF)
		return 0;
	if (off == PATH_HALF) {
		if (!w.done)
			return 0;
		out[0] = '/'; /* the root itself */
		return 1;
	}
	if (!w.done && off >= 3) {
		off -= 3;
		s->buf[off & (PATH_HALF - 1)] = '.';
		s->buf[(off + 1) & (PATH_HALF - 1)] = '.';
		s->buf[(off + 2) & (PATH_HALF - 1)] = '.';
	}
	u32 len = PATH_HALF - off;
	if (len > BRIDLE_PATH_MAX - 1)
		return 0; /* cannot happen: every name leaves room (a masked length of 512 would copy nothing) */
	bpf_probe_read_kernel(out, len & (BRIDLE_PATH_MAX - 1), &s->buf[off & (PATH_HALF - 1)]);
	return len;
}

#endif
