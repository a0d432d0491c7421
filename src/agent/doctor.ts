// What this kernel offers bridle, measured by trying it, and the exact fix for anything missing.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { surveyOrphans } from '../kernel/failclosed.js';
import { bridlePinDir } from '../kernel/bpffs.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
  /** bridle cannot run without it */
  required?: boolean;
}

export interface DoctorReport {
  checks: Check[];
  backend: 'bpf-lsm' | 'sigkill' | 'none';
  canRun: boolean;
}

function mounts(): { dev: string; dir: string; type: string }[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [dev, dir, type] = l.split(' ');
      return { dev: dev!, dir: dir!, type: type! };
    });
}

export function cgroup2Path(): string | undefined {
  return mounts().find((m) => m.type === 'cgroup2')?.dir;
}

function landlockAbi(): number {
  // ABI by kernel release (the landlock_create_ruleset version query needs a raw syscall).
  const [maj = 0, min = 0] = release().split('.').map((x) => parseInt(x, 10));
  const v = maj * 1000 + min;
  const table: [number, number][] = [[6015, 7], [6012, 6], [6010, 5], [6007, 4], [6002, 3], [5019, 2], [5013, 1]];
  return table.find(([k]) => v >= k)?.[1] ?? 0;
}

/** Exit status of the i386 probe program (anything else: it did not run as i386 code). */
const I386_STATUS = 42;

/** A minimal i386 ELF executable that exits I386_STATUS through `int $0x80`: does this kernel run 32-bit code? */
function i386Probe(): Buffer {
  const b = Buffer.alloc(96);
  b.write('\x7fELF', 0, 'latin1');
  b[4] = 1; // 32-bit
  b[5] = 1; // little-endian
  b[6] = 1; // ELF version
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(3, 18); // EM_386
  b.writeUInt32LE(1, 20);
  b.writeUInt32LE(0x08048000 + 84, 24); // entry: the code after the headers
  b.writeUInt32LE(52, 28); // program headers right after this header
  b.writeUInt16LE(52, 40);
  b.writeUInt16LE(32, 42);
  b.writeUInt16LE(1, 44);
  // one PT_LOAD of the whole file, read + execute
  for (const [off, v] of [[52, 1], [56, 0], [60, 0x08048000], [64, 0x08048000], [68, 96], [72, 96], [76, 5], [80, 0x1000]] as const) b.writeUInt32LE(v, off);
  Buffer.from([0xb8, 1, 0, 0, 0, 0xbb, I386_STATUS, 0, 0, 0, 0xcd, 0x80]).copy(b, 84); // mov $1,%eax; mov $42,%ebx; int $0x80
  return b;
}

/**
 * 32-bit system calls (IA-32 emulation: int $0x80, also from 64-bit processes; the x32 ABI) pass none of
 * the syscall tracepoints bridle's guards use: x86 leaves compat calls out of syscall trace events.
 * Whether this kernel takes them: an i386 program is run (refused with ENOEXEC when emulation is off,
 * which spawn's execvp then hands to /bin/sh: so only its own exit status says it ran), and the kernel's
 * configuration is read for x32.
 */
function compatSyscalls(): Check {
  let ia32: boolean | undefined;
  let why = '';
  const dir = mkdtempSync(join(tmpdir(), 'bridle-doctor-'));
  try {
    const exe = join(dir, 'i386-probe');
    writeFileSync(exe, i386Probe());
    chmodSync(exe, 0o755);
    const r = spawnSync(exe, [], { timeout: 5000, stdio: 'ignore' });
    if (r.status === I386_STATUS) ia32 = true;
    else if (r.error) why = r.error.message; // could not start it (a noexec temp dir): not an answer
    else if (r.signal) why = `killed by ${r.signal}`;
    else ia32 = false;
  } catch (err) {
    why = (err as Error).message;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  let config = '';
  try {
    config = existsSync('/proc/config.gz') ? gunzipSync(readFileSync('/proc/config.gz')).toString('latin1') : readFileSync(`/boot/config-${release()}`, 'latin1');
  } catch {
    // no configuration to read: x32 unknown
  }
  const x32 = /^CONFIG_X86_X32_ABI=y$/m.test(config);
  const parts = [
    ia32 === undefined ? `IA-32 emulation unknown (an i386 program: ${why})` : ia32 ? 'IA-32 emulation on (an i386 program runs)' : 'IA-32 emulation off (an i386 program does not run)',
    config ? (x32 ? 'x32 ABI built in' : 'no x32 ABI') : 'x32 ABI unknown (no kernel configuration to read)',
  ];
  const exposed = ia32 === true || x32;
  return {
    name: 'compat-syscalls',
    ok: ia32 === false && !x32,
    detail: `${parts.join('; ')}${exposed ? ': a session process can make 32-bit system calls, which pass none of the syscall tracepoints (credential files, mmap of denied code, ptrace, bpf(), socket families, unix identity, #! scripts)' : ''}`,
    fix: 'boot with ia32_emulation=off (Linux 6.7+), or use a kernel without CONFIG_IA32_EMULATION and CONFIG_X86_X32_ABI',
  };
}

export async function runDoctor(root: string): Promise<DoctorReport> {
  const checks: Check[] = [];
  const add = (c: Check) => checks.push(c);
  const isRoot = process.getuid?.() === 0;
  add({ name: 'root', ok: isRoot, detail: isRoot ? 'running as root' : `running as uid ${process.getuid?.()}`, fix: 'run bridle as root (sudo bridle …): loading BPF needs CAP_BPF and CAP_SYS_ADMIN', required: true });
  const btf = existsSync('/sys/kernel/btf/vmlinux');
  add({ name: 'btf', ok: btf, detail: btf ? '/sys/kernel/btf/vmlinux' : 'no kernel BTF', fix: 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distro kernel since 2021 has it)', required: true });
  // A kfunc is a function named in the kernel's BTF: its name is in the string section.
  const btfBytes = btf ? readFileSync('/sys/kernel/btf/vmlinux') : undefined;
  const kfunc = (name: string): boolean => !!btfBytes?.includes(`\0${name}\0`);
  const signalTask = kfunc('bpf_send_signal_task');
  add({
    name: 'signal-task',
    ok: signalTask,
    detail: signalTask
      ? 'bpf_send_signal_task: a session process the tag table has no room for, or one sharing its creator\'s descriptor table, is killed before it runs'
      : 'no bpf_send_signal_task: such processes are only reported (would_deny)',
    fix: 'needs Linux 6.13 or later',
  });
  const sockDestroy = kfunc('bpf_sock_destroy');
  add({
    name: 'sock-destroy',
    ok: sockDestroy,
    detail: sockDestroy
      ? 'bpf_sock_destroy: connections a session made before `bridle attach` or a new policy are closed when that policy denies them'
      : 'no bpf_sock_destroy: such connections are only reported (would_deny)',
    fix: 'needs Linux 6.5 or later',
  });
  const bpffs = mounts().some((m) => m.type === 'bpf' && m.dir === '/sys/fs/bpf');
  add({ name: 'bpffs', ok: bpffs, detail: bpffs ? 'mounted at /sys/fs/bpf' : 'not mounted (bridle mounts it when it starts: its pins keep sessions governed if bridle dies)', fix: 'mount -t bpf bpf /sys/fs/bpf' });
  if (bpffs && isRoot) {
    const orphans = surveyOrphans();
    const kept = orphans.kept.map((o) => `bridle ${o.pid} (${o.live} process(es), pins in ${bridlePinDir(o.instance)})`).join(', ');
    add({
      name: 'orphaned-sessions',
      ok: orphans.kept.length === 0,
      detail: kept
        ? `sessions of dead supervisors still governed by their pinned programs: ${kept}`
        : `no sessions of a dead bridle${orphans.removed.length ? ` (${orphans.removed.length} finished pin set(s) are removed when bridle next starts)` : ''}`,
      fix: 'they are removed once those processes exit and bridle starts again; to end them now, kill the processes (their pids are the keys of the tag table: bpftool map dump pinned <pins>/tags)',
    });
  }
  const cg = cgroup2Path();
  add({ name: 'cgroup2', ok: !!cg, detail: cg ? `mounted at ${cg}` : 'no cgroup v2 mount (network rules need it)', fix: 'mount -t cgroup2 none /sys/fs/cgroup/unified' });
  let lsmList = '';
  if (isRoot && !existsSync('/sys/kernel/security/lsm')) {
    // securityfs only exposes what the kernel already says; mounting it changes nothing else
    spawnSync('mount', ['-t', 'securityfs', 'securityfs', '/sys/kernel/security'], { stdio: 'ignore' });
  }
  try {
    lsmList = readFileSync('/sys/kernel/security/lsm', 'utf8').trim();
  } catch {
    /* securityfs not mounted */
  }
  add({ name: 'lsm-list', ok: lsmList !== '', detail: lsmList ? `active LSMs: ${lsmList}` : 'securityfs not mounted: cannot read the active LSM list', fix: 'mount -t securityfs securityfs /sys/kernel/security' });
  const abi = landlockAbi();
  const landlockActive = lsmList ? lsmList.split(',').includes('landlock') : undefined;
  add({ name: 'landlock', ok: abi > 0 && landlockActive !== false, detail: `Landlock ABI ${abi} by kernel release${landlockActive === false ? ', but not in the active LSM list' : ''}`, fix: 'boot with lsm=…,landlock' });

  let backend: DoctorReport['backend'] = 'none';
  if (isRoot && btf) {
    const { BpfObject, probe } = await import('../kernel/binding.js');
    const rb = probe.mapType('ringbuf');
    add({ name: 'ringbuf', ok: rb, detail: rb ? 'BPF ring buffer supported' : 'no BPF ring buffer', fix: 'needs Linux 5.8 or later', required: true });
    const obj = join(root, 'bpf', 'build', 'probe.bpf.o');
    const tryLoad = (prog: string): { ok: boolean; detail: string } => {
      if (!existsSync(obj)) return { ok: false, detail: `${obj} missing (run scripts/build.sh)` };
      const o = BpfObject.open(obj);
      try {
        for (const p of o.programs()) o.setAutoload(p, p === prog);
        o.load();
        return { ok: true, detail: 'loads' };
      } catch (err) {
        const e = err as { code?: string; message: string };
        return { ok: false, detail: `refused: ${e.code ?? e.message.split('\n')[0]}` };
      } finally {
        o.close();
      }
    };
    const tp = tryLoad('probe_tp_btf');
    add({ name: 'tracepoints', ok: tp.ok, detail: `tp_btf/sched_process_exec ${tp.detail}`, fix: 'needs Linux 5.5+ with BTF', required: true });
    const tramp = tryLoad('probe_fentry');
    add({ name: 'trampolines', ok: tramp.ok, detail: `fentry ${tramp.detail}`, fix: 'a kernel with CONFIG_BPF_JIT and BPF trampolines allowed (not refused by lockdown or a hypervisor policy)' });
    const lsm = tryLoad('probe_lsm');
    const lsmInList = lsmList.split(',').includes('bpf');
    add({ name: 'bpf-lsm', ok: lsm.ok, detail: `lsm/bprm_check_security ${lsm.detail}${lsmInList ? '; bpf is in the active LSM list' : ''}`, fix: lsmInList ? 'the kernel lists bpf but refuses LSM programs (trampolines unavailable): exec enforcement falls back to SIGKILL at exec' : 'boot with lsm=…,bpf (CONFIG_BPF_LSM=y) to block exec with EPERM instead of SIGKILL' });
    const { unixHooksAvailable } = await import('../kernel/net.js');
    const unixHook = unixHooksAvailable();
    add({
      name: 'unix-connect-hook',
      ok: unixHook,
      detail: unixHook
        ? 'cgroup/connect_unix and cgroup/sendmsg_unix load: network.unix rules refuse connects by name (EPERM); other names of a denied socket are caught by identity after connect (SIGKILL)'
        : 'no cgroup/connect_unix hook: network.unix rules are enforced only after a connect completes, by killing the process (SIGKILL)',
      fix: 'Linux 6.7 or later has the cgroup unix socket hooks',
    });
    add(compatSyscalls());
    backend = lsm.ok ? 'bpf-lsm' : tp.ok ? 'sigkill' : 'none';
  }
  const canRun = checks.every((c) => c.ok || !c.required) && backend !== 'none';
  return { checks, backend, canRun };
}
