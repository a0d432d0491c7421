// Shared test plumbing for real-kernel tests: a Supervisor per test with its events collected, and a
// check that nothing of bridle's stays loaded afterwards.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { BridleEvent, ExecEvent } from '../../src/events/types.js';
import { Supervisor } from '../../src/agent/supervisor.js';
import { waitFor } from '../../src/agent/run.js';
import { parsePolicy } from '../../src/policy/load.js';

export const BIN = join(import.meta.dirname, '..', '..', 'bin', 'bridle');

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

export function tempDir(t: TestContext, prefix = 'bridle-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export interface Harness {
  sup: Supervisor;
  events: BridleEvent[];
  /** Runs argv as a session; resolves with status, stdout and the session's events once it has ended. */
  run(argv: string[], opts?: { env?: Record<string, string> }): Promise<{ status: number; stdout: string; stderr: string; events: BridleEvent[] }>;
  execs(filter?: (e: ExecEvent) => boolean): ExecEvent[];
}

/** A Supervisor with `policyYaml` installed; closed (and checked for leftovers) when the test ends. */
export function harness(t: TestContext, policyYaml: string): Harness {
  const sup = Supervisor.open();
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
