// Policy → kernel map entries. Pure: stats files for identities but touches no map; the sensor writes
// the result under a fresh generation and switches to it with one map update.
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { CFG_ARGV_DENY, CFG_CRED_DIRS, CFG_CRED_FILES, CFG_EXEC_DENY, CFG_EXEC_DIR_DENY, DIR_DEPTH, KEY_KIND, LAYOUT, MARK_LOADER, RULE_ID_ARGV_UNSEEN, RULE_ID_DEEP, TAG_MONITOR, VERDICT } from '../kernel/layout.js';
import type { Action, ExecRule, Policy } from './types.js';

export interface Entry {
  key: Buffer;
  value: Buffer;
}

/** A deny entry kept from an earlier compile; `dir`: it belongs in exec_dir (else exec_ident). */
export interface Carried extends Entry {
  dir: boolean;
  /** Which table and key, as a string. */
  id: string;
}

/** A rule the kernel can name by number; events turn rule_id back into `id`. */
export interface RuleRef {
  id: string;
  text: string;
}

/**
 * Rule id of `builtin.bridle_files`: bridle's own files (its TLS key and certificates, spool, state, an
 * embedded collector's store and tokens), denied to every session as credential files whatever its policy.
 * Index 4 of every compiled rule table (after builtin.argv_unseen).
 */
export const RULE_ID_BRIDLE_FILES = 4;

/** What compileExec adds to a policy from outside it. */
export interface CompileOptions {
  /** bridle's own files and directories, denied to every session (builtin.bridle_files). */
  bridleFiles?: string[];
  /** More homes `~/` in credentials.files.deny stands for (the HOME a session is given). */
  homes?: string[];
}

export interface CompiledExec {
  /** Indexed by rule_id. 0 = exec.default, 1 = exec.fileless, 2 = builtin.dir_depth, 3 = builtin.argv_unseen, 4 = builtin.bridle_files. */
  rules: RuleRef[];
  ident: Entry[];
  dirs: Entry[];
  argv: Entry[];
  cfg: { defaultAction: number; filelessAction: number; filelessRule: number; defaultRule: number; flags: number };
  agents: { names: Entry[]; idents: Entry[]; list: { id: number; name: string }[] };
  /** credentials.files.deny paths that do not exist yet (nothing to enter by identity). */
  credMissing: string[];
  /** Deny entries kept from earlier compiles of the policy (carryDenies), oldest first. */
  carried: Carried[];
  /**
   * Deny rule paths, and allow `path:` rule paths (`allow`), and what they were when compiled (`dev:ino`
   * of what the path leads to, '' when nothing): the supervisor compiles again when one of them changes.
   */
  watched: Array<{ path: string; ident: string; within?: boolean; allow?: boolean; refused?: boolean }>;
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

/** The search path when the supervisor has none (glibc's default for root, as execvp uses). */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Names of multi-call binaries: one file that is many programs, chosen by argv[0]. */
const MULTI_CALL = new Set(['busybox', 'toybox', 'coreutils']);

/**
 * How many names in the directories of a search path lead to each real file (symlinks followed), built
 * once per compile (argvNames' `cache`) and only when an argv: rule asks.
 */
export interface PathNames {
  path: string;
  byTarget?: Map<string, Set<string>>;
  /** The names in each directory of the search path (read once: a policy of 100,000 argv: rules would
   *  otherwise stat each word in each directory). */
  present?: Map<string, Set<string>>;
}

/** Is there an entry `name` in directory `dir` of the search path (as read once per compile)? */
function presentIn(cache: PathNames, dir: string, name: string): boolean {
  cache.present ??= new Map();
  let names = cache.present.get(dir);
  if (!names) {
    try {
      names = new Set(readdirSync(dir));
    } catch {
      names = new Set();
    }
    cache.present.set(dir, names);
  }
  return names.has(name);
}

function namesLeadingTo(cache: PathNames, real: string): number {
  if (!cache.byTarget) {
    const byTarget = new Map<string, Set<string>>();
    const dirs = new Set<string>();
    for (const d of cache.path.split(':')) {
      if (!d.startsWith('/')) continue;
      try {
        dirs.add(realpathSync(d)); // /bin and /usr/bin are often one directory
      } catch {
        /* not there */
      }
    }
    for (const d of dirs) {
      let entries;
      try {
        entries = readdirSync(d, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        let target: string;
        if (e.isSymbolicLink()) {
          try {
            target = realpathSync(join(d, e.name));
          } catch {
            continue; // dangling
          }
        } else if (e.isFile()) target = join(d, e.name);
        else continue;
        let names = byTarget.get(target);
        if (!names) byTarget.set(target, (names = new Set()));
        names.add(e.name);
      }
    }
    cache.byTarget = byTarget;
  }
  return cache.byTarget.get(real)?.size ?? 0;
}

/**
 * Is `real` (a real path, `st` its stat) a multi-call binary (busybox, toybox, a single-binary coreutils)?
 * By its name, by more than 2 hard links, or by more than 3 names in the search path leading to it.
 */
function isMultiCall(real: string, st: { nlink: number }, cache: PathNames): boolean {
  return MULTI_CALL.has(basename(real)) || st.nlink > 2 || namesLeadingTo(cache, real) > 3;
}

/**
 * The names an argv: rule's word 0 is entered under: its basename, and the basename of the real path
 * (symlinks followed) of what it names: for an absolute path, that file; for a bare name, the executable
 * file of that name in each directory of `path` (the supervisor's PATH), in PATH order. A name with a
 * slash that is not absolute (`./x`) is taken as written. Deduplicated, in that order.
 *
 * Not the name of a multi-call binary (isMultiCall): the kernel compares word 0 with argv[0] and with the
 * executed file's own name, so `argv: [wget]` entered under `busybox` would deny every applet of it.
 * `cache`: the search path's names, shared by every argv: rule of one compile.
 */
export function argvNames(word0: string, path = process.env.PATH || DEFAULT_PATH, cache: PathNames = { path }): string[] {
  const names = [basename(word0)];
  const c = cache.path === path ? cache : { path };
  const files = word0.startsWith('/')
    ? [word0]
    : word0.includes('/') || !word0
      ? []
      : path.split(':').filter((d) => d.startsWith('/') && presentIn(c, d, word0)).map((d) => join(d, word0));
  for (const f of files) {
    try {
      const st = statSync(f);
      if (!st.isFile() || !(st.mode & 0o111)) continue;
      const real = realpathSync(f);
      if (!isMultiCall(real, st, c)) names.push(basename(real));
    } catch {
      /* not there: nothing to follow */
    }
  }
  return [...new Set(names)];
}

/** Does `path` lead to a `#!` script (whose exec the kernel sees as its interpreter's)? */
function isScript(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const b = Buffer.alloc(2);
    return readSync(fd, b, 0, 2, 0) === 2 && b.toString('latin1') === '#!';
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Bytes of the path given to execve the kernel hashes for an agents: match (BRIDLE_NAME_MAX - 1). */
const EXEC_PATH_MAX = 255;

/** Converts a userspace st_dev (glibc encoding) to the kernel's internal s_dev (MAJOR<<20 | MINOR). */
export function kernelDev(stDev: bigint): bigint {
  const major = ((stDev >> 8n) & 0xfffn) | ((stDev >> 32n) & ~0xfffn);
  const minor = (stDev & 0xffn) | ((stDev >> 12n) & ~0xffn);
  return ((major << 20n) | minor) & MASK64;
}

/** A file as the kernel knows it: s_dev, inode number and the inode's generation (Sensor.identify). */
export interface FileIdent {
  dev: bigint;
  ino: bigint;
  generation: number;
  /**
   * For a file on an overlay, the identities beneath it (the file holding its data; a directory's upper
   * and lower directories): the kernel decides a file on an overlay as both the overlay's file and the
   * file beneath it, and a rule is entered under every identity of what it names.
   */
  beneath?: FileIdent[];
}

/**
 * What each path leads to (symlinks followed), as the kernel's rule keys need it; undefined where
 * nothing. The sensor answers it (stat() does not give the generation).
 */
export type Identify = (paths: string[]) => Array<FileIdent | undefined>;

/** dev:ino by stat(), for unix socket rules (netcompile.ts). */
export function identity(path: string): { dev: bigint; ino: bigint } {
  const st = statSync(path, { bigint: true });
  return { dev: kernelDev(st.dev), ino: st.ino };
}

/**
 * An identity as a string, for comparing what a path leads to over time ('' for nothing). On an overlay,
 * the files beneath too: a file copied up (a new upper file) has changed what a rule must be entered under.
 */
export function identString(id: FileIdent | undefined): string {
  if (!id) return '';
  const one = (f: FileIdent) => `${f.dev}:${f.ino}:${f.generation}`;
  return id.beneath?.length ? `${one(id)}/${id.beneath.map(one).join(',')}` : one(id);
}

/** Bytes of a name the kernel hashes for a name rule (dname_hash: the first 63). */
const DNAME_HASHED = 63;

/** Where a name rule for `path` points: the real path of the file, or of its directory plus its name. */
function nameTarget(path: string): string | undefined {
  try {
    return realpathSync(path);
  } catch {
    try {
      return join(realpathSync(dirname(path)), basename(path)); // not there yet: its name in the directory
    } catch {
      return undefined;
    }
  }
}

/**
 * The key of a deny rule on `path` by its name in its directory (BRIDLE_KEY_*_NAME), or undefined when the
 * directory does not exist. Symlinks on the way are followed: the kernel sees the file they lead to.
 */
function nameKey(gen: number, kind: number, path: string, one: (path: string) => FileIdent | undefined): Buffer | undefined {
  const real = nameTarget(path);
  if (!real || real === '/') return undefined;
  const dir = one(dirname(real));
  if (!dir) return undefined;
  const hash = fnv1a(Buffer.from(basename(real), 'utf8').subarray(0, DNAME_HASHED)) & 0xffffffffn;
  const at = (d: FileIdent) => keyOf(gen, kind, d.dev | (hash << 32n), d.ino ^ (BigInt(d.generation) << 32n));
  return withBeneath(at(dir), dir, at);
}

/**
 * The keys of the identities beneath an overlay file or directory, by the key made for its own identity
 * (identKey, nameKey): put() enters a rule under all of them. The kernel decides a file on an overlay as
 * the overlay's file and as the file beneath it, so a rule naming a path on an overlay holds for both, and
 * for the same file reached through its lower or upper directory.
 */
const beneathKeys = new WeakMap<Buffer, Buffer[]>();

function withBeneath(key: Buffer, id: FileIdent, keyFor: (id: FileIdent) => Buffer): Buffer {
  if (id.beneath?.length) beneathKeys.set(key, id.beneath.map(keyFor));
  return key;
}

/** The key of a rule on a file by identity (ident_dev() in bpf/include/sensor.h); see beneathKeys. */
function identKey(gen: number, id: FileIdent, kind: number = KEY_KIND.EXEC): Buffer {
  const at = (f: FileIdent) => keyOf(gen, kind, f.dev | (BigInt(f.generation) << 32n), f.ino);
  return withBeneath(at(id), id, at);
}

function keyOf(gen: number, kind: number, dev: bigint, ino: bigint): Buffer {
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

/** Did root put this file there: root owns it, its directory and the directory of the name (a symlink), none writable by group or others? */
function installedByRoot(path: string): boolean {
  try {
    const real = realpathSync(path);
    return [real, dirname(real), dirname(path)].every((p) => {
      const st = statSync(p);
      return st.uid === 0 && (st.mode & 0o022) === 0;
    });
  } catch {
    return false;
  }
}

function describe(r: ExecRule): string {
  if (r.kind === 'path') return `${r.action} path ${r.path}`;
  if (r.kind === 'dir') return `${r.action} dir ${r.dir}`;
  return `${r.action} argv ${r.argv.join(' ')}`;
}

/**
 * Compiles the exec and agents sections for rule generation `gen` and policy id `policyId`. `keep`: an
 * earlier compile of the same policy whose deny rules by identity are kept (see carryDenies). `opts`:
 * bridle's own files (denied whatever the policy says) and the homes sessions are given.
 */
export function compileExec(policy: Policy, gen: number, policyId: number, identify: Identify, keep?: CompiledExec, opts: CompileOptions = {}): CompiledExec {
  // The paths rules name, identified in one batch (each batch is one iterator run in the kernel).
  const homes = policy.credentials.files.deny.length ? homeDirs({ extra: opts.homes }) : [];
  const bridleFiles = ownFiles(opts.bridleFiles ?? []);
  const credPaths = [...policy.credentials.files.deny.flatMap((p) => credentialPaths(p, homes)), ...bridleFiles];
  const denyPaths = policy.exec.deny.flatMap((r) => (r.kind === 'path' ? [r.path] : []));
  const named = [
    ...[...policy.exec.deny, ...policy.exec.allow].flatMap((r) => (r.kind === 'path' ? [r.path] : r.kind === 'dir' ? [r.dir] : [])),
    ...credPaths,
    ...policy.agents.flatMap((a) => a.exe.filter((e) => e.startsWith('/'))),
    // the directories name rules are keyed by
    ...[...denyPaths, ...credPaths].flatMap((p) => {
      const real = nameTarget(p);
      return real && real !== '/' ? [dirname(real)] : [];
    }),
  ];
  const known = new Map<string, FileIdent | undefined>();
  identify(named).forEach((id, i) => known.set(named[i]!, id));
  const one = (path: string): FileIdent | undefined => (known.has(path) ? known.get(path) : identify([path])[0]);
  let mountPoints: string[] | undefined; // read once, when a denied directory first asks
  const pathNames: PathNames = { path: process.env.PATH || DEFAULT_PATH }; // read once, when an argv: rule first asks
  // What lies beneath a denied directory, entered under its rule: the roots of file systems mounted
  // beneath it (dirs), and its files by identity (a hard link to one of them elsewhere is outside it).
  const denyBeneath = (dir: string, kind: number, ruleId: number): void => {
    mountPoints ??= mountTable();
    for (const m of mountsBeneath(dir, mountPoints)) {
      const root = one(m);
      if (root) put(dirs, identKey(gen, root, kind), VERDICT.DENY, ruleId);
    }
    for (const f of filesBeneath(dir, DIR_FILES, identify)) put(ident, identKey(gen, f, kind), VERDICT.DENY, ruleId);
  };
  const rules: RuleRef[] = [
    { id: 'exec.default', text: `default ${policy.exec.default}` },
    { id: 'exec.fileless', text: `fileless ${policy.exec.fileless}` },
    { id: 'builtin.dir_depth', text: `deny a file whose directories could not all be checked (more than about ${DIR_DEPTH - 6} deep, or opened by handle): a denied directory could be above it` },
    {
      id: 'builtin.argv_unseen',
      text:
        'deny an exec whose argv[0] (the caller chooses it) pushed the words argv: rules look at past the bytes the sensor copies, ' +
        'or a program run through the dynamic loader whose own argv could not be told (a loader option bridle does not know, or the words before the program past the copied bytes)',
    },
    { id: 'builtin.bridle_files', text: "deny bridle's own files (its key and certificates, spool, state) to every session, whatever its policy" },
  ];
  if (
    rules[RULE_ID_DEEP]?.id !== 'builtin.dir_depth' ||
    rules[RULE_ID_ARGV_UNSEEN]?.id !== 'builtin.argv_unseen' ||
    rules[RULE_ID_BRIDLE_FILES]?.id !== 'builtin.bridle_files'
  ) {
    throw new Error('builtin rules out of place');
  }
  const watched: CompiledExec['watched'] = [];
  // One entry per key: an explicit deny beats an explicit allow on the same identity or prefix.
  const ident = new Map<string, { key: Buffer; action: number; ruleId: number; loader?: boolean }>();
  const dirs = new Map<string, { key: Buffer; action: number; ruleId: number }>();
  const argv = new Map<string, { key: Buffer; action: number; ruleId: number }>();
  const put = (m: Map<string, { key: Buffer; action: number; ruleId: number }>, key: Buffer, action: number, ruleId: number) => {
    // an identity on an overlay: the rule holds under the identities beneath it too
    for (const each of [key, ...(beneathKeys.get(key) ?? [])]) {
      const k = each.toString('hex');
      const cur = m.get(k);
      if (!cur || (cur.action !== VERDICT.DENY && action === VERDICT.DENY)) m.set(k, { ...cur, key: each, action, ruleId });
    }
  };
  // Exec deny rules by identity or directory (executable mappings and #! scripts are checked against them).
  let execDeny = false;
  let execDirDeny = false;
  let argvDeny = false;
  // what the compile in force took for each allow path: rule (followed only when root replaced the file)
  const allowWatched = keep && new Map(keep.watched.filter((w) => w.allow).map((w) => [w.path, w]));
  // deny rules first so that, within one action, the first rule in the file is the one reported
  for (const r of [...policy.exec.deny, ...policy.exec.allow]) {
    const ruleId = rules.length;
    rules.push({ id: r.id, text: describe(r) });
    const action = actionCode(r.action);
    const deny = action === VERDICT.DENY;
    if (r.kind === 'path') {
      // The loader checked the file exists. Gone since (uninstalled): nothing by identity, but a deny rule
      // keeps its name rule and its watch, and what it denied before stays denied (carryDenies).
      const id = one(r.path);
      // An allowed file replaced since the policy was loaded (a package upgrade) is followed only when
      // root put it there (root owns it and its directory, neither writable by others): a file swapped in
      // by a session that can write at the path is not what the policy allowed. Refused, it stays refused
      // until the path changes again or the policy is loaded anew.
      let refused = false;
      const prev = !deny && id ? allowWatched?.get(r.path) : undefined;
      if (prev) refused = prev.ident !== identString(id) ? !installedByRoot(r.path) : !!prev.refused;
      if (id && !refused) put(ident, identKey(gen, id), action, ruleId);
      if (deny) {
        // also by name: what an upgrade (or anyone) puts at the path later is denied too. Allow rules stay
        // by identity: a file swapped in at an allowed path is not what the policy allowed.
        const nk = nameKey(gen, KEY_KIND.EXEC_NAME, r.path, one);
        if (nk) put(ident, nk, action, ruleId);
        watched.push({ path: r.path, ident: identString(id) });
      } else {
        watched.push({ path: r.path, ident: identString(id), allow: true, ...(refused ? { refused } : {}) });
      }
      execDeny ||= deny;
    } else if (r.kind === 'dir') {
      const id = one(r.dir);
      if (deny) watched.push({ path: r.dir, ident: identString(id) });
      if (!id) continue; // a dir that does not exist contains nothing to decide yet
      put(dirs, identKey(gen, id), action, ruleId);
      if (deny) denyBeneath(r.dir, KEY_KIND.EXEC, ruleId);
      execDeny ||= deny;
      execDirDeny ||= deny;
    } else {
      // word 0 also under the name of the file it leads to (sh is dash, python3 is python3.11): the
      // kernel compares argv[0] and the executed file's own name, and `exec -a` chooses argv[0]
      const f = LAYOUT.bridle_argv_key.fields;
      for (const name of argvNames(r.argv[0] ?? '', pathNames.path, pathNames)) {
        const key = Buffer.alloc(LAYOUT.bridle_argv_key.size);
        key.writeUInt32LE(gen, f.policy);
        key.writeUInt32LE(Math.min(r.argv.length, 8), f.nargs);
        key.writeBigUInt64LE(argvHash([name, ...r.argv.slice(1, 8)]), f.hash);
        put(argv, key, action, ruleId);
      }
      argvDeny ||= deny;
    }
  }
  // credentials.files.deny: the same identity tables under their own key kind, deny only. A directory
  // is denied itself and everything beneath it. Entries that do not exist on this host are skipped.
  let credRules = false;
  let credDirs = false;
  const credMissing: string[] = [];
  // `within`: watch a directory's contents (its files are entered by identity, the supervisor compiles
  // again when they come and go); bridle's own directories change all the time (the spool, the state
  // files), and are covered as directories for what appears in them later.
  const credEntry = (abs: string, ruleId: number, rule: string, within: boolean): void => {
    let st;
    try {
      st = statSync(abs, { bigint: true });
    } catch {
      st = undefined;
    }
    if (!st?.isDirectory()) {
      // A file (or nothing yet) also by its name in its directory: a file written there later, or the
      // file rewritten by rename (a new inode), is denied the moment it is there.
      const nk = nameKey(gen, KEY_KIND.CRED_NAME, abs, one);
      if (nk) {
        put(ident, nk, VERDICT.DENY, ruleId);
        credRules = true;
      }
    }
    const id = one(abs);
    // a directory's files are entered by identity: the supervisor compiles again when they change
    watched.push({ path: abs, ident: identString(id), within: within && st?.isDirectory() });
    if (st && !id) throw new Error(`${rule}: ${abs} exists but cannot be opened to take its identity`);
    if (!st || !id) {
      credMissing.push(abs); // the supervisor watches for it and recompiles when it appears
      return;
    }
    put(ident, identKey(gen, id, KEY_KIND.CRED), VERDICT.DENY, ruleId);
    credRules = true;
    if (!st.isDirectory()) return;
    credDirs = true;
    put(dirs, identKey(gen, id, KEY_KIND.CRED), VERDICT.DENY, ruleId);
    denyBeneath(abs, KEY_KIND.CRED, ruleId);
  };
  // bridle's own files first: a key both name keeps the first rule, so a file of bridle's that the policy
  // also names is reported (and decided) as builtin.bridle_files
  for (const abs of bridleFiles) credEntry(abs, RULE_ID_BRIDLE_FILES, 'builtin.bridle_files', false);
  policy.credentials.files.deny.forEach((p, i) => {
    const ruleId = rules.length;
    rules.push({ id: `credentials.files.deny[${i}]`, text: `deny file ${p}` });
    for (const abs of credentialPaths(p, homes)) credEntry(abs, ruleId, `credentials.files.deny[${i}]`, true);
  });

  // Mark the dynamic loaders so the kernel decides the program they are asked to run.
  const seen = new Set<string>();
  for (const cand of LOADER_CANDIDATES) {
    if (!existsSync(cand)) continue;
    const real = realpathSync(cand);
    if (seen.has(real)) continue;
    seen.add(real);
    const id = one(real);
    // an upgraded loader is a new file: the supervisor compiles again so the mark follows it
    watched.push({ path: real, ident: identString(id) });
    if (!id) continue;
    const key = identKey(gen, id);
    const k = key.toString('hex');
    const cur = ident.get(k);
    if (cur) cur.action |= MARK_LOADER;
    else ident.set(k, { key, action: MARK_LOADER | 2 /* neither allow nor deny */, ruleId: 0 });
  }

  const toEntries = (m: Map<string, { key: Buffer; action: number; ruleId: number }>): Entry[] =>
    [...m.values()].map((e) => ({ key: e.key, value: ruleValue(e.action, e.ruleId) }));

  // agents: a bare name by basename hash; an absolute path by the file's identity (policy id 0 in the
  // key), never by its basename (another program of that name elsewhere is not the agent). A #! script
  // cannot be matched by identity: at sched_process_exec the kernel holds its interpreter, the script's
  // file is released; it is matched by the path execve is given (as written, or its real path), hashed
  // whole (a basename holds no slash, so the two kinds of key do not meet).
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
    const nameEntry = (name: string) => {
      const k = Buffer.alloc(8);
      k.writeBigUInt64LE(fnv1a(Buffer.from(name, 'utf8')));
      names.push({ key: k, value: v });
    };
    for (const exe of a.exe) {
      if (!exe.startsWith('/')) {
        nameEntry(basename(exe));
        continue;
      }
      const id = one(exe);
      // installed, upgraded or replaced later (a new file): the supervisor compiles again
      watched.push({ path: exe, ident: identString(id) });
      if (!id) continue; // not installed on this host: nothing matches
      if (!isScript(exe)) {
        idents.push({ key: identKey(0, id), value: v });
        continue;
      }
      let real = exe;
      try {
        real = realpathSync(exe);
      } catch {
        /* gone meanwhile: as written */
      }
      for (const p of new Set([exe, real])) if (Buffer.byteLength(p) <= EXEC_PATH_MAX) nameEntry(p);
    }
  });

  const carried = carryDenies(keep, toEntries(ident), toEntries(dirs));
  return {
    rules,
    ident: carried.ident,
    dirs: carried.dirs,
    carried: carried.carried,
    argv: toEntries(argv),
    cfg: {
      defaultAction: actionCode(policy.exec.default),
      filelessAction: actionCode(policy.exec.fileless),
      filelessRule: 1,
      defaultRule: 0,
      flags:
        (policy.mode === 'monitor' ? TAG_MONITOR : 0) |
        (credRules ? CFG_CRED_FILES : 0) |
        (credDirs ? CFG_CRED_DIRS : 0) |
        (execDeny ? CFG_EXEC_DENY : 0) |
        (execDirDeny ? CFG_EXEC_DIR_DENY : 0) |
        (argvDeny ? CFG_ARGV_DENY : 0) |
        (keep ? keep.cfg.flags & (CFG_CRED_FILES | CFG_CRED_DIRS | CFG_EXEC_DENY | CFG_EXEC_DIR_DENY) : 0),
    },
    agents: { names, idents, list },
    credMissing,
    watched,
  };
}

/**
 * A path a deny rule names now leads somewhere else (the supervisor compiles again when it sees that).
 * What it led to before stays denied: otherwise a session could move a denied directory or file away,
 * put anything at its path, and read or run the original under its new name once the policy follows the
 * path. Kept until the policy is loaded again. Rule ids are the same: it is the same policy.
 */
function carryDenies(keep: CompiledExec | undefined, ident: Entry[], dirs: Entry[]): { ident: Entry[]; dirs: Entry[]; carried: Carried[] } {
  if (!keep) return { ident, dirs, carried: [] };
  const isDeny = (e: Entry) => (e.value.readUInt32LE(LAYOUT.bridle_rule.fields.action) & 0xff) === VERDICT.DENY;
  const nowDeny = new Set([...ident.filter(isDeny).map((e) => carryId(false, e)), ...dirs.filter(isDeny).map((e) => carryId(true, e))]);
  // the earlier compile's own entries come first in its tables, what it carried after them
  const carriedIdent = keep.carried.filter((c) => !c.dir).length;
  const own: Carried[] = [
    ...keep.ident.slice(0, keep.ident.length - carriedIdent).filter(isDeny).map((e) => ({ ...e, dir: false, id: carryId(false, e) })),
    ...keep.dirs.slice(0, keep.dirs.length - (keep.carried.length - carriedIdent)).filter(isDeny).map((e) => ({ ...e, dir: true, id: carryId(true, e) })),
  ];
  const carried = [...keep.carried, ...own].filter((c) => !nowDeny.has(c.id));
  // Nothing is dropped to make room: a session could move files through a denied directory until what it
  // wanted went first. Past the bound the new compile fails and the one in force stays.
  if (carried.length > CARRY_MAX) {
    throw new Error(
      `${carried.length} files denied by earlier compiles are no longer where the policy names (more than ${CARRY_MAX}): ` +
        'files are being moved out of denied places in bulk; the policy in force stays until it is loaded again',
    );
  }
  // A carried deny beats an allow the new compile has for the same key (which it then replaces). Carried
  // entries go last, in the order `carried` lists them: the next compile tells its own entries by that.
  const merge = (now: Entry[], add: Carried[], dir: boolean): Entry[] => {
    const replaced = new Set(add.map((c) => c.id));
    return [...now.filter((e) => !replaced.has(carryId(dir, e))), ...add];
  };
  return { ident: merge(ident, carried.filter((c) => !c.dir), false), dirs: merge(dirs, carried.filter((c) => c.dir), true), carried };
}

const carryId = (dir: boolean, e: Entry): string => `${dir ? 'd' : 'i'}${e.key.toString('hex')}`;

/** Most deny entries kept from earlier compiles (the rule tables hold 262,144 entries, two generations at a switch). */
const CARRY_MAX = 32768;

/** The mount points of bridle's mount namespace (/proc/self/mountinfo, octal escapes undone). */
function mountTable(): string[] {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  return info
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p): p is string => !!p);
}

/**
 * Mount points beneath `dir`. A dir: walk from a file on such a mount reaches the mount's root and then
 * where it is mounted; the same file system mounted elsewhere as well (a bind mount a session makes)
 * would lead the walk past `dir`, so each such mount's root is entered as a directory of the rule too.
 */
function mountsBeneath(dir: string, points: string[]): string[] {
  let real: string;
  try {
    real = realpathSync(dir);
  } catch {
    return [];
  }
  const prefix = real === '/' ? '/' : `${real}/`;
  return points.filter((p) => p !== real && p.startsWith(prefix));
}

/**
 * Most files a denied directory contributes by identity (a credentials directory is small; beyond this,
 * the files of a denied exec directory are denied by place only).
 */
const DIR_FILES = 4096;

/** Identities of the regular files beneath `dir` (not following symlinks), at most `max`. */
function filesBeneath(dir: string, max: number, identify: Identify): FileIdent[] {
  const out: string[] = [];
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
      else if (st.isFile()) out.push(p);
    }
  };
  walk(dir, 0);
  return identify(out).filter((id): id is FileIdent => id !== undefined);
}

/**
 * Directories accounts name as their home that are no one's home: system accounts get `/`, `/bin`,
 * `/usr/sbin`, `/nonexistent`, `/dev/null`; `~/x` there would name system files (or nothing). Compared as
 * written and as their real path (`/bin` is `/usr/bin` on a merged /usr).
 */
const NOT_HOMES = new Set([
  '/', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/boot', '/etc', '/home', '/media', '/mnt', '/opt', '/srv', '/tmp',
  '/usr', '/usr/bin', '/usr/sbin', '/usr/lib', '/usr/lib64', '/usr/libexec', '/usr/games', '/usr/share', '/usr/src',
  '/usr/local', '/usr/local/bin', '/usr/local/sbin', '/usr/local/lib', '/usr/local/share',
  '/var', '/var/lib', '/var/cache', '/var/log', '/var/run', '/var/tmp', '/var/empty', '/run', '/nonexistent',
]);
/** Pseudo file systems: nothing under them is a home. */
const NOT_HOME_TREES = ['/dev/', '/proc/', '/sys/'];

const notHome = (p: string): boolean => NOT_HOMES.has(p) || NOT_HOME_TREES.some((t) => p.startsWith(t)) || p === '/dev' || p === '/proc' || p === '/sys';

/** Is `home` (absolute) a home `~/` can stand for: a directory that exists, and no system directory? */
function isHome(home: string, mustExist: boolean): boolean {
  if (notHome(home)) return false;
  let real: string;
  try {
    if (!statSync(home).isDirectory()) return false;
    real = realpathSync(home);
  } catch {
    return !mustExist;
  }
  return !notHome(real);
}

/**
 * The account database as NSS answers it (`getent passwd`: /etc/passwd, LDAP, sssd, systemd-homed …),
 * or /etc/passwd itself where there is no getent.
 */
function accounts(getent: string, passwd: string): string {
  try {
    return execFileSync(getent, ['passwd'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000, maxBuffer: 256 << 20 });
  } catch {
    try {
      return readFileSync(passwd, 'utf8');
    } catch {
      return ''; // no account database: the supervisor's home and the session's only
    }
  }
}

/**
 * Home directories `~/` stands for: every account's (of any uid: a session may run as a service account
 * too) whose home is a directory that exists and no system directory (see NOT_HOMES), the supervisor's
 * own, and `extra` (the HOME sessions are given, which no account need name: taken whether it exists
 * yet or not). Sorted, so the same accounts always give the same rules.
 *
 * The accounts' homes are read (getent, a stat of each) at most once a minute, or when the passwd file
 * changes (`maxAgeMs`). A home beneath an autofs mount that the automounter has not mounted is left out
 * (stat'ing it would mount it, and every home of the host with it): a session that goes there mounts it,
 * and the rules cover it from the next compile on (the session's own HOME is always in `extra`).
 */
export function homeDirs(o: { getent?: string; passwd?: string; extra?: Array<string | undefined>; maxAgeMs?: number } = {}): string[] {
  const out = new Set<string>(accountHomes(o.getent ?? 'getent', o.passwd ?? '/etc/passwd', o.maxAgeMs ?? ACCOUNT_HOMES_MAX_AGE_MS));
  const add = (h: string | undefined) => {
    if (!h || !h.startsWith('/')) return;
    const abs = resolve(h);
    if (isHome(abs, false)) out.add(abs);
  };
  add(homedir());
  for (const h of o.extra ?? []) add(h);
  return [...out].sort();
}

/**
 * How long the accounts' homes are taken as read (every compile asks: reloads, recompiles after a watched
 * path changed, every per-session policy); a change to the passwd file (useradd) is seen at once.
 */
const ACCOUNT_HOMES_MAX_AGE_MS = 60_000;
const accountCache = new Map<string, { at: number; stamp: string; homes: string[] }>();

/** The passwd file as it stands now (inode, size, modification time), '' when there is none. */
function fileStamp(path: string): string {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.ino}:${st.size}:${st.mtimeNs}`;
  } catch {
    return '';
  }
}

/** The homes of every account (accounts()) that are homes by isHome, cached (ACCOUNT_HOMES_MAX_AGE_MS). */
function accountHomes(getent: string, passwd: string, maxAgeMs: number): string[] {
  const key = `${getent}\0${passwd}`;
  const stamp = fileStamp(passwd);
  const now = Date.now();
  const hit = accountCache.get(key);
  if (hit && hit.stamp === stamp && now - hit.at < maxAgeMs) return hit.homes;
  const auto = autofsMounts();
  const homes = new Set<string>();
  for (const line of accounts(getent, passwd).split('\n')) {
    const h = line.split(':')[5];
    if (!h || !h.startsWith('/')) continue;
    const abs = resolve(h);
    // a home an automounter has not mounted is not stat'ed: that would mount every home on the host
    if (auto && !automountedYet(abs, auto)) continue;
    if (isHome(abs, true)) homes.add(abs);
  }
  const list = [...homes];
  accountCache.set(key, { at: now, stamp, homes: list });
  return list;
}

/**
 * The autofs mount points of this mount namespace and the other mount points beneath them (what the
 * automounter has mounted), from /proc/self/mountinfo; undefined when there is no autofs mount.
 */
function autofsMounts(): { autofs: string[]; mounted: string[] } | undefined {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  const autofs: string[] = [];
  const other: string[] = [];
  for (const line of info.split('\n')) {
    const dash = line.indexOf(' - ');
    if (dash < 0) continue;
    const point = line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (!point) continue;
    (line.slice(dash + 3).split(' ')[0] === 'autofs' ? autofs : other).push(point);
  }
  if (!autofs.length) return undefined;
  const within = (p: string, dir: string) => p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);
  return { autofs, mounted: other.filter((p) => autofs.some((a) => within(p, a))) };
}

/** Is `home` outside every autofs mount, or on a file system the automounter has mounted already? */
function automountedYet(home: string, m: { autofs: string[]; mounted: string[] }): boolean {
  const within = (p: string, dir: string) => p === dir || p.startsWith(dir === '/' ? '/' : `${dir}/`);
  if (!m.autofs.some((a) => within(home, a))) return true;
  return m.mounted.some((p) => within(home, p));
}

/**
 * bridle's own files as rules take them: absolute, each once, in order; never a system directory or
 * anything under /dev, /proc or /sys (`--events /dev/stdout` is the terminal, a BRIDLE_HOME of /var/lib
 * every service's state), which denied to every session would stop it working.
 */
export function ownFiles(paths: string[]): string[] {
  const out = new Set<string>();
  for (const p of paths) {
    if (!p) continue;
    const abs = resolve(p);
    let real = abs;
    try {
      real = realpathSync(abs);
    } catch {
      /* not there yet: as written */
    }
    if (!notHome(abs) && !notHome(real)) out.add(abs);
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
