// Fail closed: sessions stay governed when the supervisor dies.
//
// A supervisor's BPF links live as long as its file descriptors. If the process dies without close()
// (a crash, the OOM killer, or a session running as root that kills it), the links would go with it and
// every session it governed would run free. So the supervisor pins its links, with the maps a successor
// needs, under /sys/fs/bpf/bridle/sup-<pid>-<start ticks>. After a death, the kernel goes on deciding
// the execs and connects of those sessions with the policies they had, and their records wait in the
// pinned ring buffer for `bridle agent` to read (adopt.ts); past its size, the kernel counts what it drops.
//
// A supervisor that closes while processes of its sessions still run (a command that left a daemon
// behind, an agent stopped for an upgrade) keeps its pins the same way: stopping bridle frees no session.
// Otherwise close removes the pins first (the links then go with the fds). Any supervisor that starts, and
// `bridle agent` once a minute, reaps orphans (surveyOrphans, then removeOrphans):
// - a dead supervisor's pins are removed once no process it tagged is alive;
// - until then they are kept, but its agent tables are emptied, so a dead supervisor starts no new
//   sessions (those now belong to the live one).
import { mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPinnedMap, type BpfMap } from './binding.js';
import { BPFFS, bridlePinDir, removeBridlePinDir } from './bpffs.js';
import { HOOKS, LAYOUT } from './layout.js';
import { perCpuSum, type LoadedObject } from './loaded.js';
import type { RuleRef } from '../policy/compile.js';

/**
 * Maps pinned with the links: the tag table (who is still governed), the auto-start tables, and the
 * event ring buffer (what the sessions did after the supervisor died, for a successor to read).
 */
export const PINNED_MAPS = ['tags', 'agent_names', 'agent_idents', 'events', 'lost'] as const;
/**
 * Pinned from whichever object has them: the network object's drop counters. With `lost`, they say how
 * many records the kernel could not put in the ring buffers after the supervisor died (adopt.ts reports them).
 */
export const PINNED_OPTIONAL_MAPS = ['net_lost'] as const;
type PinnedName = (typeof PINNED_MAPS)[number] | (typeof PINNED_OPTIONAL_MAPS)[number];

/**
 * What a successor needs to name the rules in a dead supervisor's records: its policies by generation.
 * Kept beside the pins, in /run/bridle/<instance>.json (records carry generations, not rule names).
 */
export const STATE_DIR = '/run/bridle';

export interface PinnedState {
  version: 1;
  /** exec generations */
  exec: Array<{ gen: number; id: number; name: string; mode: string; rules: RuleRef[]; agents: Array<{ id: number; name: string }> }>;
  /** network generations */
  net: Array<{ gen: number; name: string; rules: RuleRef[] }>;
  /** The kernel's drop counters as the supervisor last reported them (Supervisor.reportLoss): hook → count. */
  lost?: Record<string, number>;
}

const stateFile = (instance: string): string => join(STATE_DIR, `${instance}.json`);

/** Writes the state of `instance` (atomically: a successor never reads half a file). */
export function saveState(instance: string, state: PinnedState): void {
  mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
  const tmp = `${stateFile(instance)}.tmp`;
  writeFileSync(tmp, JSON.stringify(state), { mode: 0o600 });
  renameSync(tmp, stateFile(instance));
}

export function loadState(instance: string): PinnedState | undefined {
  try {
    const s = JSON.parse(readFileSync(stateFile(instance), 'utf8')) as PinnedState;
    return s.version === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Pin directories of dead supervisors (whatever their sessions are doing). */
export function deadInstances(): string[] {
  let names: string[];
  try {
    names = readdirSync(join(BPFFS, 'bridle'));
  } catch {
    return [];
  }
  return names.filter((n) => {
    const m = INSTANCE.exec(n);
    return m !== null && startTicks(Number(m[1])) !== BigInt(m[2]!);
  });
}

/** The pinned map `name` of `instance`, or undefined. */
export function openPinned(instance: string, name: PinnedName): BpfMap | undefined {
  try {
    return openPinnedMap(join(BPFFS, 'bridle', instance, name));
  } catch {
    return undefined;
  }
}

/** USER_HZ: the unit of /proc/<pid>/stat start times on Linux (100 on every architecture's ABI). */
const TICKS_PER_S = 100n;

/** Start time of a live process in clock ticks since boot, or undefined when there is no such process. */
export function startTicks(pid: number): bigint | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = rest[19]; // field 22, starttime
  return v === undefined ? undefined : BigInt(v);
}

const INSTANCE = /^sup-(\d+)-(\d+)$/;

/** The pin directory name of supervisor `pid`: its pid and start time, so a reused pid never matches. */
export function supervisorInstance(pid = process.pid): string {
  const t = startTicks(pid);
  if (t === undefined) throw new Error(`no process ${pid}`);
  return `sup-${pid}-${t}`;
}

/**
 * Pins the links of `objects` and the PINNED_MAPS of `maps` under this supervisor's directory. Returns
 * the instance name (for unpinSupervisor). All or nothing: on a failure nothing stays pinned.
 */
export function pinSupervisor(objects: LoadedObject[], maps: LoadedObject): string {
  const instance = supervisorInstance();
  const dir = bridlePinDir(instance);
  try {
    objects.forEach((o, i) => o.pinLinks(dir, `o${i}`));
    for (const m of PINNED_MAPS) maps.map(m).pin(join(dir, m));
    for (const m of PINNED_OPTIONAL_MAPS) {
      const holder = objects.find((o) => o.hasMap(m));
      holder?.map(m).pin(join(dir, m));
    }
  } catch (err) {
    removeBridlePinDir(instance);
    throw err;
  }
  return instance;
}

/** Removes this supervisor's pins (its links then detach when it closes them) and its state. */
export function unpinSupervisor(instance: string): void {
  removeBridlePinDir(instance);
  rmSync(stateFile(instance), { force: true });
  try {
    rmdirSync(STATE_DIR);
  } catch {
    /* another supervisor's state is there, or it is gone already */
  }
}

export interface Orphan {
  instance: string;
  /** The dead supervisor's pid. */
  pid: number;
  /** Processes it tagged that are still alive (and still governed by its pinned programs). */
  live: number;
}

export interface ReapReport {
  /** Pin directories of dead supervisors removed (their programs are detached now). */
  removed: string[];
  /** Those kept because processes they govern are alive. */
  kept: Orphan[];
}

/**
 * Is `tag` (a tag table value) the tag of the process that has pid `pid` now: alive, and started when the
 * tag says (tag_of in bpf/include/tags.h: an entry left by an earlier owner of the pid is no tag)?
 */
export function tagIsLive(pid: number, tag: Buffer): boolean {
  const ticks = startTicks(pid);
  // start_boottime is in ns; /proc reports the same clock in ticks.
  return ticks !== undefined && ticks === tag.readBigUInt64LE(LAYOUT.bridle_tag.fields.start) / (1_000_000_000n / TICKS_PER_S);
}

/** Tagged processes in a tag table that are still the processes that were tagged (pid and start). */
export function liveTagged(tags: BpfMap): number {
  let live = 0;
  for (const k of tags.keys()) {
    const v = tags.lookup(k);
    if (v && tagIsLive(k.readUInt32LE(0), v)) live++;
  }
  return live;
}

/**
 * Is process `pid` in a session of a dead supervisor (tagged in its pinned tag table, which its pinned
 * programs still govern by)? A successor's own tag table does not have those sessions.
 */
export function taggedByDeadSupervisor(pid: number): boolean {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(pid);
  for (const instance of deadInstances()) {
    const tags = openPinned(instance, 'tags');
    if (!tags) continue;
    try {
      const v = tags.lookup(k);
      if (v && tagIsLive(pid, v)) return true;
    } finally {
      tags.close();
    }
  }
  return false;
}

/** Deletes every entry of `m`. */
export function emptyMap(m: BpfMap): void {
  for (const k of m.keys()) m.delete(k);
}

const AUTO_START_MAPS = ['agent_names', 'agent_idents'] as const;

/** Empties the auto-start tables, so that pinned programs left behind start no new sessions. */
export function stopAutoStart(maps: LoadedObject): void {
  for (const name of AUTO_START_MAPS) emptyMap(maps.map(name));
}

/**
 * What reapOrphans would do, changing nothing: dead supervisors whose sessions are over (`removed`) and
 * those whose tagged processes are still alive (`kept`).
 */
export function surveyOrphans(): ReapReport {
  const report: ReapReport = { removed: [], kept: [] };
  // only supervisors' directories (tests pin under other names), and only those of dead supervisors
  for (const instance of deadInstances()) {
    let live = 0; // no tag table: nothing can be governed by it
    const tags = openPinned(instance, 'tags');
    if (tags) {
      try {
        live = liveTagged(tags);
      } finally {
        tags.close();
      }
    }
    if (live === 0) report.removed.push(instance);
    else report.kept.push({ instance, pid: Number(INSTANCE.exec(instance)![1]), live });
  }
  return report;
}

/** Does what a survey found: removes the pins of finished orphans, and stops the others starting sessions. */
export function removeOrphans(report: ReapReport): void {
  for (const instance of report.removed) unpinSupervisor(instance);
  for (const { instance } of report.kept) {
    for (const name of AUTO_START_MAPS) {
      const map = openPinned(instance, name);
      if (!map) continue; // not pinned: nothing to stop
      try {
        emptyMap(map);
      } finally {
        map.close();
      }
    }
  }
}

/** Removes the pins of dead supervisors whose sessions are over; see the top of this file. */
export function reapOrphans(): ReapReport {
  const report = surveyOrphans();
  removeOrphans(report);
  return report;
}

/**
 * The drop counters of `instance` as Supervisor.reportLoss names them (HOOKS' names from `lost`, and
 * `network` from net_lost's two slots), or undefined when they were not pinned (an older bridle).
 */
export function pinnedLost(instance: string): Record<string, number> | undefined {
  const lost = openPinned(instance, 'lost');
  if (!lost) return undefined;
  const out: Record<string, number> = {};
  try {
    HOOKS.forEach((h, i) => (out[h] = perCpuSum(lost, i)));
  } finally {
    lost.close();
  }
  const net = openPinned(instance, 'net_lost');
  if (net) {
    try {
      out.network = perCpuSum(net, 0) + perCpuSum(net, 1);
    } finally {
      net.close();
    }
  }
  return out;
}
