// SPDX-License-Identifier: GPL-2.0-only
/*
 * Feature probes for `bridle doctor` and backend selection: each program is loaded on its own (the
 * others' autoload switched off), so the result says exactly which program type this kernel accepts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* BPF-LSM: the exec hook bridle would use to return EPERM instead of killing. */
SEC("lsm/bprm_check_security")
int BPF_PROG(probe_lsm, struct linux_binprm *bprm, int ret)
{
	return ret;
}

/* BPF trampolines (fentry): needed by LSM programs too. */
SEC("fentry/do_exit")
int BPF_PROG(probe_fentry, long code)
{
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(probe_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}
