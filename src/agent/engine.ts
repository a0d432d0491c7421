// Turns the sensor's raw records into BridleEvents: names (exec_id, session, rule), paths, lineage
// from the process cache, session bookkeeping. One engine per sensor; sinks get every event in order.
import { readlinkSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { LRUCache } from 'lru-cache';
import type { BridleEvent, EventSink, ExecEvent, ExitEvent, Verdict, ViolationEvent } from '../events/types.js';
import { decode, FLAG, GUARDS, RULE_GUARDS, NET_OP, RULE_KIND, VERDICT, type RawExec, type RawRecord } from '../kernel/layout.js';
import type { CompiledExec } from '../policy/compile.js';
import type { Policy } from '../policy/types.js';
import { BOOT, execId, HOST, ktimeToIso, sessionName } from './ids.js';
import { decodeNet, type RawNetRecord } from '../kernel/net.js';
import type { CompiledNet } from '../policy/netcompile.js';
import type { PinnedState } from '../kernel/failclosed.js';
import { connectEvent, rawSocketDetail, rawSocketRule, sourceRouteDetail } from './netevents.js';

export interface PolicySlot {
  id: number;
  policy: Policy;
  compiled: CompiledExec;
}

export interface SessionInfo {
  session: bigint;
  name: string;
  origin: 'run' | 'attach' | 'auto';
  policyId: number;
  agent?: string;
  rootExecId: string;
  rootPid: number;
  started: string;
  ended?: string;
  counts: { exec: number; deny: number; would_deny: number; exit: number };
  /** exec_ids in order of appearance, for the summary tree. */
  images: Map<string, ImageInfo>;
}

export interface ImageInfo {
  execId: string;
  parentExecId: string;
  pid: number;
  path: string;
  argv: string[];
  verdict: Verdict;
  rule: string;
  exit?: { code?: number; signal?: number };
  /** A guard that stopped (or would have stopped) this process after its exec, e.g. a credential file. */
  stopped?: { verdict: Verdict; rule: string };
}

const verdictName = (v: number): Verdict => (v === VERDICT.DENY ? 'deny' : v === VERDICT.WOULD_DENY ? 'would_deny' : 'allow');

export function decodeStatus(code: number): { exit_code?: number; signal?: number } {
  const sig = code & 0x7f;
  return sig ? { signal: sig } : { exit_code: (code >> 8) & 0xff };
}

export class Engine {
  readonly sessions = new Map<bigint, SessionInfo>();
  /**
   * Keep each session's images for the summary tree (`bridle run`). A long-lived agent turns this off:
   * ended sessions are then forgotten, so memory stays flat however many sessions come and go.
   */
  keepTrees = true;
  readonly policies = new Map<number, PolicySlot>();
  /**
   * Policies by the generation the kernel installed them under. Records carry the generation that decided
   * them, so an event names the rule that really decided even when a newer policy replaced it before the
   * record was read (records wait for the consumer's poll timer).
   */
  private execGens = new LRUCache<number, PolicySlot>({ max: 256 });
  private netGens = new LRUCache<number, { compiled: CompiledNet; name: string }>({ max: 256 });
  private sinks: EventSink[] = [];
  private seq = 0;
  /** Sessions started from user space whose session_start waits for their first exec (the command). */
  private pending = new Map<bigint, { origin: 'run' | 'attach'; policyId: number; rootPid: number }>();
  /** exec_id by pid → current image, for processes whose exec we saw (for exits and lineage). */
  private images = new LRUCache<string, ImageInfo>({ max: 65536 });
  backend = 'sigkill';

  addSink(s: EventSink): void {
    this.sinks.push(s);
  }

  removeSink(s: EventSink): void {
    this.sinks = this.sinks.filter((x) => x !== s);
  }

  emit(ev: BridleEvent): void {
    ev.seq = ++this.seq;
    for (const s of this.sinks) s.emit(ev);
  }

  /**
   * The common fields of an event. Callers add theirs with Object.assign or plain assignment: object
   * spread costs ~15 µs per event on Node 20 here (40× a literal), which is most of a tagged exec's cost.
   */
  base(type: BridleEvent['type'], ktime: bigint | undefined, session: bigint, pid: number) {
    return {
      type,
      ts: ktime === undefined ? new Date().toISOString() : ktimeToIso(ktime),
      host: HOST,
      session: session ? sessionName(session) : '',
      exec_id: '',
      parent_exec_id: '',
      pid,
      ppid: 0,
      uid: 0,
    };
  }

  /** Registers a session started from user space and emits its session_start. */
  startSession(info: Omit<SessionInfo, 'name' | 'counts' | 'images' | 'started'>, extra: { path?: string; argv?: string[]; ppid?: number; uid?: number; parentExecId?: string }): SessionInfo {
    const s: SessionInfo = {
      ...info,
      name: sessionName(info.session),
      started: new Date().toISOString(),
      counts: { exec: 0, deny: 0, would_deny: 0, exit: 0 },
      images: new Map(),
    };
    this.sessions.set(info.session, s);
    const slot = this.policies.get(info.policyId);
    this.emit({
      ...this.base('session_start', undefined, info.session, info.rootPid),
      exec_id: info.rootExecId,
      parent_exec_id: extra.parentExecId ?? '',
      ppid: extra.ppid ?? 0,
      uid: extra.uid ?? 0,
      type: 'session_start',
      origin: info.origin,
      ...(info.agent ? { agent: info.agent } : {}),
      backend: slot?.policy.mode === 'monitor' ? 'monitor' : this.backend,
      mode: slot?.policy.mode ?? 'enforce',
      policy: slot?.policy.name ?? '',
      ...(extra.path ? { path: extra.path } : {}),
      ...(extra.argv ? { argv: extra.argv } : {}),
    });
    return s;
  }

  /** A `run` session: session_start is emitted with the command's own exec (its exec_id is the root). */
  expect(session: bigint, origin: 'run' | 'attach', policyId: number, rootPid: number): void {
    this.pending.set(session, { origin, policyId, rootPid });
  }

  private startPending(session: bigint, rootExecId: string, extra: { path?: string; argv?: string[]; ppid?: number; uid?: number; parentExecId?: string }): SessionInfo | undefined {
    const p = this.pending.get(session);
    if (!p) return undefined;
    this.pending.delete(session);
    return this.startSession({ session, origin: p.origin, policyId: p.policyId, rootExecId, rootPid: p.rootPid }, extra);
  }

  /** Records policy `slot` as installed in the kernel under exec generation `gen` (and net generation `netGen`). */
  installed(slot: PolicySlot, gen: number, netGen?: { gen: number; compiled: CompiledNet }): void {
    this.policies.set(slot.id, slot);
    this.execGens.set(gen, slot);
    if (netGen) this.netGens.set(netGen.gen, { compiled: netGen.compiled, name: slot.policy.name });
  }

  /** The rule tables by generation, for a successor that reads this engine's records (failclosed.ts). */
  generations(): PinnedState {
    const exec: PinnedState['exec'] = [];
    for (const [gen, slot] of this.execGens.entries()) {
      exec.push({ gen, id: slot.id, name: slot.policy.name, mode: slot.policy.mode, rules: slot.compiled.rules, agents: slot.compiled.agents.list });
    }
    const net: PinnedState['net'] = [];
    for (const [gen, n] of this.netGens.entries()) net.push({ gen, name: n.name, rules: n.compiled.rules });
    return { version: 1, exec, net };
  }

  /** Installs the rule tables of another engine's generations, to name the records it left (adopt.ts). */
  adoptGenerations(state: PinnedState): void {
    for (const g of state.exec) {
      const slot = {
        id: g.id,
        policy: { name: g.name, mode: g.mode } as Policy,
        compiled: { rules: g.rules, agents: { names: [], idents: [], list: g.agents } } as unknown as CompiledExec,
      };
      this.execGens.set(g.gen, slot);
      this.policies.set(g.id, slot);
    }
    for (const g of state.net) this.netGens.set(g.gen, { name: g.name, compiled: { rules: g.rules } as unknown as CompiledNet });
  }

  /** The policy that decided a record: by its generation, else the one in force. */
  private slotFor(policyId: number, gen: number | undefined): PolicySlot | undefined {
    return (gen !== undefined ? this.execGens.get(gen) : undefined) ?? this.policies.get(policyId);
  }

  ruleName(policyId: number, kind: number, ruleId: number, gen?: number): string {
    const slot = this.slotFor(policyId, gen);
    const r = slot?.compiled.rules[ruleId];
    if (kind === RULE_KIND.DEFAULT) return 'exec.default';
    if (kind === RULE_KIND.FILELESS) return 'exec.fileless';
    return r?.id ?? `rule#${ruleId}`;
  }

  handle(r: RawRecord): void {
    switch (r.type) {
      case 'exec':
        return this.onExec(r);
      case 'exit': {
        const id = execId(r.pid, r.key);
        const img = this.images.get(id);
        const st = decodeStatus(r.exitCode);
        if (img) {
          img.exit = {};
          if (st.exit_code !== undefined) img.exit.code = st.exit_code;
          if (st.signal) img.exit.signal = st.signal;
        }
        const s = this.sessions.get(r.session);
        if (s) s.counts.exit++;
        this.emit(Object.assign(this.base('exit', r.ktime, r.session, r.pid), { exec_id: id, parent_exec_id: img?.parentExecId ?? '', ppid: r.ppid }, st) as ExitEvent);
        return;
      }
      case 'session_end': {
        const s = this.sessions.get(r.session) ?? this.startPending(r.session, '', {});
        if (s) s.ended = ktimeToIso(r.ktime);
        this.emit({
          ...this.base('session_end', r.ktime, r.session, r.pid),
          exec_id: s?.rootExecId ?? '',
          type: 'session_end',
          ...(s ? { counts: { ...s.counts } } : {}),
        });
        if (!this.keepTrees) this.sessions.delete(r.session);
        return;
      }
      case 'guard': {
        const [what, detail] = GUARDS[r.what] ?? [`guard#${r.what}`, 'a guarded syscall'];
        const id = execId(r.pid, r.key);
        let rule: string;
        let why: string;
        if (RULE_GUARDS.has(r.what)) {
          // target is the rule's id, named by the generation that decided
          const ref = this.slotFor(this.sessions.get(r.session)?.policyId ?? 0, r.gen)?.compiled.rules[r.target];
          rule = ref?.id ?? `rule#${r.target}`;
          why = ref ? `${detail}: ${ref.text.replace(/^deny file /, '')}` : detail;
        } else {
          rule = `builtin.no_${what.replace(/_syscall$/, '')}`;
          why = r.target ? `${detail} (target pid ${r.target})` : detail;
        }
        const verdict = verdictName(r.verdict);
        const img = this.images.get(id);
        if (img) img.stopped = { verdict, rule };
        this.emit(Object.assign(this.base('violation', r.ktime, r.session, r.pid), { exec_id: id, what, detail: why, verdict, rule }) as ViolationEvent);
        return;
      }
    }
  }

  /** One record of a ring buffer both sensors share: the process sensor's, or else the network sensor's. */
  handleRaw(buf: Buffer): void {
    const r = decode(buf);
    if (r) return this.handle(r);
    const n = decodeNet(buf);
    if (n) this.handleNet(n);
  }

  // --- network (issue 3): net sensor records → connect events, linked to the process by exec_id ---
  handleNet(r: RawNetRecord): void {
    const id = execId(r.pid, r.key);
    const img = this.images.get(id);
    const base = this.base('connect', r.ktime, r.session, r.pid);
    base.exec_id = id;
    base.parent_exec_id = img?.parentExecId ?? '';
    const decided = this.netGens.get(r.gen);
    const compiled = decided?.compiled;
    const name = decided?.name ?? this.policies.get(r.policy)?.policy.name ?? '';
    if (r.type === 'net' && (r.op === NET_OP.SOCKET || r.op === NET_OP.SOCKOPT)) {
      const sock = r.op === NET_OP.SOCKET ? rawSocketDetail(r) : sourceRouteDetail(r);
      const rule = r.op === NET_OP.SOCKET ? rawSocketRule(sock.what) : 'builtin.no_source_route';
      const v = Object.assign(base, sock, { type: 'violation' as const, uid: r.uid, verdict: verdictName(r.verdict), rule, policy: name });
      this.emit(v as ViolationEvent);
      return;
    }
    this.emit(connectEvent(base as typeof base & { type: 'connect' }, r, compiled, name));
  }
  // --- end network ---

  /**
   * The program that ran: the path the kernel resolved for the executed file (whatever name the caller
   * gave: relative, a symlink, a descriptor), else (none built: a path too long, a file cut off from its
   * tree) the name given, resolved against the working directory as it is now.
   */
  private resolvePath(r: RawExec): string {
    if (r.flags & FLAG.FILELESS) return r.dname.startsWith('memfd:') ? r.dname : `${r.filename || r.dname} (deleted)`;
    if (r.path.startsWith('/')) return r.path;
    if (r.flags & FLAG.VIA_LOADER) {
      const named = r.argv.slice(1).find((a) => a.split('/').pop() === r.dname);
      return named && isAbsolute(named) ? named : named ?? r.dname;
    }
    const name = r.flags & FLAG.SCRIPT ? r.interp : r.filename;
    if (isAbsolute(name)) return name;
    try {
      return resolve(readlinkSync(`/proc/${r.pid}/cwd`), name);
    } catch {
      return name;
    }
  }

  private onExec(r: RawExec): void {
    const id = execId(r.pid, r.key);
    const parent = execId(r.parentPid, r.parentKey);
    const path = this.resolvePath(r);
    const verdict = verdictName(r.verdict);
    const rule = this.ruleName(r.policy, r.ruleKind, r.ruleId, r.gen);
    const slot = this.slotFor(r.policy, r.gen);

    let s = this.sessions.get(r.session) ?? this.startPending(r.session, id, { path, argv: r.argv, ppid: r.ppid, uid: r.uid, parentExecId: parent });
    if (!s && r.flags & FLAG.SESSION_NEW) {
      const agent = slot?.compiled.agents.list.find((a) => a.id === r.agentId)?.name;
      s = this.startSession(
        { session: r.session, origin: 'auto', policyId: r.policy, ...(agent ? { agent } : {}), rootExecId: id, rootPid: r.pid },
        { path, argv: r.argv, ppid: r.ppid, uid: r.uid, parentExecId: parent },
      );
    }
    const img: ImageInfo = { execId: id, parentExecId: parent, pid: r.pid, path, argv: r.argv, verdict, rule };
    this.images.set(id, img);
    if (s) {
      s.counts.exec++;
      if (verdict === 'deny') s.counts.deny++;
      if (verdict === 'would_deny') s.counts.would_deny++;
      if (this.keepTrees && s.images.size < 50_000) s.images.set(id, img);
    }
    const ev = Object.assign(this.base('exec', r.ktime, r.session, r.pid), {
      exec_id: id,
      parent_exec_id: parent,
      ppid: r.ppid,
      uid: r.uid,
      path,
      argv: r.argv,
      verdict,
      rule,
      policy: slot?.policy.name ?? '',
    }) as ExecEvent;
    if (r.flags & FLAG.SCRIPT) ev.script = r.filename;
    if (r.flags & FLAG.VIA_LOADER) ev.via_loader = true;
    if (r.flags & FLAG.FILELESS) ev.fileless = true;
    this.emit(ev);
  }
}

export { BOOT };
