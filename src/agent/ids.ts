// Names for sessions and process images that stay unique across pid reuse, reboots and hosts.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

export const HOST = hostname();
/** First 12 hex digits of this boot's random id: keys are boot-relative nanoseconds. */
export const BOOT = (() => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim().replace(/-/g, '').slice(0, 12);
  } catch {
    return '000000000000';
  }
})();

/** exec_id of the image that started at boot-time `key` ns in process `pid` on this host. */
export function execId(pid: number, key: bigint): string {
  return `${HOST}:${BOOT}:${pid}:${key}`;
}

export function sessionName(session: bigint): string {
  return `${BOOT}-${session.toString(16)}`;
}

let seq = 0n;
/** A fresh session number for sessions started from user space (run, attach); below the kernel's range. */
export function newSessionNumber(): bigint {
  seq = (seq + 1n) & 0xffffn;
  return ((BigInt(Date.now()) << 16n) | seq) & ((1n << 62n) - 1n);
}

/** Boot-relative nanoseconds (the kernel's bpf_ktime_get_boot_ns clock) → wall-clock ISO time. */
const bootEpochMs = (() => {
  const up = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Date.now() - up * 1000;
})();
export function ktimeToIso(ktime: bigint): string {
  return new Date(bootEpochMs + Number(ktime / 1_000_000n)).toISOString();
}
