import type { Command } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle doctor [--json]

Checks what this kernel offers bridle by trying it: kernel BTF, bpffs, the cgroup v2 mount, the
tracepoints the sensor uses, BPF ring buffers, BPF trampolines, BPF-LSM (active and loadable), the
unix-socket connect hook, the Landlock ABI, and whether 32-bit system calls exist (they pass no syscall
tracepoint, so a session could use them to get past bridle's guards). Prints the enforcement backend:
  bpf-lsm   exec denied with EPERM in bprm_check_security (where the kernel allows LSM programs)
  sigkill   exec decided at sched_process_exec; a denied image is killed before its first instruction
For anything missing it prints the exact fix. Exits 1 when bridle cannot run here.

Flags:
  --json    print the report as JSON
`;

const doctor: Command = {
  summary: 'check kernel features and say which enforcement backend bridle will use',
  help,
  async run(argv) {
    const { flags } = parseFlags(argv, { json: 'boolean' });
    const { runDoctor } = await import('../../agent/doctor.js');
    const { ROOT } = await import('../../kernel/sensor.js');
    const r = await runDoctor(ROOT);
    if (flags.json) {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    } else {
      for (const c of r.checks) {
        process.stdout.write(`${c.ok ? 'ok  ' : c.required ? 'FAIL' : 'no  '} ${c.name.padEnd(18)} ${c.detail}\n`);
        if (!c.ok && c.fix) process.stdout.write(`     ${''.padEnd(18)} fix: ${c.fix}\n`);
      }
      process.stdout.write(`\nenforcement backend: ${r.backend}\n${r.canRun ? 'bridle can run here' : 'bridle cannot run here: fix the FAIL lines above'}\n`);
    }
    return r.canRun ? 0 : 1;
  },
};
export default doctor;
