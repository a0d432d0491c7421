// What sessions did while no supervisor was there. A supervisor that dies leaves its links, its tag table
// and its event ring buffer pinned (failclosed.ts): its sessions stay governed, and their records pile up
// in that ring buffer. `bridle agent`, when it starts and once a minute, reads every dead supervisor's ring
// buffer into its own sinks (so those events reach the collector too), naming rules from the tables the
// dead supervisor saved beside its pins, and removes the pins once the ring buffer is drained and nothing
// it tagged is alive. Killing bridle then neither frees a session nor hides what it did next (up to the
// ring buffer's size; past it, the kernel counts the loss).
import type { EventSink } from '../events/types.js';
import { RingBuffer, type BpfMap } from '../kernel/binding.js';
import { deadInstances, loadState, openPinned, pinnedLost, removeOrphans, surveyOrphans, type ReapReport } from '../kernel/failclosed.js';
import { HOST } from './ids.js';
import { Engine } from './engine.js';

interface Reading {
  map: BpfMap;
  rb: RingBuffer;
  engine: Engine;
  /** The dead supervisor's drop counters as reported so far (by it, then by us). */
  reported: Record<string, number>;
}

export class Adopter {
  private reading = new Map<string, Reading>();

  constructor(
    private readonly sinks: EventSink[],
    private readonly log: (msg: string) => void = () => {},
  ) {}

  /** Starts reading the ring buffer of every dead supervisor not read yet; returns their instances. */
  adopt(): string[] {
    const fresh: string[] = [];
    for (const instance of deadInstances()) {
      if (this.reading.has(instance)) continue;
      const map = openPinned(instance, 'events');
      if (!map) continue;
      const engine = new Engine();
      engine.keepTrees = false;
      const state = loadState(instance);
      if (state) engine.adoptGenerations(state);
      for (const s of this.sinks) engine.addSink(s);
      try {
        const rb = new RingBuffer(map, (batch) => {
          for (const buf of batch) engine.handleRaw(buf);
        });
        // drops the dead supervisor reported itself are not reported again (an older one saved none:
        // then what is counted now is taken as reported, and only what comes after is)
        this.reading.set(instance, { map, rb, engine, reported: state?.lost ?? pinnedLost(instance) ?? {} });
      } catch (err) {
        map.close();
        this.log(`cannot read the events of a dead bridle (${instance}): ${(err as Error).message}`);
        continue;
      }
      fresh.push(instance);
      this.log(`reading the events a dead bridle left (${instance})${state ? '' : ': its rule tables are missing, rules are named by number'}`);
    }
    return fresh;
  }

  /**
   * Starts reading every dead supervisor's ring buffer not read yet (adopt), delivers what the ring
   * buffers of finished orphans hold, then removes their pins. Returns what was removed and kept.
   */
  async sweep(): Promise<ReapReport> {
    this.adopt();
    for (const instance of this.reading.keys()) this.reportLoss(instance);
    const report = surveyOrphans();
    for (const instance of report.removed) await this.release(instance);
    removeOrphans(report);
    // another bridle may have reaped one we read: deliver the rest, then let it go
    const gone = new Set(deadInstances());
    for (const instance of [...this.reading.keys()]) if (!gone.has(instance)) await this.release(instance);
    return report;
  }

  /** Delivers what is left and stops reading (the pins stay). */
  async close(): Promise<void> {
    for (const instance of [...this.reading.keys()]) await this.release(instance);
  }

  get instances(): string[] {
    return [...this.reading.keys()];
  }

  private async release(instance: string): Promise<void> {
    const r = this.reading.get(instance);
    if (!r) return;
    await r.rb.close();
    this.reportLoss(instance);
    this.reading.delete(instance);
    r.map.close();
  }

  /**
   * Loss events for what the kernel dropped into a dead supervisor's full ring buffer since it was last
   * reported: nothing the sessions did after bridle died is lost without a count.
   */
  private reportLoss(instance: string): void {
    const r = this.reading.get(instance);
    const now = r && pinnedLost(instance);
    if (!r || !now) return;
    const pid = Number(/^sup-(\d+)-/.exec(instance)?.[1] ?? 0);
    for (const [where, n] of Object.entries(now)) {
      const count = n - (r.reported[where] ?? 0);
      if (count <= 0) continue;
      r.engine.emit({ type: 'loss', ts: new Date().toISOString(), host: HOST, session: '', exec_id: '', parent_exec_id: '', pid, ppid: 0, uid: 0, where: `kernel:${where}`, count });
      this.log(`a dead bridle (${instance}) could not record ${count} event(s) (${where}): its ring buffer was full`);
    }
    r.reported = now;
  }
}
