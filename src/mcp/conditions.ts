// Argument conditions of MCP rules: CEL expressions (`when:`) and structured checks (`args:`). Pure
// functions; compiled forms are cached by source text so the policy loader (which compiles to report
// errors) and the decision engine share the work.
import { posix } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Environment } from '@marcbachmann/cel-js';
import type { ArgCondition } from '../policy/mcp.js';

// ---- CEL ---------------------------------------------------------------------------------------

const celEnv = new Environment({ enableOptionalTypes: true, limits: { maxAstNodes: 5000, maxDepth: 100 } })
  .registerVariable('args', 'map')
  .registerVariable('tool', 'string')
  .registerVariable('server', 'string');

export interface CelContext {
  args: Record<string, unknown>;
  tool: string;
  server: string;
}

export type CelProgram = (ctx: CelContext) => unknown;

const celCache = new Map<string, CelProgram>();

/** The first line of a cel-js error (the rest is a caret drawing of the expression). */
function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!.trim();
}

/**
 * Compiles and type-checks a `when:` expression. The variables are `args` (the call's arguments, a map),
 * `tool` and `server` (strings). Throws an Error with a one-line message when the expression does not
 * parse, names an unknown variable, or cannot yield a bool.
 */
export function compileCel(source: string): CelProgram {
  const hit = celCache.get(source);
  if (hit) return hit;
  let parsed: ReturnType<typeof celEnv.parse>;
  try {
    parsed = celEnv.parse(source);
  } catch (err) {
    const pos = (err as { node?: { pos?: number } }).node?.pos;
    throw new Error(`${firstLine(err)}${pos !== undefined ? ` (at offset ${pos})` : ''}`);
  }
  const checked = parsed.check();
  if (!checked.valid) throw new Error(firstLine(checked.error));
  if (checked.type !== 'bool' && checked.type !== 'dyn') {
    throw new Error(`the expression yields ${checked.type}, not bool`);
  }
  const prog: CelProgram = (ctx) => parsed(ctx as unknown as Record<string, unknown>);
  celCache.set(source, prog);
  return prog;
}

/** Runs a compiled expression: true/false, or a reason string when it could not be evaluated. */
export function evalCel(prog: CelProgram, ctx: CelContext): boolean | { error: string } {
  try {
    const v = prog(ctx);
    if (typeof v !== 'boolean') return { error: `yielded ${typeof v}, not a bool` };
    return v;
  } catch (err) {
    return { error: firstLine(err) };
  }
}

// ---- structured conditions ---------------------------------------------------------------------

export const ARG_OPS = ['equals', 'one_of', 'prefix', 'suffix', 'regex', 'min', 'max', 'under', 'max_length', 'optional'] as const;

const reCache = new Map<string, RegExp>();

/**
 * Regexes in `args:` match the whole value (they are anchored for you), with Unicode semantics. For a
 * deny rule `.` also matches a line break (`dotAll`): `rm .*` must catch "rm -rf /\necho". An allow rule
 * keeps `.` off line breaks, so that allowing `ls .*` does not allow a second line.
 */
export function compileArgRegex(source: string, dotAll = false): RegExp {
  const key = `${dotAll ? 's' : '-'}${source}`;
  let re = reCache.get(key);
  if (!re) {
    re = new RegExp(`^(?:${source})$`, dotAll ? 'us' : 'u');
    reCache.set(key, re);
  }
  return re;
}

/** Argument paths are dot-separated: `options.path`, `files.0`. */
export function splitPath(path: string): string[] {
  return path.split('.');
}

export function getPath(obj: unknown, segs: readonly string[]): { found: boolean; value: unknown } {
  let cur: unknown = obj;
  for (const s of segs) {
    if (cur === null || typeof cur !== 'object') return { found: false, value: undefined };
    if (!Object.prototype.hasOwnProperty.call(cur, s)) return { found: false, value: undefined };
    cur = (cur as Record<string, unknown>)[s];
  }
  return { found: true, value: cur };
}

/** Lexically normalises a path and tells whether it lies under `dir` (both absolute). No '..' escapes. */
export function isUnder(path: string, dir: string): boolean {
  if (!path.startsWith('/') || path.includes('\0')) return false;
  const p = posix.normalize(path);
  const d = posix.normalize(dir).replace(/\/+$/, '') || '/';
  if (d === '/') return true;
  return p === d || p.startsWith(`${d}/`);
}

const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

/** Marks a reason as "could not be evaluated" (a wrong type): a deny rule then denies. */
const unfit = (error: string): { error: string } => ({ error });

/**
 * One string-valued check applied to a value, or to the elements when the value is a list of strings.
 * For an allow rule every element must pass; for a deny rule one is enough (the rule is about any of
 * them). A value that is not a string, or a list holding anything else, is `unfit`.
 */
function eachString(v: unknown, pred: (s: string) => boolean, deny: boolean): boolean | 'unfit' {
  if (typeof v === 'string') return pred(v);
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) return 'unfit';
  return deny ? v.some((x) => pred(x as string)) : v.every((x) => pred(x as string));
}

/**
 * Checks one structured condition against the call's arguments. Returns undefined when it holds, or the
 * reason it does not (a missing argument fails unless the condition says `optional: true`).
 *
 * `forDeny`: the condition belongs to a deny rule, which must not be escaped by shape: it holds when any
 * element of a list matches, a `.` in a regex matches line breaks too, and a value it cannot judge (of
 * another type than the check takes, a relative path for `under`, a number JSON could not hold) comes
 * back as `{error}`, which denies.
 */
export function checkArg(cond: ArgCondition, args: Record<string, unknown>, forDeny = false): string | { error: string } | undefined {
  const { found, value } = getPath(args, splitPath(cond.path));
  const o = cond.ops;
  if (!found || value === undefined) return o.optional ? undefined : `argument '${cond.path}' is required by this rule`;
  const name = `argument '${cond.path}'`;
  const strings = (pred: (s: string) => boolean, what: string): string | { error: string } | undefined => {
    const r = eachString(value, pred, forDeny);
    if (r === true) return undefined;
    if (r === 'unfit' && forDeny) return unfit(`${name} is not a string or a list of strings (got ${show(value)}), so ${what} cannot be judged`);
    return `${name} ${what}, got ${show(value)}`;
  };
  if ('equals' in o && !isDeepStrictEqual(value, o.equals)) {
    const sameType = typeof value === typeof o.equals && Array.isArray(value) === Array.isArray(o.equals) && (value === null) === (o.equals === null);
    if (forDeny && !sameType) return unfit(`${name} is ${show(value)}, not of the type of ${show(o.equals)}`);
    return `${name} must equal ${show(o.equals)}, got ${show(value)}`;
  }
  if (o.one_of) {
    const ok = (x: unknown) => o.one_of!.some((c) => isDeepStrictEqual(x, c));
    const list = Array.isArray(value) && !o.one_of.some((c) => Array.isArray(c));
    const good = list ? (forDeny ? (value as unknown[]).some(ok) : (value as unknown[]).every(ok)) : ok(value);
    if (!good) return `${name} must be one of ${show(o.one_of)}, got ${show(value)}`;
  }
  if (o.prefix !== undefined) {
    const why = strings((s) => s.startsWith(o.prefix!), `must start with ${show(o.prefix)}`);
    if (why) return why;
  }
  if (o.suffix !== undefined) {
    const why = strings((s) => s.endsWith(o.suffix!), `must end with ${show(o.suffix)}`);
    if (why) return why;
  }
  if (o.regex !== undefined) {
    const re = compileArgRegex(o.regex, forDeny);
    const why = strings((s) => re.test(s), `must match /${o.regex}/`);
    if (why) return why;
  }
  if (o.under !== undefined) {
    if (forDeny) {
      // a relative path lies wherever the server's working directory is: it cannot be judged
      const paths = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
      const rel = paths.find((p) => typeof p === 'string' && (!p.startsWith('/') || p.includes('\0')));
      if (rel !== undefined) return unfit(`${name} holds ${show(rel)}, not an absolute path, so 'under ${o.under}' cannot be judged`);
    }
    const why = strings((s) => isUnder(s, o.under!), `must be an absolute path under ${o.under} (no '..' escapes)`);
    if (why) return why;
  }
  if (o.min !== undefined || o.max !== undefined) {
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      const why = `${name} must be a number, got ${show(value)}`;
      return forDeny ? unfit(why) : why;
    }
    if (o.min !== undefined && value < o.min) return `${name} must be at least ${o.min}, got ${value}`;
    if (o.max !== undefined && value > o.max) return `${name} must be at most ${o.max}, got ${value}`;
  }
  if (o.max_length !== undefined) {
    const len = typeof value === 'string' ? [...value].length : Array.isArray(value) ? value.length : undefined;
    if (len === undefined) {
      const why = `${name} must be a string or a list, got ${show(value)}`;
      return forDeny ? unfit(why) : why;
    }
    if (len > o.max_length) return `${name} is ${len} long, more than max_length ${o.max_length}`;
  }
  return undefined;
}
