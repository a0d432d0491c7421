// Tool-definition pinning (trust on first use). The first time a server lists a tool, its definition
// (name, title, description, inputSchema, outputSchema, annotations) is stored with a SHA-256 of its
// canonical JSON. A later listing with a different digest is a "rug pull": reported, and with
// `pin: block` the tool is hidden and its calls denied until someone re-pins (bridle mcp --repin).
//
// Store: one JSON file shared by all servers, {version: 1, servers: {NAME: {tools: {TOOL: Pin}}}}.
// Writes re-read the file and merge, then replace it atomically (write + rename), so proxies for other
// servers sharing the file do not lose each other's pins.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { ToolDef } from './engine.js';

export const PINNED_FIELDS = ['name', 'title', 'description', 'inputSchema', 'outputSchema', 'annotations'] as const;

export interface Pin {
  sha256: string;
  first_seen: string;
  definition: Record<string, unknown>;
}

interface StoreFile {
  version: 1;
  servers: Record<string, { tools: Record<string, Pin> }>;
}

export interface PinChange {
  tool: string;
  /** Which pinned fields differ, e.g. ["description", "inputSchema"]. */
  fields: string[];
  pinned: Pin;
  current: Pin;
}

export interface PinObservation {
  /** Tools seen for the first time (now pinned). */
  added: string[];
  /** Tools whose definition differs from the pin, and were not re-pinned. */
  changed: PinChange[];
  /** Tools whose new definition replaced the pin because repin was requested. */
  repinned: PinChange[];
}

export function defaultPinPath(): string {
  const state = process.env.XDG_STATE_HOME || join(homedir(), '.local', 'state');
  return join(state, 'bridle', 'mcp-pins.json');
}

/** JSON with object keys sorted at every level, so equal definitions hash equally. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(v as Record<string, unknown>).filter((k) => (v as Record<string, unknown>)[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

export function pinOf(def: ToolDef, now = new Date()): Pin {
  const definition: Record<string, unknown> = {};
  for (const f of PINNED_FIELDS) if (def[f] !== undefined) definition[f] = def[f];
  return { sha256: createHash('sha256').update(canonicalJson(definition)).digest('hex'), first_seen: now.toISOString(), definition };
}

function readStore(path: string): StoreFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, servers: {} };
    throw new Error(`cannot read the MCP pin store ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new Error(`the MCP pin store ${path} is not valid JSON (${(err as Error).message}); fix or remove it`);
  }
  const d = data as Partial<StoreFile>;
  if (!d || d.version !== 1 || typeof d.servers !== 'object' || d.servers === null) {
    throw new Error(`the MCP pin store ${path} is not a version 1 pin store; fix or remove it`);
  }
  return d as StoreFile;
}

/** obj[key] = value as an own property, also for keys like `__proto__` (a tool or server may be named so). */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export class PinStore {
  /** A Map, not an object: a tool may be named `toString` or `__proto__`. */
  private pins: Map<string, Pin>;
  /** Changes reported already in this process, so a change is reported once per new digest. */
  private reported = new Set<string>();

  /** Reads the store; throws a clear Error when it exists but cannot be read or parsed. */
  constructor(
    readonly path: string,
    readonly server: string,
    private readonly opts: { repin?: boolean; persist?: boolean } = {},
  ) {
    const servers = readStore(path).servers;
    const tools = Object.hasOwn(servers, server) ? servers[server]?.tools : undefined;
    this.pins = new Map(tools ? Object.entries(tools) : []);
  }

  get(tool: string): Pin | undefined {
    return this.pins.get(tool);
  }

  /**
   * Compares a listing with the pins: new tools are pinned (and saved), changed ones returned. With
   * repin, a changed definition replaces its pin. `fresh` lists only changes not returned before.
   */
  observe(defs: readonly ToolDef[], now = new Date()): PinObservation & { fresh: PinChange[]; saveError?: Error } {
    const out: PinObservation & { fresh: PinChange[]; saveError?: Error } = { added: [], changed: [], repinned: [], fresh: [] };
    const updates = new Map<string, Pin>();
    for (const def of defs) {
      if (typeof def?.name !== 'string') continue;
      const current = pinOf(def, now);
      const pinned = this.pins.get(def.name);
      if (!pinned) {
        this.pins.set(def.name, current);
        updates.set(def.name, current);
        out.added.push(def.name);
        continue;
      }
      if (pinned.sha256 === current.sha256) continue;
      const fields = PINNED_FIELDS.filter((f) => canonicalJson(pinned.definition[f]) !== canonicalJson(current.definition[f]));
      const change: PinChange = { tool: def.name, fields, pinned, current };
      if (this.opts.repin) {
        this.pins.set(def.name, current);
        updates.set(def.name, current);
        out.repinned.push(change);
      } else {
        out.changed.push(change);
        const key = `${def.name}\0${current.sha256}`;
        if (!this.reported.has(key)) {
          this.reported.add(key);
          out.fresh.push(change);
        }
      }
    }
    if (updates.size && this.opts.persist !== false) {
      // what the listing holds is decided above, saved or not
      try {
        this.save(updates);
      } catch (err) {
        out.saveError = err as Error;
      }
    }
    return out;
  }

  private save(updates: Map<string, Pin>): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    let store: StoreFile;
    try {
      store = readStore(this.path);
    } catch {
      store = { version: 1, servers: {} };
    }
    if (!Object.hasOwn(store.servers, this.server)) setOwn(store.servers, this.server, { tools: {} });
    const tools = store.servers[this.server]!.tools;
    for (const [name, pin] of updates) {
      // Another proxy may have pinned this tool meanwhile: keep its pin unless we are re-pinning.
      if (!Object.hasOwn(tools, name) || this.opts.repin) setOwn(tools, name, pin);
    }
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(store, null, 2) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
