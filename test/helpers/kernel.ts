// Shared test plumbing for real-kernel tests: a Supervisor per test with its events collected, and a
// check that nothing of bridle's stays loaded afterwards.
import { execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { BridleEvent, ExecEvent, ViolationEvent } from '../../src/events/types.js';
import { Supervisor } from '../../src/agent/supervisor.js';
import { waitFor } from '../../src/agent/run.js';
import { parsePolicy } from '../../src/policy/load.js';
import { reapOrphans, startTicks } from '../../src/kernel/failclosed.js';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'bridle');

/** The environment for bin/bridle child processes, without the test runner's own variables. */
export function binEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return env;
}

/** Ids of the BPF programs loaded in the kernel now. */
export function loadedProgramIds(): Set<number> {
  const out = execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' });
  return new Set((JSON.parse(out) as { id: number }[]).map((p) => p.id));
}

/** The kernel ids of the programs a supervisor loaded (from /proc/self/fdinfo of their fds). */
export function programIdsOf(sup: Supervisor): number[] {
  return sup.sensor.obj
    .programs()
    .map((name) => sup.sensor.obj.program(name).fd)
    .filter((fd) => fd >= 0)
    .map((fd) => Number(/prog_id:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? -1));
}

/** The violation events among `events` (of one kind, `what`, when given). */
export function violations(events: BridleEvent[], what?: string): ViolationEvent[] {
  return events.filter((e): e is ViolationEvent => e.type === 'violation' && (what === undefined || e.what === what));
}

export function tempDir(t: TestContext, prefix = 'bridle-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * Stops the supervisor's watches on the paths its policies' deny rules name (which compile the policy
 * again when one changes), so a test shows what the kernel decides from the rules it already holds.
 */
export function stopRuleWatches(sup: Supervisor): void {
  for (const ws of sup['ruleWatch'].values()) for (const w of ws) w.close();
}

export interface Harness {
  sup: Supervisor;
  events: BridleEvent[];
  /** Runs argv as a session; resolves with status, stdout and the session's events once it has ended. */
  run(argv: string[], opts?: { env?: Record<string, string> }): Promise<{ status: number; stdout: string; stderr: string; events: BridleEvent[] }>;
  execs(filter?: (e: ExecEvent) => boolean): ExecEvent[];
}

/** A Supervisor with `policyYaml` installed; closed (and checked for leftovers) when the test ends. */
export function harness(t: TestContext, policyYaml: string, tuning: Parameters<typeof Supervisor.open>[0] = {}): Harness {
  const sup = Supervisor.open(tuning);
  const ours = programIdsOf(sup);
  const events: BridleEvent[] = [];
  sup.engine.addSink({ emit: (e) => events.push(e) });
  t.after(async () => {
    await sup.close();
    // every program this supervisor loaded is gone from the kernel (others' programs may come and go);
    // some (tracing programs) are freed after a grace period, so give the kernel a moment
    let left: number[] = [];
    await waitFor(() => {
      const loaded = loadedProgramIds();
      left = ours.filter((id) => loaded.has(id));
      return left.length === 0;
    }, 2000);
    if (left.length) throw new Error(`BPF programs left loaded after the test: ids ${left.join(', ')}`);
  });
  sup.setPolicy(parsePolicy(policyYaml, 'test-policy.yaml'));
  return {
    sup,
    events,
    async run(argv, opts = {}) {
      const { held, session } = sup.run(argv, { stdio: 'pipe', env: opts.env ?? { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
      t.after(() => {
        if (held.child.exitCode === null && held.child.signalCode === null) held.child.kill('SIGKILL');
      });
      let stdout = '';
      let stderr = '';
      held.child.stdout?.on('data', (d) => (stdout += d));
      held.child.stderr?.on('data', (d) => (stderr += d));
      const { status } = await held.exited;
      await waitFor(() => sup.engine.sessions.get(session)?.ended !== undefined, 3000);
      const name = sup.engine.sessions.get(session)?.name;
      return { status, stdout, stderr, events: events.filter((e) => e.session === name) };
    },
    execs(filter = () => true) {
      return events.filter((e): e is ExecEvent => e.type === 'exec').filter(filter);
    },
  };
}

export function writeExecutable(path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o755 });
  return path;
}

/** Is `pid` a live process? */
export const alive = (pid: number): boolean => startTicks(pid) !== undefined;

/**
 * Cleanup of a test whose supervisor may leave pins behind, even when it fails: ends `procs` and the
 * session process (by pid), waits for it to go, then for the pins of supervisor `supervisorPid` to be reaped.
 */
export async function endThenReap(procs: ChildProcess[], session: number, supervisorPid: number | undefined): Promise<void> {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  if (session && alive(session)) process.kill(session, 'SIGKILL');
  await waitFor(() => !session || !alive(session), 5000);
  // children of the session process (a `sleep` of its loop) may take a moment more to go
  await waitFor(() => reapOrphans().kept.every((o) => o.pid !== supervisorPid), 3000);
}

/** A C fixture built with cc into the test's temp dir; undefined without a C compiler. */
export function ccHelper(t: TestContext, source: string): string | undefined {
  const out = join(tempDir(t, 'bridle-cc-'), source.replace(/^.*\//, '').replace(/\.c$/, ''));
  const cc = spawnSync('cc', ['-O2', '-o', out, source], { stdio: 'pipe' });
  return cc.status === 0 && existsSync(out) ? out : undefined;
}
