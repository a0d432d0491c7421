// NDJSON event sink: one JSON object per line, appended; writes are synchronous so nothing is lost when
// the process exits right after a session ends.
import { closeSync, openSync, writeSync } from 'node:fs';
import type { BridleEvent, EventSink } from '../events/types.js';

export class NdjsonSink implements EventSink {
  private fd: number;
  constructor(path: string) {
    this.fd = openSync(path, 'a', 0o600);
  }
  emit(ev: BridleEvent): void {
    writeSync(this.fd, JSON.stringify(ev) + '\n');
  }
  async close(): Promise<void> {
    closeSync(this.fd);
  }
}
