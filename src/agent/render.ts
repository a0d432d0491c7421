// What a person sees: one line per event while a session runs, and the session as a tree at the end.
import type { BridleEvent } from '../events/types.js';
import type { ImageInfo, SessionInfo } from './engine.js';

const color = (on: boolean, code: number, s: string) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);

export function eventLine(ev: BridleEvent, tty: boolean): string | undefined {
  const argv = (a?: string[]) => (a && a.length ? ' ' + a.slice(1).join(' ') : '');
  switch (ev.type) {
    case 'session_start':
      return color(tty, 36, `▶ session ${ev.session} (${ev.origin}${ev.agent ? `, agent ${ev.agent}` : ''}) policy ${ev.policy} [${ev.mode}, ${ev.backend}]`);
    case 'exec': {
      const tag = ev.verdict === 'deny' ? color(tty, 31, 'DENY ') : ev.verdict === 'would_deny' ? color(tty, 33, 'WOULD') : color(tty, 32, 'allow');
      const extra = [ev.script ? `script ${ev.script}` : '', ev.via_loader ? 'via loader' : '', ev.fileless ? 'fileless' : ''].filter(Boolean).join(', ');
      const why = ev.verdict !== 'allow' || ev.rule !== 'exec.default' ? ` ← ${ev.rule}` : '';
      return `  ${tag} ${ev.pid} ${ev.path}${argv(ev.argv)}${extra ? ` (${extra})` : ''}${why}`;
    }
    case 'violation':
      return color(tty, 31, `  VIOLATION ${ev.pid} ${ev.what}: ${ev.detail ?? ''} ← ${ev.rule}`);
    case 'session_end':
      return color(tty, 36, `■ session ${ev.session} ended`);
    default:
      return undefined;
  }
}

/** The session's images as a tree by parent_exec_id. */
export function sessionTree(s: SessionInfo, tty: boolean): string {
  const imgs = [...s.images.values()];
  const byParent = new Map<string, ImageInfo[]>();
  // an image whose parent is a previous image of the same pid (an exec chain) hangs under the parent's parent
  const ids = new Set(imgs.map((i) => i.execId));
  for (const i of imgs) {
    const p = ids.has(i.parentExecId) ? i.parentExecId : '';
    byParent.set(p, [...(byParent.get(p) ?? []), i]);
  }
  const lines = [`session ${s.name} (${s.origin}${s.agent ? `, agent ${s.agent}` : ''}): ${s.counts.exec} execs, ${s.counts.deny} denied, ${s.counts.would_deny} would be denied`];
  const walk = (parent: string, prefix: string) => {
    const kids = byParent.get(parent) ?? [];
    kids.forEach((k, n) => {
      const last = n === kids.length - 1;
      const status = k.exit?.signal ? `killed by signal ${k.exit.signal}` : k.exit?.code !== undefined ? `exit ${k.exit.code}` : '';
      let mark = '';
      if (k.verdict === 'deny') mark = color(tty, 31, ` ✗ denied by ${k.rule}`);
      else if (k.verdict === 'would_deny') mark = color(tty, 33, ` ! would be denied by ${k.rule}`);
      if (k.stopped?.verdict === 'deny') mark += color(tty, 31, ` ✗ stopped by ${k.stopped.rule}`);
      else if (k.stopped?.verdict === 'would_deny') mark += color(tty, 33, ` ! would be stopped by ${k.stopped.rule}`);
      lines.push(`${prefix}${last ? '└─' : '├─'} [${k.pid}] ${[k.path, ...k.argv.slice(1)].join(' ')}${status ? ` (${status})` : ''}${mark}`);
      walk(k.execId, prefix + (last ? '   ' : '│  '));
    });
  };
  walk('', '');
  return lines.join('\n');
}
