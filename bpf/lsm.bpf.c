// SPDX-License-Identifier: GPL-2.0-only
/*
 * BPF-LSM exec backend, loaded only where the kernel accepts LSM programs (`bridle doctor` says). The
 * same decision as the tracepoint backend, made in bprm_check_security, returns -EPERM: the caller's
 * execve fails and the denied image never exists. bprm_check_security runs once per binary handler
 * round, so for a #! script it sees the script and then the interpreter that will run.
 * argv: rules need the new image's argv, which is not laid out yet here: they stay with the
 * sched_process_exec hook (SIGKILL), which also keeps reporting every allowed exec.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
char LICENSE[] SEC("license") = "GPL";

#include "sensor.h"

#define EPERM 1

SEC("lsm/bprm_check_security")
int BPF_PROG(bridle_lsm_exec, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct bridle_tag *tag = tag_of(tgid, task);
	if (!tag)
		return 0;
	struct file *file = BPF_CORE_READ(bprm, file);
	struct bridle_exec_ev *ev = exec_begin(BRIDLE_F_LSM_DENIED, BPF_CORE_READ(bprm, filename), file);
	if (!ev)
		return 0;

	struct decision d;
	decide(&d, tag->policy, file, ev);
	if (d.verdict != BRIDLE_DENY || (tag->flags & BRIDLE_TAG_MONITOR))
		return 0; /* allowed, or monitor mode: the exec tracepoint reports it */

	/* the image never exists: the record is keyed by now, its parent is the caller's current image */
	u64 now = bpf_ktime_get_boot_ns();
	exec_path(ev, file);
	exec_who(ev, task, tag, now, now, proc_key(tgid, task), tgid);
	exec_verdict(ev, &d, tag);
	submit_exec(ev);
	return -EPERM;
}
