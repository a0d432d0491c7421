// `bridle agent`: the supervisor as a daemon. One sensor for the host, the default policy (whose agents:
// start sessions by themselves), per-session policies for `bridle run --policy`, the control socket,
// SIGHUP to reload. An invalid policy on reload is reported and the one in force stays.
import { resolve } from 'node:path';
import type { BridleEvent, EventSink } from '../events/types.js';
import { loadPolicyFile } from '../policy/load.js';
import type { Policy } from '../policy/types.js';
import { PolicyError } from '../policy/yamlctx.js';
import { DEFAULT_REPORT_SOCKET, serveReports } from './report.js';
import { serveControl, type ControlServer, type Handler, type Request } from './control.js';
import { HOST } from './ids.js';
import { sessionName } from './ids.js';
import { DEFAULT_POLICY_ID, Supervisor } from './supervisor.js';
import { Adopter } from './adopt.js';
import { BPFFS, bridlePinDir } from '../kernel/bpffs.js';
import { taggedByDeadSupervisor } from '../kernel/failclosed.js';

export interface AgentOptions {
  policyFile: string;
  socket: string;
  /** Where session processes (the MCP proxy) report tool calls; identity is stamped from the kernel. */
  reportSocket?: string;
  sinks: EventSink[];
  log: (msg: string) => void;
  /**
   * bridle's own files and directories (TLS key, certificates, spool, state): denied to every session,
   * whatever its policy (builtin.bridle_files).
   */
  bridleFiles?: string[];
}

export class Agent {
  private server: ControlServer | undefined;
  private byDigest = new Map<string, number>();
  private nextId = DEFAULT_POLICY_ID + 1;
  private lossTimer: NodeJS.Timeout | undefined;
  private reapTimer: NodeJS.Timeout | undefined;
  private reports: { close(): Promise<void> } | undefined;
  private constructor(
    readonly sup: Supervisor,
    private o: AgentOptions,
    private readonly adopter: Adopter,
  ) {}

  static async start(o: AgentOptions): Promise<Agent> {
    const policy = loadPolicyFile(o.policyFile); // throws PolicyError before anything is loaded
    // What sessions of a dead bridle did while nothing read their events comes first (adopt.ts); the
    // pins of those that are over go once their events are delivered.
    const adopter = new Adopter(o.sinks, o.log);
    const orphans = await adopter.sweep();
    let sup: Supervisor;
    try {
      sup = Supervisor.open({ orphans, bridleFiles: o.bridleFiles ?? [] });
    } catch (err) {
      await adopter.close();
      throw err;
    }
    const a = new Agent(sup, o, adopter);
    try {
      sup.engine.keepTrees = false; // a daemon runs for weeks: no per-session trees
      for (const s of o.sinks) sup.engine.addSink(s);
      sup.setPolicy(policy, DEFAULT_POLICY_ID);
      for (const w of sup.warnings) o.log(`warning: ${w}`);
      a.emitPolicy('loaded', policy);
      a.server = await serveControl(o.socket, a.handler());
      // sessions cannot even connect to it (the socket also refuses tagged peers by SO_PEERCRED)
      sup.net?.net.protectSocket(o.socket);
      a.reports = await serveReports(o.reportSocket ?? DEFAULT_REPORT_SOCKET, (pid, uid) => sup.stampOf(pid, uid), (ev) => sup.engine.emit(ev));
      // losses in the kernel become events within a second
      a.lossTimer = setInterval(() => sup.reportLoss(), 1000);
      a.lossTimer.unref();
      // dead supervisors (failclosed.ts): their events are read, their pins go once their sessions are over
      a.reapTimer = setInterval(() => void a.reap(), 60_000);
      a.reapTimer.unref();
    } catch (err) {
      await sup.close();
      await adopter.close();
      throw err;
    }
    return a;
  }

  /** Reads the events of dead supervisors, and removes their pins once their sessions are over. */
  private async reap(): Promise<void> {
    try {
      for (const i of (await this.adopter.sweep()).removed) this.o.log(`removed the pins of a dead bridle (${i}): its sessions are over`);
    } catch (err) {
      this.o.log(`cannot check for pins of dead bridle supervisors: ${(err as Error).message}`);
    }
  }

  private emitPolicy(action: 'loaded' | 'rejected', p: Policy | undefined, detail?: string): void {
    this.sup.engine.emit({
      type: 'policy',
      ts: new Date().toISOString(),
      host: HOST,
      session: '',
      exec_id: '',
      parent_exec_id: '',
      pid: process.pid,
      ppid: process.ppid,
      uid: 0,
      action,
      policy: p?.name ?? '',
      ...(detail ? { detail } : {}),
    });
  }

  /** Reloads the default policy; on any error the policy in force stays and the error is returned. */
  reload(file = this.o.policyFile): { ok: boolean; error?: string } {
    try {
      const p = loadPolicyFile(file);
      this.sup.setPolicy(p, DEFAULT_POLICY_ID);
      this.o.policyFile = file;
      this.emitPolicy('loaded', p);
      this.o.log(`policy ${p.name} (${file}) is in force`);
      return { ok: true };
    } catch (err) {
      const msg = (err as Error).message;
      this.emitPolicy('rejected', undefined, msg);
      this.o.log(`policy ${file} rejected, the previous policy stays in force:\n${msg}`);
      return { ok: false, error: msg };
    }
  }

  /**
   * The policy id for a session policy file: one id per distinct policy text and mode, and, for a policy
   * with `~/` in credentials.files.deny (which stands for the HOME its sessions are given too), per HOME.
   * A new id first frees the ids no live process is tagged with any more (freeIdle): a CI giving every job
   * a HOME of its own, or a policy file edited between runs, does not fill the kernel's policy table
   * (256 entries) with policies no session uses.
   */
  private policyIdFor(file: string, monitor = false, home?: string): number {
    let p = loadPolicyFile(file);
    if (monitor) p = { ...p, mode: 'monitor' };
    const homeBound = home !== undefined && p.credentials.files.deny.some((e) => e.startsWith('~/'));
    const key = `${p.sha256}:${p.mode}:${homeBound ? home : ''}`;
    const have = this.byDigest.get(key);
    if (have) return have;
    this.freeIdle();
    const id = this.nextId++;
    this.sup.setPolicy(p, id, undefined, homeBound ? [home] : []);
    this.byDigest.set(key, id);
    if (p.agents.length) {
      // Supervisor.setPolicy leaves them out: auto-start is the host's, set by the agent's own policy
      this.o.log(`policy ${p.name} (${file}): its agents: entries are ignored (only the policy bridle agent runs with starts sessions by itself)`);
    }
    return id;
  }

  /** Removes the per-session policies whose sessions are over (no live process is tagged with them). */
  private freeIdle(): void {
    const inUse = this.sup.policiesInUse();
    for (const [key, id] of this.byDigest) {
      if (inUse.has(id)) continue;
      try {
        this.sup.removePolicy(id, inUse);
        this.byDigest.delete(key);
      } catch (err) {
        this.o.log(`cannot remove policy ${id}, whose sessions are over: ${(err as Error).message}`);
      }
    }
  }

  private handler(): Handler {
    return {
      // in a session of ours, or of a dead supervisor whose pinned programs still govern it (an agent
      // restarted while its sessions ran)
      isTagged: (pid) => this.sup.sensor.tagOf(pid) !== undefined || taggedByDeadSupervisor(pid),
      handle: async (req: Request, _peer, stream, onClose) => {
        switch (req.op) {
          case 'status':
            return {
              ok: true,
              policy: this.sup.policy()?.name,
              policyFile: this.o.policyFile,
              sessions: [...this.sup.engine.sessions.values()].filter((s) => !s.ended).map((s) => ({ session: s.name, origin: s.origin, agent: s.agent, root: s.rootPid, counts: s.counts })),
              lost: this.sup.sensor.lost(),
              backend: this.sup.engine.backend,
            };
          case 'reload':
            return this.reload(req.policyFile ? resolve(req.policyFile) : undefined);
          case 'attach': {
            const id = req.policyFile ? this.policyIdFor(resolve(req.policyFile)) : DEFAULT_POLICY_ID;
            const r = this.sup.attach(req.pid, id);
            return { ok: true, session: sessionName(r.session), pids: r.pids };
          }
          case 'tag': {
            const id = this.policyIdFor(resolve(req.policyFile), req.monitor, typeof req.home === 'string' && req.home.startsWith('/') ? req.home : undefined);
            const session = this.sup.tagHeld(req.pid, id);
            const name = sessionName(session);
            if (req.follow) {
              const sink: EventSink = {
                emit: (ev: BridleEvent) => {
                  if (ev.session === name) stream({ event: ev });
                },
              };
              this.sup.engine.addSink(sink);
              onClose(() => this.sup.engine.removeSink(sink));
            }
            return { ok: true, session: name };
          }
          default:
            return { ok: false, error: `unknown op '${(req as { op?: string }).op}'` };
        }
      },
    };
  }

  async close(): Promise<void> {
    clearInterval(this.lossTimer);
    clearInterval(this.reapTimer);
    this.sup.reportLoss();
    await this.server?.close();
    await this.reports?.close();
    await this.adopter.close();
    const pins = this.sup.pins;
    const left = await this.sup.close();
    if (left > 0) this.o.log(`${left} session process(es) still running stay governed in the kernel until they exit (pins under ${pins ? bridlePinDir(pins) : BPFFS})`);
    for (const s of this.o.sinks) await s.close?.();
  }
}

export { PolicyError };
