// Shared by the collector-side CLI commands (collector, events, lineage, sessions, certs): where files
// live by default, the connection flags, and how events, processes and sessions print.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { bridleHome, defaultCertsDir, DEFAULT_PORT } from './defaults.js';
export { bridleHome, defaultCertsDir, DEFAULT_PORT, CONNECT_HELP } from './defaults.js';
import { UsageError } from '../cli/command.js';
import type { FlagSpec } from '../cli/args.js';
import type { BridleEvent } from '../events/types.js';
import { createQueryClient, type QueryClient } from './client.js';
import type { ProcessRow, SessionRow } from './store.js';
import { readTokenFile, type TlsFiles } from './tls.js';

/** `-o X` → `--output X` (the shared flag parser knows long flags only). */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-o') out.push('--output');
    else if (a.startsWith('-o') && a.length > 2 && !a.startsWith('--')) out.push(`--output=${a.slice(2)}`);
    else if (a === '-f') out.push('--follow');
    else out.push(a);
  }
  return out;
}

export const CONNECT_FLAGS: FlagSpec = {
  collector: 'string', certs: 'string', ca: 'string', cert: 'string', key: 'string', token: 'string', 'token-file': 'string',
  insecure: 'boolean', 'server-name': 'string', output: 'string',
};

export function outputMode(flags: Record<string, unknown>): 'text' | 'json' {
  const o = (flags.output as string | undefined) ?? 'text';
  if (o !== 'text' && o !== 'json') throw new UsageError(`-o must be text or json, not '${o}'`);
  return o;
}

/** TLS files from --ca/--cert/--key, else from a certs directory. */
export function tlsFromFlags(flags: Record<string, unknown>, names: { cert: string; key: string }): TlsFiles | undefined {
  const given = ['ca', 'cert', 'key'].filter((k) => flags[k]);
  if (given.length && given.length < 3) throw new UsageError('--ca, --cert and --key go together');
  if (given.length === 3) return { ca: flags.ca as string, cert: flags.cert as string, key: flags.key as string };
  const dir = (flags.certs as string | undefined) ?? defaultCertsDir();
  const files = { ca: join(dir, 'ca.crt'), cert: join(dir, names.cert), key: join(dir, names.key) };
  if (!existsSync(files.ca) || !existsSync(files.cert) || !existsSync(files.key)) {
    if (flags.certs) throw new UsageError(`${dir} lacks ca.crt, ${names.cert} or ${names.key} (make them with \`bridle certs init --dir ${dir}\`)`);
    return undefined;
  }
  return files;
}

export function tokenFromFlags(flags: Record<string, unknown>): string | undefined {
  if (flags.token) return flags.token as string;
  if (process.env.BRIDLE_TOKEN) return process.env.BRIDLE_TOKEN;
  const file = (flags['token-file'] as string | undefined) ?? join((flags.certs as string | undefined) ?? defaultCertsDir(), 'query.token');
  if (!existsSync(file)) {
    if (flags['token-file']) throw new UsageError(`token file ${file} does not exist`);
    return undefined;
  }
  return readTokenFile(file)[0];
}

export function collectorAddress(flags: Record<string, unknown>): string {
  const a = (flags.collector as string | undefined) ?? process.env.BRIDLE_COLLECTOR ?? `127.0.0.1:${DEFAULT_PORT}`;
  if (!/^(\[[^\]]+\]|[^:\s]+):\d+$/.test(a)) throw new UsageError(`--collector '${a}' is not HOST:PORT`);
  return a;
}

export function queryClientFromFlags(flags: Record<string, unknown>): QueryClient {
  const collector = collectorAddress(flags);
  const token = tokenFromFlags(flags);
  if (flags.insecure) {
    process.stderr.write('bridle: WARNING: --insecure: talking to the collector in PLAIN TEXT\n');
    return createQueryClient({ collector, insecure: true, ...(token ? { token } : {}) });
  }
  const tls = tlsFromFlags(flags, { cert: 'query-admin.crt', key: 'query-admin.key' });
  if (!tls) {
    throw new UsageError(
      `no certificates for the collector link in ${defaultCertsDir()}: give --certs DIR or --ca/--cert/--key (made by \`bridle certs\`), or --insecure`,
    );
  }
  return createQueryClient({
    collector, tls, ...(token ? { token } : {}), ...(flags['server-name'] ? { serverName: flags['server-name'] as string } : {}),
  });
}

/** gRPC errors as one readable line. */
export function describeError(err: unknown, collector: string): Error {
  const e = err as { code?: number; details?: string; message?: string };
  switch (e.code) {
    case 14:
      return new Error(`cannot reach the collector at ${collector}: ${e.details ?? e.message}`);
    case 16:
      return new Error(`the collector refused the credential: ${e.details}`);
    case 7:
      return new Error(`permission denied: ${e.details}`);
    case 4:
      return new Error(`the collector did not answer in time (${collector})`);
    default:
      return new Error(e.details ?? e.message ?? String(err));
  }
}

// ---- formatting ----

export function fmtTime(ms: number): string {
  return ms ? new Date(ms).toISOString().replace('T', ' ').replace('Z', '') : '-';
}

export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m}m`;
  return `${(m / 60).toFixed(1)}h`;
}

const q = (s: string): string => (/^[\w@%+=:,./-]+$/.test(s) ? s : JSON.stringify(s));
export const fmtArgv = (argv: string[], max = 120): string => {
  const s = argv.map(q).join(' ');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
};

/** The type-specific part of an event, in a few words. */
export function eventDetail(ev: BridleEvent): string {
  switch (ev.type) {
    case 'exec':
      return `${ev.path}  ${fmtArgv(ev.argv)}${ev.script ? `  (script ${ev.script})` : ''}${ev.fileless ? '  (fileless)' : ''}${ev.via_loader ? '  (via loader)' : ''}`;
    case 'exit':
      return ev.signal ? `signal ${ev.signal}${ev.exit_code !== undefined ? ` (status ${ev.exit_code})` : ''}` : `status ${ev.exit_code ?? '?'}`;
    case 'connect':
      return `${ev.proto} ${ev.family === 'inet6' ? `[${ev.daddr}]` : ev.daddr}${ev.family === 'unix' ? '' : `:${ev.dport}`}${ev.op && ev.op !== 'connect' ? ` (${ev.op})` : ''}`;
    case 'dns':
      return `${ev.name} → ${ev.answers.join(', ') || '(no answer)'}`;
    case 'tool_call':
      return `${ev.server}.${ev.tool}${ev.reason ? `  (${ev.reason})` : ''}${ev.is_error ? '  error' : ''}`;
    case 'session_start':
      return `${ev.agent ?? 'session'} ${ev.origin} ${ev.mode} backend=${ev.backend}${ev.path ? `  ${ev.path}` : ''}`;
    case 'session_end':
      return ev.signal ? `signal ${ev.signal}` : `status ${ev.exit_code ?? '?'}`;
    case 'violation':
      return `${ev.what}${ev.detail ? `: ${ev.detail}` : ''}`;
    case 'loss':
      return `${ev.count} events lost (${ev.where})`;
    case 'policy':
      return `${ev.action}${ev.detail ? `: ${ev.detail}` : ''}`;
    default:
      return '';
  }
}

export function verdictTag(ev: BridleEvent): string {
  if (!ev.verdict) return '';
  const tag = ev.verdict === 'allow' ? 'allow' : ev.verdict === 'deny' ? 'DENY' : 'WOULD-DENY';
  return ev.rule ? `${tag} (${ev.rule})` : tag;
}

/** One line per event: time host session pid type verdict detail. */
export function eventLine(ev: BridleEvent): string {
  const cols = [fmtTime(Date.parse(ev.ts)), ev.host, ev.session || '-', String(ev.pid), ev.type.padEnd(13), verdictTag(ev), eventDetail(ev)];
  return cols.filter((c, i) => c !== '' || i < 5).join('  ');
}

export function processLabel(p: ProcessRow): string {
  const name = p.path || '(unknown image)';
  const args = p.argv.length > 1 ? `  ${fmtArgv(p.argv.slice(1), 80)}` : '';
  return `${name}${args}  [pid ${p.pid || '?'}${p.uid ? `, uid ${p.uid}` : ''}]`;
}

export function sessionHeadline(s: SessionRow): string {
  const end = s.end ? `ended ${fmtTime(s.end)} (${fmtDuration(s.end - s.start)}${s.exit_code !== undefined ? `, status ${s.exit_code}` : ''}${s.signal ? `, signal ${s.signal}` : ''})` : 'running';
  return (
    `session ${s.session} on ${s.host}: ${s.agent || 'agent ?'} (${s.origin || '?'}, ${s.mode || '?'}${s.policy ? `, policy ${s.policy}` : ''}), uid ${s.uid}, ` +
    `started ${fmtTime(s.start)}, ${end}; ${s.events} events, ${s.denials} denied${s.would_deny ? `, ${s.would_deny} would-deny` : ''}${s.lost ? `, ${s.lost} LOST` : ''}`
  );
}

/** Left-aligned columns. */
export function table(header: string[], rows: string[][]): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** Writes to stdout, resolving when flushed (so large outputs are not cut by process exit). */
export function out(s: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(s)) resolve();
    else process.stdout.once('drain', resolve);
  });
}
