// `bridle run` on its own: load the sensor, install the policy, start the session, report, clean up.
import type { BridleEvent, EventSink } from '../events/types.js';
import { loadPolicyFile } from '../policy/load.js';
import { PolicyError } from '../policy/yamlctx.js';
import { NdjsonSink } from './ndjson.js';
import { eventLine, sessionTree } from './render.js';
import { Supervisor } from './supervisor.js';

export interface RunOptions {
  policyFile: string;
  argv: string[];
  events?: string;
  monitor?: boolean;
  quiet?: boolean;
  summary?: boolean;
  /** live lines even when stderr is not a terminal */
  live?: boolean;
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

  const sup = Supervisor.open();
  for (const s of sinks) sup.engine.addSink(s);
  for (const w of sup.warnings) process.stderr.write(`bridle: warning: ${w}\n`);
  const forward = (sig: NodeJS.Signals) => () => started?.held.child.kill(sig);
  let started: ReturnType<Supervisor['run']> | undefined;
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, forward(sig)] as const);
  try {
    sup.setPolicy(policy);
    for (const [sig, h] of handlers) process.on(sig, h);
    started = sup.run(o.argv);
    const { status } = await started.held.exited;
    // The command is done; wait briefly for the rest of the tree's events (session_end) to arrive.
    await waitFor(() => sup.engine.sessions.get(started!.session)?.ended !== undefined, 1000);
    const info = sup.engine.sessions.get(started.session);
    if (info && !o.quiet && (tty || o.summary)) process.stderr.write('\n' + sessionTree(info, tty) + '\n');
    return status;
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
    await sup.close();
    for (const s of sinks) await s.close?.();
  }
}

export async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}
