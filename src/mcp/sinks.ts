// Event sinks for the standalone proxy: NDJSON appended to a file (--events), or the log on stderr.
// (Inside the agent the proxy is handed the agent's own sink instead.)
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BridleEvent, EventSink } from '../events/types.js';
import type { Logger } from './session.js';

/** Appends one JSON line per event, synchronously, so events survive an abrupt exit and keep their order. */
export class NdjsonFileSink implements EventSink {
  private fd: number | undefined;
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a', 0o600);
  }
  emit(ev: BridleEvent): void {
    if (this.fd === undefined) return;
    writeSync(this.fd, JSON.stringify(ev) + '\n');
  }
  async close(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Writes each event as a log record (pino on stderr in the CLI). */
export class LogSink implements EventSink {
  constructor(private readonly log: Logger) {}
  emit(ev: BridleEvent): void {
    if (ev.type === 'tool_call' && ev.verdict === 'allow') this.log.info({ event: ev }, ev.type);
    else this.log.warn({ event: ev }, ev.type);
  }
}

/** Keeps events in memory (tests, embedding). */
export class MemorySink implements EventSink {
  readonly events: BridleEvent[] = [];
  emit(ev: BridleEvent): void {
    this.events.push(ev);
  }
}
