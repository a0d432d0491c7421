// What the process sensor and the net sensor have in common: one loaded BPF object, the links it made,
// one ring buffer, per-CPU counters, and a close() that drains the ring buffer before it detaches.
import { join } from 'node:path';
import type { BpfLink, BpfMap, BpfObject, RingBuffer } from './binding.js';

/** Sum over CPUs of slot `index` of a per-CPU array of u64 counters. */
export function perCpuSum(map: BpfMap, index: number): number {
  const k = Buffer.alloc(4);
  k.writeUInt32LE(index);
  const v = map.lookup(k);
  let n = 0n;
  if (v) for (let off = 0; off + 8 <= v.length; off += 8) n += v.readBigUInt64LE(off);
  return Number(n);
}

export abstract class LoadedObject {
  protected links: BpfLink[] = [];
  protected rb: RingBuffer | undefined;
  protected closed = false;
  /** Program names attached, in order. */
  readonly attached: string[] = [];

  protected constructor(readonly obj: BpfObject) {}

  get isClosed(): boolean {
    return this.closed;
  }

  map(name: string): BpfMap {
    return this.obj.map(name);
  }

  hasMap(name: string): boolean {
    return this.obj.maps().includes(name);
  }

  /**
   * Pins every link as <dir>/<prefix>-<n>-<program>: they then stay attached after this process exits,
   * until the pins are removed (failclosed.ts).
   */
  pinLinks(dir: string, prefix: string): void {
    this.links.forEach((l, i) => l.pin(join(dir, `${prefix}-${i}-${this.attached[i] ?? 'link'}`)));
  }

  /** Sum over CPUs of slot `index` of a per-CPU array of u64 counters. */
  protected perCpuSum(mapName: string, index: number): number {
    return perCpuSum(this.map(mapName), index);
  }

  /** Delivers the last records, then detaches everything. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const rb = this.rb;
    this.rb = undefined;
    if (rb) await rb.close();
    this.closeSync();
  }

  /** Detaches without waiting for the ring buffer (failed opens). */
  protected closeSync(): void {
    this.closed = true;
    for (const l of this.links.splice(0)) {
      try {
        l.close();
      } catch {
        /* already gone */
      }
    }
    this.closeObjects();
  }

  /** Closes the BPF object(s); subclasses with more objects close them here too. */
  protected closeObjects(): void {
    this.obj.close();
  }
}
