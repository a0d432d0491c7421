// Time spent in BPF programs, counted by the kernel (kernel.bpf_stats_enabled): other load on the machine
// does not stretch it the way it stretches wall time. Counting itself costs a little, so benchmarks time
// their rounds without it and count in a pass of their own.
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';

const STATS = '/proc/sys/kernel/bpf_stats_enabled';

export interface RunTime {
  ns: number;
  runs: number;
}

/** Run time (ns) and runs of the BPF programs this process holds, from /proc/self/fdinfo (each program once). */
export function bpfRunTime(): RunTime {
  const seen = new Set<string>();
  let ns = 0;
  let runs = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    let info: string;
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:bpf-prog') continue;
      info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const field = (k: string): number => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(info)?.[1] ?? 0);
    const id = String(field('prog_id'));
    if (seen.has(id)) continue;
    seen.add(id);
    ns += field('run_time_ns');
    runs += field('run_cnt');
  }
  return { ns, runs };
}

/** What the programs held by this process ran while `job` ran; throws when the kernel counted nothing. */
export async function measureBpf(job: () => Promise<unknown> | unknown): Promise<RunTime> {
  const t0 = bpfRunTime();
  await job();
  const t1 = bpfRunTime();
  if (t1.runs === t0.runs) throw new Error(`no BPF program run counted (${STATS} not honoured?)`);
  return { ns: t1.ns - t0.ns, runs: t1.runs - t0.runs };
}

/** Runs `body` with the kernel counting BPF run time, restoring the setting however this process ends. */
export async function withBpfStats<T>(body: () => Promise<T>): Promise<T> {
  const before = readFileSync(STATS, 'utf8').trim();
  const restore = (): void => writeFileSync(STATS, before);
  const onSignal = (sig: NodeJS.Signals): void => {
    restore();
    process.kill(process.pid, sig);
  };
  process.once('exit', restore);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    writeFileSync(STATS, '1');
    return await body();
  } finally {
    restore();
    process.off('exit', restore);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
