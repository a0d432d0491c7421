/**
 * bpffs (and tracefs) helpers. bpffs is not mounted at boot on every host: pins need it, so mount it
 * on first use. tracefs is needed by libbpf to attach `tracepoint/` programs (it reads the event id
 * from /sys/kernel/tracing/events/...); tp_btf/ and raw_tp/ do not need it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const BPFFS = '/sys/fs/bpf';
export const TRACEFS = '/sys/kernel/tracing';

/** Mount points of the given filesystem type, from /proc/self/mounts. */
export function mountsOfType(fstype: string): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === fstype && f[1]) out.push(f[1].replace(/\\040/g, ' '));
  }
  return out;
}

function ensureMounted(fstype: string, target: string): string {
  if (mountsOfType(fstype).includes(target)) return target;
  mkdirSync(target, { recursive: true });
  try {
    execFileSync('mount', ['-t', fstype, fstype, target], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    // Lost a race with another mounter? Fine if it is there now.
    if (mountsOfType(fstype).includes(target)) return target;
    const msg = (e as { stderr?: Buffer }).stderr?.toString().trim() || String(e);
    throw new Error(`cannot mount ${fstype} at ${target}: ${msg}`);
  }
  return target;
}

/** Mounts bpffs at /sys/fs/bpf unless it already is; returns the path. Needs CAP_SYS_ADMIN. */
export function ensureBpffs(): string {
  return ensureMounted('bpf', BPFFS);
}

/** Mounts tracefs at /sys/kernel/tracing unless it already is; returns the path. */
export function ensureTracefs(): string {
  return ensureMounted('tracefs', TRACEFS);
}

/** Creates (if needed) and returns /sys/fs/bpf/bridle/<instance>. */
export function bridlePinDir(instance: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(instance) || instance === '.' || instance === '..') {
    throw new Error(`bad bridle instance name for a pin dir: ${JSON.stringify(instance)}`);
  }
  const dir = join(ensureBpffs(), 'bridle', instance);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Removes /sys/fs/bpf/bridle/<instance> with its pins, and /sys/fs/bpf/bridle too once nothing else is in it. */
export function removeBridlePinDir(instance: string): void {
  const parent = join(BPFFS, 'bridle');
  removePinDir(join(parent, instance));
  try {
    rmdirSync(parent);
  } catch {
    /* another instance's pins are there, or it is gone already */
  }
}

/**
 * Removes a pin directory and every pin beneath it (unlinking a pin drops its reference; the object
 * goes away once nothing else holds it). Refuses paths outside /sys/fs/bpf. Missing is fine.
 */
export function removePinDir(dir: string): void {
  const abs = resolve(dir);
  if (!abs.startsWith(BPFFS + '/')) throw new Error(`refusing to remove ${abs}: not under ${BPFFS}`);
  let st;
  try {
    st = statSync(abs);
  } catch {
    return;
  }
  if (!st.isDirectory()) {
    unlinkSync(abs);
    return;
  }
  // bpffs supports unlink/rmdir but not every recursive-rm trick; walk it explicitly.
  for (const name of readdirSync(abs)) {
    const p = join(abs, name);
    if (statSync(p).isDirectory()) removePinDir(p);
    else unlinkSync(p);
  }
  try {
    rmdirSync(abs);
  } catch {
    rmSync(abs, { recursive: true, force: true });
  }
}
