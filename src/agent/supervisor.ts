// The supervisor core shared by `bridle run` (standalone) and `bridle agent` (daemon): one sensor, one
// engine, policies by id, and the ways a session starts (run, attach; auto happens in the kernel).
import { existsSync, lstatSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { Engine } from './engine.js';
import { HOST, newSessionNumber, execId, sessionName } from './ids.js';
import type { Stamp } from './report.js';
import { spawnHeld, type HeldChild } from './spawn.js';
import { sessionEnv } from './env.js';
import { Sensor, type SensorOptions } from '../kernel/sensor.js';
import { setDumpable } from '../kernel/binding.js';
import { TAG_MONITOR } from '../kernel/layout.js';
import { compileExec, identString, type CompiledExec } from '../policy/compile.js';
import type { Policy } from '../policy/types.js';
import { NetGuard } from './netguard.js';
import { liveTagged, pinSupervisor, reapOrphans, saveState, stopAutoStart, unpinSupervisor, type ReapReport } from '../kernel/failclosed.js';

export const DEFAULT_POLICY_ID = 1;

/**
 * The directories whose changes can change what `path` leads to: the nearest one that exists on the way
 * (a missing path), the one holding what it leads to, and the one holding each symlink on the way.
 */
function watchDirs(path: string): string[] {
  let d = dirname(path);
  while (!existsSync(d) && d !== dirname(d)) d = dirname(d);
  const out = new Set([d]);
  try {
    out.add(dirname(realpathSync(path)));
  } catch {
    /* nothing there yet */
  }
  let prefix = '';
  for (const part of path.split('/').filter(Boolean)) {
    prefix += `/${part}`;
    try {
      if (lstatSync(prefix).isSymbolicLink()) out.add(dirname(prefix));
    } catch {
      break;
    }
  }
  return [...out];
}

export class Supervisor {
  readonly engine = new Engine();
  readonly warnings: string[] = [];
  /** Network reach (issue 3): absent when the host cannot attach cgroup programs (see warnings). */
  net: NetGuard | undefined;
  /** The pin directory that keeps this supervisor's links attached if it dies (failclosed.ts). */
  pins: string | undefined;
  /**
   * bridle's own files and directories (its TLS key and certificates, spool, state, an embedded
   * collector's store): every policy denies them to its sessions (builtin.bridle_files).
   */
  readonly bridleFiles: string[];
  private constructor(
    readonly sensor: Sensor,
    bridleFiles: string[],
    /** Whether this supervisor starts sessions by itself (agents:): `bridle agent`, not a standalone run. */
    private readonly autoStart: boolean,
  ) {
    this.bridleFiles = [...bridleFiles];
  }

  /**
   * `orphans`: the caller already reaped dead supervisors' pins (bridle agent does, after reading their
   * events); otherwise that happens here first, and what is kept is said in the warnings. `bridleFiles`:
   * bridle's own files, which no session may open whatever its policy (the caller knows where they are).
   * `autoStart: false`: the host policy's agents: entries are not installed (a standalone `bridle run`:
   * only `bridle agent` starts sessions by itself).
   */
  static open(tuning: Pick<SensorOptions, 'ringBytes' | 'maxPendingBytes' | 'tagsMax'> & { orphans?: ReapReport; bridleFiles?: string[]; autoStart?: boolean } = {}): Supervisor {
    // not dumpable: no core file of the supervisor (its memory holds what sessions are kept from), and its
    // /proc/<pid> files and ptrace need CAP_SYS_PTRACE
    setDumpable(false);
    let sup: Supervisor | undefined;
    let orphans = tuning.orphans;
    let reapError: string | undefined;
    if (!orphans) {
      try {
        orphans = reapOrphans(); // (no bpffs yet: nothing pinned, nothing reaped)
      } catch (err) {
        reapError = `dead supervisors' pins not reaped: ${(err as Error).message}`;
      }
    }
    const { orphans: _reaped, bridleFiles = [], autoStart = true, ...sensorTuning } = tuning;
    const sensor = Sensor.open({
      ...sensorTuning,
      onRecord: (r) => sup?.engine.handle(r),
      onOther: (buf) => sup?.net?.onRaw(buf),
      onWarning: (w) => sup?.warnings.push(w),
    });
    sup = new Supervisor(sensor, bridleFiles, autoStart);
    if (reapError) sup.warnings.push(reapError);
    sup.engine.backend = sensor.backend;
    try {
      sup.net = NetGuard.open(sensor, sup.engine, sup.warnings);
    } catch (err) {
      sup.warnings.push(`network rules not enforced: ${(err as Error).message}`);
    }
    try {
      sup.pins = pinSupervisor(sup.net ? [sensor, sup.net.net] : [sensor], sensor);
    } catch (err) {
      sup.warnings.push(`links not pinned, so sessions would run ungoverned if bridle died: ${(err as Error).message}`);
    }
    for (const o of orphans?.kept ?? []) {
      sup.warnings.push(
        `bridle ${o.pid} died with ${o.live} session process(es) alive: its pinned programs still govern them (${o.instance}); they are removed once those exit`,
      );
    }
    return sup;
  }

  /**
   * Compiles and installs `policy` as policy `id`. Compilation happens before anything is written, and
   * the sensor switches generations in one map update, so a failure leaves the old policy in force.
   * `keep`: the compile in force, when a path a deny rule names changed (watchRules): what it denied by
   * identity stays denied. `homes`: the HOME its sessions are given, when bridle does not choose it (a
   * `bridle run` client's): `~/` in credentials.files.deny stands for it too.
   */
  setPolicy(policy: Policy, id = DEFAULT_POLICY_ID, keep?: CompiledExec, homes?: string[]): void {
    // Only the host's own policy, under a supervisor that starts sessions (bridle agent), installs agents:
    // a per-session policy's entries (`bridle run --policy` through the agent, attach), or a standalone
    // run's, would take over auto-start for the whole host.
    const own = this.autoStart && id === DEFAULT_POLICY_ID ? policy : { ...policy, agents: [] };
    // a compile again (watchRules) keeps the homes the policy was applied with
    const given = homes ?? (keep ? this.sessionHomes.get(id) : undefined) ?? [];
    // the HOME run() gives a session (credentials.env.allow), which need not be any account's home
    const extraHomes = [...new Set([sessionEnv(policy).env.HOME, ...given].filter((h): h is string => !!h))];
    const compiled = compileExec(own, 0, id, (paths) => this.sensor.identify(paths), keep, { bridleFiles: this.bridleFiles, homes: extraHomes });
    const net = NetGuard.compile(policy, keep ? this.net?.net.compiled(id) : undefined);
    // unix sockets are checked by identity too: a daemon that restarts makes a new socket file
    const sockets = net.unix.filter((u) => !u.path.startsWith('@')).map((u) => u.path);
    const socketIds = this.sensor.identify(sockets);
    // Everything that can fail is written before either switch: the exec rules and agents: entries are
    // staged, then the network policy is applied (written, then switched), then the exec policy switches.
    const staged = this.sensor.stagePolicy(id, compiled);
    const netBefore = this.net?.net.compiled(id);
    let netGen: number | undefined;
    try {
      netGen = this.net?.apply(id, net);
    } catch (err) {
      staged.abort();
      throw err;
    }
    try {
      staged.commit(); // one map update; undone in full if it fails
    } catch (err) {
      // the network policy switched already: back to the one in force before
      if (netBefore && this.net) {
        try {
          this.net.apply(id, netBefore);
        } catch (e) {
          this.warnings.push(`policy ${id}: network rules not restored after a failed switch: ${(e as Error).message}`);
        }
      }
      throw err;
    }
    const gen = staged.gen;
    this.sessionHomes.set(id, given);
    const modeBefore = this.engine.policies.get(id)?.policy.mode;
    this.engine.installed({ id, policy, compiled }, gen, netGen !== undefined ? { gen: netGen, compiled: net } : undefined);
    // Running sessions follow the policy's mode (monitor or enforce): verdicts read it from each
    // process's tag. A session started with `--monitor` has a policy of its own, forced to monitor mode.
    // (Sessions started since the last apply took the mode in force: nothing to walk when it is the same.)
    if (modeBefore !== undefined && modeBefore !== policy.mode) {
      try {
        this.sensor.setPolicyTagFlag(id, TAG_MONITOR, policy.mode === 'monitor');
      } catch (err) {
        this.warnings.push(`policy ${id}: running sessions not switched to ${policy.mode} mode: ${(err as Error).message}`);
      }
    }
    // connections its sessions made under the policy this one replaces meet this one (a compile again
    // after a watched path changed has the same network rules: nothing to judge again)
    if (!keep && [...this.engine.sessions.values()].some((s) => s.policyId === id && s.ended === undefined)) this.net?.revisit();
    this.watchRules(id, policy, [...compiled.watched, ...sockets.map((path, i) => ({ path, ident: identString(socketIds[i]) }))]);
    // a successor reading our pinned records after a crash names their rules from this
    this.persistState();
  }

  /**
   * What a successor reading our pinned records after a crash needs: the rule tables by generation, and
   * how many of the kernel's drops we reported (it reports the rest).
   */
  private persistState(): void {
    if (!this.pins) return;
    try {
      saveState(this.pins, { ...this.engine.generations(), lost: this.lostSeen });
    } catch (err) {
      this.warnings.push(`cannot save the rule tables beside the pins: ${(err as Error).message}`);
    }
  }

  private ruleWatch = new Map<number, FSWatcher[]>();
  /** The homes each policy was last applied with (setPolicy's `homes`). */
  private sessionHomes = new Map<number, string[]>();

  /**
   * Deny rules stand for paths, and the kernel holds what each path led to when it was compiled (by
   * identity, and files by name in their directory). What those miss: a credentials path that does not
   * exist yet (`~/.aws` before `aws configure`), a denied directory replaced by another, a symlink pointed
   * elsewhere, a file made later in a credentials directory (whose files are entered by identity, so that a
   * hard link elsewhere is the same file). Watch the directory holding each path (or the nearest one that
   * exists on the way), and credentials directories throughout; when a path leads somewhere else than
   * when compiled, a missing path gets a step closer (its directory may now take a name rule), or a
   * credentials directory gains or loses files, the policy is compiled and applied again (which moves
   * the watches), within moments rather than at the next reload.
   */
  private watchRules(id: number, policy: Policy, watched: CompiledExec['watched']): void {
    for (const w of this.ruleWatch.get(id) ?? []) w.close();
    this.ruleWatch.delete(id);
    if (!watched.length || this.closing) return;
    const seen = new Map(watched.map((w) => [w.path, watchDirs(w.path).join('\0')]));
    let timer: NodeJS.Timeout | undefined;
    let contents = false; // a credentials directory's contents changed
    const later = () => {
      timer ??= setTimeout(check, 50).unref();
    };
    const check = () => {
      timer = undefined;
      if (this.closing || this.engine.policies.get(id)?.policy !== policy) return; // replaced meanwhile
      const now = this.sensor.identify(watched.map((w) => w.path));
      const moved = [...seen].some(([p, d]) => watchDirs(p).join('\0') !== d); // a missing path got closer, a link moved
      if (!contents && !moved && watched.every((w, i) => identString(now[i]) === w.ident)) return;
      try {
        this.setPolicy(policy, id, this.engine.policies.get(id)?.compiled);
        this.watchErrors.delete(id);
      } catch (err) {
        // the policy in force stays (it denies all it did); said once per distinct failure
        const msg = `policy ${id} not applied again after a path it names changed: ${(err as Error).message}`;
        if (this.watchErrors.get(id) !== msg) this.warnings.push(msg);
        this.watchErrors.set(id, msg);
      }
    };
    const watchers: FSWatcher[] = [];
    const add = (path: string, opts: { recursive?: boolean }, onEvent: (type: string) => void) => {
      try {
        const w = watch(path, { persistent: false, ...opts }, onEvent);
        w.on('error', () => w.close());
        watchers.push(w);
      } catch {
        /* cannot watch it (gone, no permission): covered at the next reload */
      }
    };
    for (const dir of new Set([...seen.values()].flatMap((d) => d.split('\0')))) add(dir, {}, later);
    for (const w of watched) {
      if (!w.within) continue;
      // files appearing, going or moving in a credentials directory (not writes to them)
      add(w.path, { recursive: true }, (type) => {
        if (type !== 'rename') return;
        contents = true;
        later();
      });
    }
    this.ruleWatch.set(id, watchers);
    later(); // a change between the compile and these watches
  }

  private watchErrors = new Map<number, string>();

  /** Policy ids some live process is tagged with (its session is not over). */
  policiesInUse(): Set<number> {
    return this.sensor.policiesInUse();
  }

  /**
   * Removes per-session policy `id` from the kernel and from here (its rule watches, its homes). Only for
   * a policy no live process is tagged with (policiesInUse): a session left without its policy would be
   * decided by none. The engine keeps naming the records it decided by their generation.
   */
  removePolicy(id: number, inUse = this.policiesInUse()): void {
    if (id === DEFAULT_POLICY_ID) throw new Error('the host policy is never removed');
    if (inUse.has(id)) throw new Error(`policy ${id} still governs live processes`);
    for (const w of this.ruleWatch.get(id) ?? []) w.close();
    this.ruleWatch.delete(id);
    this.watchErrors.delete(id);
    this.sessionHomes.delete(id);
    this.net?.net.removePolicy(id);
    this.sensor.removePolicy(id);
    this.engine.policies.delete(id);
  }

  policy(id = DEFAULT_POLICY_ID): Policy | undefined {
    return this.engine.policies.get(id)?.policy;
  }

  private flags(id: number): number {
    return this.engine.policies.get(id)?.policy.mode === 'monitor' ? TAG_MONITOR : 0;
  }

  /** Starts argv as a new session: the child is tagged before it execs the command. */
  run(argv: string[], opts: { policyId?: number; stdio?: 'inherit' | 'pipe'; env?: Record<string, string> } = {}): { held: HeldChild; session: bigint } {
    const id = opts.policyId ?? DEFAULT_POLICY_ID;
    const policy = this.engine.policies.get(id)?.policy;
    if (!policy) throw new Error(`no policy ${id} loaded`);
    const env = opts.env ?? sessionEnv(policy).env;
    const held = spawnHeld(argv, env, opts.stdio ?? 'inherit');
    const session = newSessionNumber();
    try {
      const me = this.sensor.processes().find((p) => p.pid === held.pid);
      if (!me) throw new Error(`session process ${held.pid} vanished before it could be tagged`);
      this.engine.expect(session, 'run', id, held.pid);
      this.sensor.tag(session, id, this.flags(id), [{ pid: held.pid, start: me.start }]);
    } catch (err) {
      held.child.kill('SIGKILL');
      throw err;
    }
    held.release();
    return { held, session };
  }

  /** Tags a child that a `bridle run` client holds at its gate (the client releases it afterwards). */
  tagHeld(pid: number, policyId: number): bigint {
    const me = this.sensor.processes().find((p) => p.pid === pid);
    if (!me) throw new Error(`no process ${pid}`);
    if (this.sensor.tagOf(pid)) throw new Error(`process ${pid} is already in a session`);
    const session = newSessionNumber();
    this.engine.expect(session, 'run', policyId, pid);
    this.sensor.tag(session, policyId, this.flags(policyId), [{ pid, start: me.start }]);
    return session;
  }

  /**
   * Tags a running process and all its descendants. Top-down: a parent is tagged before its children
   * are listed, so a child forked meanwhile inherits the tag in the kernel.
   */
  attach(pid: number, policyId = DEFAULT_POLICY_ID): { session: bigint; pids: number[] } {
    if (!this.engine.policies.get(policyId)) throw new Error(`no policy ${policyId} loaded`);
    const procs = this.sensor.processes();
    const root = procs.find((p) => p.pid === pid);
    if (!root) throw new Error(`no process ${pid} (it may have exited)`);
    if (pid === process.pid) throw new Error('refusing to attach bridle to itself');
    const existing = this.sensor.tagOf(pid);
    if (existing) throw new Error(`process ${pid} is already in session ${existing.session.toString(16)}`);
    const session = newSessionNumber();
    const flags = this.flags(policyId);
    const tagged: number[] = [];
    // The root's image as the kernel keys it (its last exec, when the sensor saw one), which its children's
    // parent_exec_id and its own exit name; its start time only when it predates the sensor.
    const img = this.sensor.imageOf(pid);
    const rootKey = img && img.start === root.start ? img.key : root.start;
    this.engine.startSession(
      { session, origin: 'attach', policyId, rootExecId: execId(pid, rootKey), rootPid: pid },
      { path: root.comm, ppid: root.ppid, uid: root.uid },
    );
    let frontier = [root];
    const seen = new Set<number>();
    while (frontier.length) {
      this.sensor.tag(session, policyId, flags, frontier.map((p) => ({ pid: p.pid, start: p.start })));
      for (const p of frontier) {
        tagged.push(p.pid);
        seen.add(p.pid);
      }
      const now = this.sensor.processes();
      const parents = new Set(frontier.map((p) => p.pid));
      frontier = now.filter((p) => parents.has(p.ppid) && !seen.has(p.pid) && p.pid !== process.pid);
    }
    // what the tree connected to before it was tagged meets its policy now
    this.net?.revisit();
    return { session, pids: tagged };
  }

  /** Who a local process is, from the kernel: for events a session process reports (tool calls). */
  stampOf(pid: number, uid: number): Stamp {
    const tag = this.sensor.tagOf(pid);
    const img = this.sensor.imageOf(pid);
    return {
      host: HOST,
      session: tag ? sessionName(tag.session) : '',
      exec_id: img ? execId(pid, img.key) : '',
      parent_exec_id: img ? execId(img.parentPid, img.parentKey) : '',
      pid,
      ppid: img?.parentPid ?? 0,
      uid,
    };
  }

  private lostSeen: Record<string, number> = {};

  /**
   * Emits a `loss` event for every hook whose ring-buffer reservations failed since the last call, so a
   * gap in the record is itself on the record. Returns the new losses by hook.
   */
  reportLoss(): Record<string, number> {
    const now = this.sensor.lost();
    if (this.net) now.network = this.net.net.lost();
    const fresh: Record<string, number> = {};
    for (const [hook, n] of Object.entries(now)) {
      const d = n - (this.lostSeen[hook] ?? 0);
      if (d > 0) fresh[hook] = d;
    }
    this.lostSeen = now;
    for (const [where, count] of Object.entries(fresh)) {
      this.engine.emit({
        type: 'loss', ts: new Date().toISOString(), host: HOST, session: '', exec_id: '', parent_exec_id: '',
        pid: process.pid, ppid: process.ppid, uid: 0, where: `kernel:${where}`, count,
      });
    }
    if (Object.keys(fresh).length) this.persistState();
    return fresh;
  }

  private closing = false;

  /**
   * Detaches everything, unless processes of its sessions are still alive: then the pins stay, so those
   * go on being governed in the kernel until they exit (failclosed.ts), and no new session starts.
   * Returns how many processes are left governed that way.
   */
  async close(): Promise<number> {
    this.closing = true;
    for (const ws of this.ruleWatch.values()) for (const w of ws) w.close();
    this.ruleWatch.clear();
    let left = 0;
    if (this.pins && !this.sensor.isClosed) {
      left = liveTagged(this.sensor.map('tags'));
      if (left > 0) {
        stopAutoStart(this.sensor);
        // what the kernel dropped so far is ours to report; a successor reports what it drops from now on
        this.reportLoss();
      }
      // Unpinned first otherwise: the links then detach as they are closed.
      else unpinSupervisor(this.pins);
    }
    this.pins = undefined;
    await this.net?.close();
    await this.sensor.close();
    return left;
  }
}
