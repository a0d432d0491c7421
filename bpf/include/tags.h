/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The tag table, process table and ring-buffer wakeup rule every bridle object shares (process.bpf.c and lsm.bpf.c through
 * sensor.h, net.bpf.c directly): the loader creates them once, in the process object, and makes the
 * others reuse them, so the definitions here are the single source of their shape.
 */
#ifndef BRIDLE_TAGS_H
#define BRIDLE_TAGS_H

#include "bridle.h"

#define FNV_OFF 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

/* One FNV-1a 64 step: every name hash in the programs (and fnv1a in src/policy) is made of these. */
static __always_inline void fnv(u64 *h, u8 c)
{
	*h ^= c;
	*h *= FNV_PRIME;
}

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

/*
 * Ring-buffer wakeups: waking the consumer for every record costs a context switch (on a VM, a trap to
 * the hypervisor) per exec or connect. Routine records are committed silently and collected on the
 * consumer's poll timer (50 ms); denials and violations, and any record once a backlog builds up, wake
 * it at once.
 */
#define BRIDLE_RB_BACKLOG (256 << 10)
static __always_inline u64 rb_wake(void *rb, bool urgent)
{
	if (urgent || bpf_ringbuf_query(rb, BPF_RB_AVAIL_DATA) > BRIDLE_RB_BACKLOG)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* The common header of a ring-buffer record, stamped now. */
static __always_inline void hdr_fill(struct bridle_hdr *h, u16 type, u32 size)
{
	h->type = type;
	h->flags = 0;
	h->size = size;
	h->ktime = bpf_ktime_get_boot_ns();
}

#endif
