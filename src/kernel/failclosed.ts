// Fail closed: sessions stay governed when the supervisor dies.
//
// A supervisor's BPF links live as long as its file descriptors. If the process dies without close()
// (a crash, the OOM killer, or a session running as root that kills it), the links would go with it and
// every session it governed would run free. So the supervisor pins its links, with the maps a successor
// needs, under /sys/fs/bpf/bridle/sup-<pid>-<start ticks>. After a death, the kernel goes on deciding
// the execs and connects of those sessions with the policies they had. Events are not read any more;
// the ring buffer fills, and the kernel counts what it drops.
//
// A supervisor that closes while processes of its sessions still run (a command that left a daemon
// behind, an agent stopped for an upgrade) keeps its pins the same way: stopping bridle frees no session.
// Otherwise close removes the pins first (the links then go with the fds). Any supervisor that starts, and
// `bridle agent` once a minute, calls reapOrphans():
// - a dead supervisor's pins are removed once no process it tagged is alive;
// - until then they are kept, but its agent tables are emptied, so a dead supervisor starts no new
//   sessions (those now belong to the live one).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPinnedMap, type BpfMap } from './binding.js';
import { BPFFS, bridlePinDir, removeBridlePinDir } from './bpffs.js';
import { LAYOUT } from './layout.js';
import type { LoadedObject } from './loaded.js';

/** Maps pinned with the links: the tag table (who is still governed) and the auto-start tables. */
export const PINNED_MAPS = ['tags', 'agent_names', 'agent_idents'] as const;

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
  } catch (err) {
    removeBridlePinDir(instance);
    throw err;
  }
  return instance;
}

/** Removes this supervisor's pins: its links then detach when it closes them. */
export function unpinSupervisor(instance: string): void {
  removeBridlePinDir(instance);
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

/** Tagged processes in a tag table that are still the processes that were tagged (pid and start). */
export function liveTagged(tags: BpfMap): number {
  const startOff = LAYOUT.bridle_tag.fields.start;
  let live = 0;
  for (const k of tags.keys()) {
    const v = tags.lookup(k);
    if (!v) continue;
    const ticks = startTicks(k.readUInt32LE(0));
    // start_boottime is in ns; /proc reports the same clock in ticks.
    if (ticks !== undefined && ticks === v.readBigUInt64LE(startOff) / (1_000_000_000n / TICKS_PER_S)) live++;
  }
  return live;
}

function emptyMap(m: BpfMap): void {
  for (const k of m.keys()) m.delete(k);
}

/** Empties the auto-start tables, so that pinned programs left behind start no new sessions. */
export function stopAutoStart(maps: LoadedObject): void {
  for (const name of AUTO_START_MAPS) emptyMap(maps.map(name));
}

const AUTO_START_MAPS = ['agent_names', 'agent_idents'] as const;

/**
 * Removes the pins of dead supervisors whose sessions are over; see the top of this file. With
 * `dryRun`, only says what it would do (doctor).
 */
export function reapOrphans(opts: { dryRun?: boolean } = {}): ReapReport {
  const report: ReapReport = { removed: [], kept: [] };
  let names: string[];
  try {
    names = readdirSync(join(BPFFS, 'bridle'));
  } catch {
    return report;
  }
  for (const instance of names) {
    const m = INSTANCE.exec(instance);
    if (!m) continue; // not a supervisor's (tests pin under other names)
    const pid = Number(m[1]);
    if (startTicks(pid) === BigInt(m[2]!)) continue; // its supervisor is alive
    const dir = join(BPFFS, 'bridle', instance);
    let live = 0;
    try {
      const tags = openPinnedMap(join(dir, 'tags'));
      try {
        live = liveTagged(tags);
      } finally {
        tags.close();
      }
    } catch {
      live = 0; // no tag table: nothing can be governed by it
    }
    if (live === 0) {
      if (!opts.dryRun) removeBridlePinDir(instance);
      report.removed.push(instance);
      continue;
    }
    for (const name of opts.dryRun ? [] : AUTO_START_MAPS) {
      try {
        const map = openPinnedMap(join(dir, name));
        try {
          emptyMap(map);
        } finally {
          map.close();
        }
      } catch {
        /* not pinned: nothing to stop */
      }
    }
    report.kept.push({ instance, pid, live });
  }
  return report;
}
