// Policy → kernel map entries. Pure: stats files for identities but touches no map; the sensor writes
// the result under a fresh generation and switches to it with one map update.
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { CFG_CRED_FILES, CFG_EXEC_DENY, KEY_KIND, LAYOUT, MARK_LOADER, TAG_MONITOR, VERDICT } from '../kernel/layout.js';
import type { Action, ExecRule, Policy } from './types.js';

export interface Entry {
  key: Buffer;
  value: Buffer;
}

/** A rule the kernel can name by number; events turn rule_id back into `id`. */
export interface RuleRef {
  id: string;
  text: string;
}

export interface CompiledExec {
  /** Indexed by rule_id. 0 = exec.default, 1 = exec.fileless. */
  rules: RuleRef[];
  ident: Entry[];
  dirs: Entry[];
  argv: Entry[];
  cfg: { defaultAction: number; filelessAction: number; filelessRule: number; defaultRule: number; flags: number };
  agents: { names: Entry[]; idents: Entry[]; list: { id: number; name: string }[] };
  /** credentials.files.deny paths that do not exist yet (nothing to enter by identity). */
  credMissing: string[];
}

/** Dynamic loaders that can run a program given as an argument (`ld.so /usr/bin/x`). */
export const LOADER_CANDIDATES = [
  '/lib64/ld-linux-x86-64.so.2',
  '/lib/ld-linux-x86-64.so.2',
  '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
  '/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2',
  '/lib/ld-linux-aarch64.so.1',
  '/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1',
  '/lib/ld-musl-x86_64.so.1',
  '/lib/ld-musl-aarch64.so.1',
];

const FNV_OFF = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = (1n << 64n) - 1n;

/** FNV-1a 64 over bytes, as bpf/process.bpf.c computes it. */
export function fnv1a(bytes: Uint8Array, h = FNV_OFF): bigint {
  for (const c of bytes) {
    h ^= BigInt(c);
    h = (h * FNV_PRIME) & MASK64;
  }
  return h;
}

/** The hash argv: rules are keyed by: basename(argv[0]) NUL argv[1] NUL ... argv[n-1]. */
export function argvHash(argv: string[]): bigint {
  const words = [basename(argv[0] ?? ''), ...argv.slice(1)];
  return fnv1a(Buffer.from(words.join('\0'), 'utf8'));
}

/** Converts a userspace st_dev (glibc encoding) to the kernel's internal s_dev (MAJOR<<20 | MINOR). */
export function kernelDev(stDev: bigint): bigint {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn);
  return ((major << 20n) | minor) & MASK64;
}

export function identity(path: string): { dev: bigint; ino: bigint } {
  const st = statSync(path, { bigint: true });
  return { dev: kernelDev(st.dev), ino: st.ino };
}

function identKey(gen: number, dev: bigint, ino: bigint, kind: number = KEY_KIND.EXEC): Buffer {
  const f = LAYOUT.bridle_ident_key.fields;
  const b = Buffer.alloc(LAYOUT.bridle_ident_key.size);
  b.writeUInt32LE(gen, f.policy);
  b.writeUInt32LE(kind, f.kind);
  b.writeBigUInt64LE(dev, f.dev);
  b.writeBigUInt64LE(ino, f.ino);
  return b;
}

function ruleValue(action: number, ruleId: number): Buffer {
  const b = Buffer.alloc(LAYOUT.bridle_rule.size);
  b.writeUInt32LE(action, LAYOUT.bridle_rule.fields.action);
  b.writeUInt32LE(ruleId, LAYOUT.bridle_rule.fields.rule_id);
  return b;
}

const actionCode = (a: Action) => (a === 'deny' ? VERDICT.DENY : VERDICT.ALLOW);

function describe(r: ExecRule): string {
  if (r.kind === 'path') return `${r.action} path ${r.path}`;
  if (r.kind === 'dir') return `${r.action} dir ${r.dir}`;
  return `${r.action} argv ${r.argv.join(' ')}`;
}

/** Compiles the exec and agents sections for rule generation `gen` and policy id `policyId`. */
export function compileExec(policy: Policy, gen: number, policyId: number): CompiledExec {
  const rules: RuleRef[] = [
    { id: 'exec.default', text: `default ${policy.exec.default}` },
    { id: 'exec.fileless', text: `fileless ${policy.exec.fileless}` },
  ];
  // One entry per key: an explicit deny beats an explicit allow on the same identity or prefix.
  const ident = new Map<string, { key: Buffer; action: number; ruleId: number; loader?: boolean }>();
  const dirs = new Map<string, { key: Buffer; action: number; ruleId: number }>();
  const argv = new Map<string, { key: Buffer; action: number; ruleId: number }>();
  const put = (m: Map<string, { key: Buffer; action: number; ruleId: number }>, key: Buffer, action: number, ruleId: number) => {
    const k = key.toString('hex');
    const cur = m.get(k);
    if (!cur || (cur.action !== VERDICT.DENY && action === VERDICT.DENY)) m.set(k, { ...cur, key, action, ruleId });
  };
  // Exec deny rules by identity or directory (executable mappings and #! scripts are checked against them).
  let execDeny = false;
  // deny rules first so that, within one action, the first rule in the file is the one reported
  for (const r of [...policy.exec.deny, ...policy.exec.allow]) {
    const ruleId = rules.length;
    rules.push({ id: r.id, text: describe(r) });
    const action = actionCode(r.action);
    if (r.kind === 'path') {
      const { dev, ino } = identity(r.path);
      put(ident, identKey(gen, dev, ino), action, ruleId);
      execDeny ||= action === VERDICT.DENY;
    } else if (r.kind === 'dir') {
      let id: { dev: bigint; ino: bigint };
      try {
        id = identity(r.dir);
      } catch {
        continue; // a dir that does not exist contains nothing to decide yet
      }
      put(dirs, identKey(gen, id.dev, id.ino), action, ruleId);
      execDeny ||= action === VERDICT.DENY;
    } else {
      const f = LAYOUT.bridle_argv_key.fields;
      const key = Buffer.alloc(LAYOUT.bridle_argv_key.size);
      key.writeUInt32LE(gen, f.policy);
      key.writeUInt32LE(Math.min(r.argv.length, 8), f.nargs);
      key.writeBigUInt64LE(argvHash(r.argv.slice(0, 8)), f.hash);
      put(argv, key, action, ruleId);
    }
  }
  // credentials.files.deny: the same identity tables under their own key kind, deny only. A directory
  // is denied itself and everything beneath it. Entries that do not exist on this host are skipped.
  let credRules = false;
  const credMissing: string[] = [];
  const homes = policy.credentials.files.deny.length ? homeDirs() : [];
  policy.credentials.files.deny.forEach((p, i) => {
    const ruleId = rules.length;
    rules.push({ id: `credentials.files.deny[${i}]`, text: `deny file ${p}` });
    for (const abs of credentialPaths(p, homes)) {
      let st;
      try {
        st = statSync(abs, { bigint: true });
      } catch {
        credMissing.push(abs); // the supervisor watches for it and recompiles when it appears
        continue;
      }
      const dev = kernelDev(st.dev);
      put(ident, identKey(gen, dev, st.ino, KEY_KIND.CRED), VERDICT.DENY, ruleId);
      credRules = true;
      if (!st.isDirectory()) continue;
      put(dirs, identKey(gen, dev, st.ino, KEY_KIND.CRED), VERDICT.DENY, ruleId);
      // The files in it by identity too: a hard link to one of them elsewhere is outside the directory.
      for (const f of filesBeneath(abs, CRED_DIR_FILES)) put(ident, identKey(gen, f.dev, f.ino, KEY_KIND.CRED), VERDICT.DENY, ruleId);
    }
  });

  // Mark the dynamic loaders so the kernel decides the program they are asked to run.
  const seen = new Set<string>();
  for (const cand of LOADER_CANDIDATES) {
    if (!existsSync(cand)) continue;
    const real = realpathSync(cand);
    if (seen.has(real)) continue;
    seen.add(real);
    const { dev, ino } = identity(real);
    const key = identKey(gen, dev, ino);
    const k = key.toString('hex');
    const cur = ident.get(k);
    if (cur) cur.action |= MARK_LOADER;
    else ident.set(k, { key, action: MARK_LOADER | 2 /* neither allow nor deny */, ruleId: 0 });
  }

  const toEntries = (m: Map<string, { key: Buffer; action: number; ruleId: number }>): Entry[] =>
    [...m.values()].map((e) => ({ key: e.key, value: ruleValue(e.action, e.ruleId) }));

  // agents: by basename hash, or by identity for absolute paths (policy id 0 in the key)
  const names: Entry[] = [];
  const idents: Entry[] = [];
  const list: { id: number; name: string }[] = [];
  policy.agents.forEach((a, i) => {
    const id = i + 1;
    list.push({ id, name: a.name });
    const f = LAYOUT.bridle_agent.fields;
    const v = Buffer.alloc(LAYOUT.bridle_agent.size);
    v.writeUInt32LE(id, f.agent_id);
    v.writeUInt32LE(policyId, f.policy);
    const words = a.argv.slice(0, 4);
    v.writeUInt32LE(words.length, f.nargv);
    words.forEach((w, j) => v.writeBigUInt64LE(fnv1a(Buffer.from(w, 'utf8')), f.argv_hash + 8 * j));
    for (const exe of a.exe) {
      if (exe.startsWith('/')) {
        try {
          const { dev, ino } = identity(exe);
          idents.push({ key: identKey(0, dev, ino), value: v });
        } catch {
          /* not installed on this host: the basename still matches */
        }
      }
      const k = Buffer.alloc(8);
      k.writeBigUInt64LE(fnv1a(Buffer.from(basename(exe), 'utf8')));
      names.push({ key: k, value: v });
    }
  });

  return {
    rules,
    ident: toEntries(ident),
    dirs: toEntries(dirs),
    argv: toEntries(argv),
    cfg: {
      defaultAction: actionCode(policy.exec.default),
      filelessAction: actionCode(policy.exec.fileless),
      filelessRule: 1,
      defaultRule: 0,
      flags: (policy.mode === 'monitor' ? TAG_MONITOR : 0) | (credRules ? CFG_CRED_FILES : 0) | (execDeny ? CFG_EXEC_DENY : 0),
    },
    agents: { names, idents, list },
    credMissing,
  };
}

/** Most files a credentials directory contributes by identity (a credentials directory is small). */
const CRED_DIR_FILES = 4096;

/** Identities of the regular files beneath `dir` (not following symlinks), at most `max`. */
function filesBeneath(dir: string, max: number): Array<{ dev: bigint; ino: bigint }> {
  const out: Array<{ dev: bigint; ino: bigint }> = [];
  const walk = (d: string, depth: number): void => {
    if (depth > 16) return;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      if (out.length >= max) return;
      const p = join(d, n);
      let st;
      try {
        st = lstatSync(p, { bigint: true });
      } catch {
        continue;
      }
      if (st.isDirectory()) walk(p, depth + 1);
      else if (st.isFile()) out.push({ dev: kernelDev(st.dev), ino: st.ino });
    }
  };
  walk(dir, 0);
  return out;
}

/** Home directories of the accounts a session may run as: root and regular users (uid 1000–65533). */
export function homeDirs(passwd = '/etc/passwd'): string[] {
  const out = new Set<string>([homedir()]);
  let text = '';
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {
    /* no passwd file: the supervisor's home only */
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    const uid = Number(f[2]);
    const home = f[5];
    if (!home || !home.startsWith('/') || home === '/') continue;
    if (uid === 0 || (uid >= 1000 && uid < 65534)) out.add(home);
  }
  return [...out];
}

/**
 * Where a credentials.files.deny entry is on this host: an absolute path as is; `~/x` under every home a
 * session may run as (sessions are not always the supervisor's user).
 */
export function credentialPaths(p: string, homes: string[] = homeDirs()): string[] {
  if (!p.startsWith('~/')) return [p];
  return [...new Set(homes.map((h) => resolve(h, p.slice(2))))];
}

export function cfgValue(gen: number, c: CompiledExec['cfg']): Buffer {
  const f = LAYOUT.bridle_policy_cfg.fields;
  const b = Buffer.alloc(LAYOUT.bridle_policy_cfg.size);
  b.writeUInt32LE(gen, f.gen);
  b.writeUInt32LE(c.defaultAction, f.default_action);
  b.writeUInt32LE(c.filelessAction, f.fileless_action);
  b.writeUInt32LE(c.filelessRule, f.fileless_rule);
  b.writeUInt32LE(c.defaultRule, f.default_rule);
  b.writeUInt32LE(c.flags, f.flags);
  return b;
}
