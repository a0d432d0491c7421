// `bridle run` on its own: load the sensor, install the policy, start the session, report, clean up.
import type { BridleEvent, EventSink } from '../events/types.js';
import { loadPolicyFile } from '../policy/load.js';
import { PolicyError } from '../policy/yamlctx.js';
import { NdjsonSink } from './ndjson.js';
import { eventLine, sessionTree } from './render.js';
import { Supervisor } from './supervisor.js';
import { resolve } from 'node:path';
import type { Policy } from '../policy/types.js';
import { connectControl, type ControlClient } from './control.js';
import type { SessionInfo } from './engine.js';
import { sessionEnv } from './env.js';
import { spawnHeld } from './spawn.js';
import { STATE_DIR } from '../kernel/failclosed.js';
import { bridleHome } from '../collector/defaults.js';

export interface RunOptions {
  policyFile: string;
  argv: string[];
  events?: string;
  monitor?: boolean;
  quiet?: boolean;
  summary?: boolean;
  /** live lines even when stderr is not a terminal */
  live?: boolean;
  /** load the sensor here even when an agent is running */
  standalone?: boolean;
  /** more places for the session's events (the demo's collector) */
  extraSinks?: EventSink[];
  /** more of bridle's own files no session may open (the demo's collector store, certificates, spool) */
  bridleFiles?: string[];
}

export async function runCommand(o: RunOptions): Promise<number> {
  let policy;
  try {
    policy = loadPolicyFile(o.policyFile);
  } catch (err) {
    if (err instanceof PolicyError) {
      process.stderr.write(`bridle run: invalid policy, nothing was run:\n${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (o.monitor) policy = { ...policy, mode: 'monitor' as const };

  const tty = process.stderr.isTTY === true;
  const sinks: EventSink[] = [];
  if (o.events) sinks.push(new NdjsonSink(o.events));
  else if (!tty && !o.live) sinks.push({ emit: (ev: BridleEvent) => void process.stderr.write(JSON.stringify(ev) + '\n') });
  if (!o.quiet && (tty || o.live)) sinks.push({ emit: (ev) => { const l = eventLine(ev, tty); if (l) process.stderr.write(l + '\n'); } });

  sinks.push(...(o.extraSinks ?? []));
  const client = process.env.BRIDLE_STANDALONE || o.standalone ? undefined : await connectControl();
  if (client) {
    try {
      return await runThroughAgent(client, policy, o, sinks, tty);
    } finally {
      client.close();
      for (const s of sinks) if (!o.extraSinks?.includes(s)) await s.close?.();
    }
  }

  // bridle's own files, whatever the policy says: its state beside the pins, $BRIDLE_HOME (certificates,
  // an agent's spool, a collector's store and tokens), the event log
  const sup = Supervisor.open({ autoStart: false, bridleFiles: [STATE_DIR, bridleHome(), ...(o.events ? [o.events] : []), ...(o.bridleFiles ?? [])] });
  for (const s of sinks) sup.engine.addSink(s);
  for (const w of sup.warnings) process.stderr.write(`bridle: warning: ${w}\n`);
  const forward = (sig: NodeJS.Signals) => () => started?.held.child.kill(sig);
  let started: ReturnType<Supervisor['run']> | undefined;
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, forward(sig)] as const);
  try {
    // (opened with autoStart: false: the policy's agents: would make every matching agent anyone starts
    // on the host a session under it for as long as the run lasts)
    sup.setPolicy(policy);
    for (const [sig, h] of handlers) process.on(sig, h);
    started = sup.run(o.argv);
    const { status } = await started.held.exited;
    // The command is done; wait briefly for the rest of the tree's events (session_end) to arrive.
    await waitFor(() => sup.engine.sessions.get(started!.session)?.ended !== undefined, 1000);
    sup.reportLoss();
    const info = sup.engine.sessions.get(started.session);
    if (info && !o.quiet && (tty || o.summary)) process.stderr.write('\n' + sessionTree(info, tty) + '\n');
    return status;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
    const left = await sup.close();
    if (left > 0) {
      process.stderr.write(
        `bridle: ${left} process(es) of the session are still running (started in the background); they stay governed in the kernel until they exit\n`,
      );
    }
    for (const s of sinks) if (!o.extraSinks?.includes(s)) await s.close?.();
  }
}

/** The same session, started by the running `bridle agent`: it tags the held child and streams events back. */
async function runThroughAgent(client: ControlClient, policy: Policy, o: RunOptions, sinks: EventSink[], tty: boolean): Promise<number> {
  const env = sessionEnv(policy).env;
  const held = spawnHeld(o.argv, env);
  const reply = await client.request({ op: 'tag', pid: held.pid, policyFile: resolve(o.policyFile), monitor: !!o.monitor, follow: true, ...(env.HOME ? { home: resolve(env.HOME) } : {}) });
  if (!reply.ok) {
    held.child.kill('SIGKILL');
    throw new Error(`bridle agent refused the session: ${reply.error}`);
  }
  held.release();
  const info: SessionInfo = {
    session: 0n, name: String(reply.session), origin: 'run', policyId: 0, rootExecId: '', rootPid: held.pid,
    started: new Date().toISOString(), counts: { exec: 0, deny: 0, would_deny: 0, exit: 0 }, images: new Map(),
  };
  let ended = false;
  const pump = (async () => {
    for (;;) {
      const line = await client.next();
      if (line.closed) return;
      const ev = line.event as BridleEvent | undefined;
      if (!ev) continue;
      for (const s of sinks) s.emit(ev);
      if (ev.type === 'exec') {
        info.counts.exec++;
        if (ev.verdict === 'deny') info.counts.deny++;
        if (ev.verdict === 'would_deny') info.counts.would_deny++;
        info.images.set(ev.exec_id, { execId: ev.exec_id, parentExecId: ev.parent_exec_id, pid: ev.pid, path: ev.path, argv: ev.argv, verdict: ev.verdict ?? 'allow', rule: ev.rule ?? '' });
      } else if (ev.type === 'exit') {
        const img = info.images.get(ev.exec_id);
        if (img) img.exit = { ...(ev.exit_code !== undefined ? { code: ev.exit_code } : {}), ...(ev.signal ? { signal: ev.signal } : {}) };
      } else if (ev.type === 'violation' && ev.rule) {
        // a guard that stopped the process after its exec (a credential file, a denied library or script)
        const img = info.images.get(ev.exec_id);
        if (img && ev.verdict && ev.verdict !== 'allow') img.stopped = { verdict: ev.verdict, rule: ev.rule };
      } else if (ev.type === 'session_end') {
        ended = true;
        return;
      }
    }
  })();
  const { status } = await held.exited;
  await waitFor(() => ended, 1000);
  void pump;
  if (!o.quiet && (tty || o.summary)) process.stderr.write('\n' + sessionTree(info, tty) + '\n');
  return status;
}

export async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}
