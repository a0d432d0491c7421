// MCP decisions as pure functions: (server policy, tool, arguments, what the server listed) → verdict,
// rule, reason. No I/O, no clocks; the transports (stdio.ts, http.ts) and the session (session.ts) call in.
//
// Order of checks, first failing check decides:
//   1. the name must be one the server listed, exactly (other letter cases are refused, not guessed at)
//   2. arguments must be an object
//   3. tools.deny and deny-action rules without conditions (compared case- and Unicode-insensitively)
//   4. a pinned definition that changed, with pin: block
//   5. a grant: tools.allow (exact), an allow-action rule naming the tool, or `default: allow`
//   6. the server's inputSchema (schema: enforce)
//   7. every rule naming the tool, in order: allow-action rules' conditions must hold; deny-action rules
//      deny when theirs hold. A condition that cannot be evaluated denies.
// In monitor mode the verdict of a denial is `would_deny` and the caller forwards the call anyway.
import { realpathSync } from 'node:fs';
import { posix } from 'node:path';
import type { McpRule, McpServerPolicy } from '../policy/mcp.js';
import type { Mode } from '../policy/types.js';
import type { Verdict } from '../events/types.js';
import { checkArg, compileCel, evalCel, isUnder, type CelProgram } from './conditions.js';
import { compileGlob, foldName, type Glob } from './glob.js';
import { validateArgs } from './schema.js';
import { checkReadOnly } from './sql.js';

/** A tool as a server lists it in tools/list. */
export interface ToolDef {
  name: string;
  title?: string;
  description?: string;
  inputSchema?: unknown;
  outputSchema?: unknown;
  annotations?: unknown;
  [k: string]: unknown;
}

export interface Decision {
  verdict: Verdict;
  /** Which rule decided: "mcp.servers.github.tools.deny[0]", "mcp.servers.github.default", "mcp.protocol.unknown_tool", ... */
  rule: string;
  reason: string;
}

interface CompiledRule {
  rule: McpRule;
  globs: Glob[];
  when?: CelProgram;
  conditional: boolean;
}

export interface CompiledServer {
  policy: McpServerPolicy;
  mode: Mode;
  allow: { id: string; glob: Glob }[];
  deny: { id: string; glob: Glob }[];
  rules: CompiledRule[];
  redact: Glob[][];
  resources: { allow: { id: string; glob: Glob }[]; deny: { id: string; glob: Glob }[] };
  /**
   * credentials.files.deny as absolute paths (every home for `~/`), with the rule each came from; each
   * also as its real path where that differs (/home a symlink to /var/home): a URI names either.
   */
  credentials: { id: string; path: string }[];
}

/**
 * Where `path` really is: its real path, or, for a path that does not exist (yet), its nearest existing
 * directory's real path with the rest as written. Undefined when it is where it says.
 */
function realCredential(path: string): string | undefined {
  let dir = path;
  let rest = '';
  for (;;) {
    try {
      const real = realpathSync(dir);
      const whole = rest ? posix.join(real, rest) : real;
      return whole === path ? undefined : whole;
    } catch {
      const up = posix.dirname(dir);
      if (up === dir) return undefined;
      rest = rest ? posix.join(posix.basename(dir), rest) : posix.basename(dir);
      dir = up;
    }
  }
}

/**
 * Compiles globs and expressions once. Throws only on input parseMcpSection would have rejected.
 * `credentials`: the policy's credentials.files.deny entries, already expanded to absolute paths.
 */
export function compileServer(policy: McpServerPolicy, mode: Mode, globalRedact: string[] = [], credentials: { id: string; path: string }[] = []): CompiledServer {
  const globs = (ps: { id: string; glob: string }[]) => ps.map((p) => ({ id: p.id, glob: compileGlob(p.glob) }));
  return {
    policy,
    mode,
    resources: { allow: globs(policy.resources.allow), deny: globs(policy.resources.deny) },
    credentials: credentials.flatMap((c) => {
      const path = posix.normalize(c.path).replace(/(.)\/+$/, '$1');
      const real = realCredential(path);
      return real ? [{ id: c.id, path }, { id: c.id, path: real }] : [{ id: c.id, path }];
    }),
    allow: globs(policy.allow),
    deny: globs(policy.deny),
    rules: policy.rules.map((rule) => ({
      rule,
      globs: rule.tools.map(compileGlob),
      ...(rule.when !== undefined ? { when: compileCel(rule.when) } : {}),
      conditional: rule.when !== undefined || rule.args.length > 0 || rule.sql !== undefined,
    })),
    redact: [...globalRedact, ...policy.redact].map((p) => p.split('.').map(compileGlob)),
  };
}

export interface CallInput {
  tool: string;
  /** params.arguments as sent (undefined counts as {}). */
  args: unknown;
  /** The server's tools as last listed. When given, unknown names and schema violations are denied. */
  tools?: ReadonlyMap<string, ToolDef>;
  /** Tools whose definition differs from the pinned one: name → what changed. */
  changed?: ReadonlyMap<string, string>;
}

const ruleMatches = (r: CompiledRule, tool: string): boolean =>
  r.rule.action === 'deny' ? r.globs.some((g) => g.testFolded(tool)) : r.globs.some((g) => g.test(tool));

function deny(s: CompiledServer, rule: string, reason: string): Decision {
  return { verdict: s.mode === 'monitor' ? 'would_deny' : 'deny', rule, reason };
}

/** Step 3-5 only (name-level): why a tool is denied whatever its arguments, or the rule that grants it. */
function nameDecision(s: CompiledServer, tool: string, changed?: ReadonlyMap<string, string>): Decision {
  const id = s.policy.id;
  for (const d of s.deny) {
    if (d.glob.testFolded(tool)) {
      const how = d.glob.test(tool) ? '' : ' (compared ignoring letter case and Unicode form)';
      return deny(s, d.id, `'${tool}' matches '${d.glob.source}' in ${id}.tools.deny${how}`);
    }
  }
  for (const r of s.rules) {
    if (r.rule.action === 'deny' && !r.conditional && ruleMatches(r, tool)) {
      return deny(s, r.rule.id, `'${tool}' is denied by ${r.rule.id}`);
    }
  }
  const change = changed?.get(tool);
  if (change !== undefined && s.policy.pin === 'block') {
    return deny(s, `${id}.pin`, `the definition of '${tool}' changed since it was pinned (${change}); a changed tool is blocked until the change is reviewed and re-pinned`);
  }
  const a = s.allow.find((x) => x.glob.test(tool));
  if (a) return { verdict: 'allow', rule: a.id, reason: `'${tool}' matches '${a.glob.source}' in ${id}.tools.allow` };
  const r = s.rules.find((x) => x.rule.action === 'allow' && ruleMatches(x, tool));
  if (r) return { verdict: 'allow', rule: r.rule.id, reason: `'${tool}' is named by ${r.rule.id}` };
  if (s.policy.default === 'allow') return { verdict: 'allow', rule: `${id}.default`, reason: `default: allow for server '${s.policy.name}'` };
  return deny(s, `${id}.default`, `'${tool}' is not in ${id}.tools.allow and no rule allows it (default: deny)`);
}

/** Whether tools/list shows the tool: it is shown unless denied by name (in monitor mode, always). */
export function visible(s: CompiledServer, tool: string, changed?: ReadonlyMap<string, string>): boolean {
  if (s.mode === 'monitor') return true;
  return nameDecision(s, tool, changed).verdict === 'allow';
}

const SQL_ARGS = ['sql', 'query', 'statement'];

/** Evaluates one rule's conditions: undefined when all hold, else why not ({error} when one could not be evaluated). */
function conditions(s: CompiledServer, r: CompiledRule, tool: string, args: Record<string, unknown>): string | { error: string } | undefined {
  if (r.when) {
    const v = evalCel(r.when, { args, tool, server: s.policy.name });
    if (typeof v === 'object') return { error: `when: ${r.rule.when} could not be evaluated: ${v.error}` };
    if (!v) return `when: ${r.rule.when} is false`;
  }
  for (const c of r.rule.args) {
    const why = checkArg(c, args, r.rule.action === 'deny');
    if (why) return why;
  }
  if (r.rule.sql) {
    const name = r.rule.sql.arg ?? SQL_ARGS.find((k) => Object.prototype.hasOwnProperty.call(args, k));
    const sql = name === undefined ? undefined : args[name];
    if (typeof sql !== 'string') {
      return { error: `sql: read-only needs the SQL as a string in argument '${name ?? SQL_ARGS.join("' or '")}'` };
    }
    const v = checkReadOnly(sql);
    if (!v.ok) return `sql: read-only: ${v.reason}`;
  }
  return undefined;
}

/** The decision for one tools/call. Never throws: an unexpected error is a denial. */
export function decide(s: CompiledServer, call: CallInput): Decision {
  try {
    return decideInner(s, call);
  } catch (err) {
    return deny(s, 'mcp.error', `internal error while deciding: ${(err as Error).message}`);
  }
}

function decideInner(s: CompiledServer, call: CallInput): Decision {
  const { tool } = call;
  if (call.tools && !call.tools.has(tool)) {
    const folded = foldName(tool);
    const near = [...call.tools.keys()].find((k) => foldName(k) === folded);
    if (near !== undefined) {
      return deny(s, 'mcp.protocol.tool_case', `there is no tool '${tool}'; the server's tool is '${near}'. Tool names must match exactly (letter case and Unicode form included)`);
    }
    return deny(s, 'mcp.protocol.unknown_tool', `server '${s.policy.name}' lists no tool named '${tool}'`);
  }
  const rawArgs = call.args === undefined ? {} : call.args;
  if (rawArgs === null || typeof rawArgs !== 'object' || Array.isArray(rawArgs)) {
    return deny(s, 'mcp.protocol.invalid', 'params.arguments must be an object');
  }
  const args = rawArgs as Record<string, unknown>;

  const byName = nameDecision(s, tool, call.changed);
  if (byName.verdict !== 'allow') return byName;

  if (s.policy.schema === 'enforce' && call.tools) {
    const v = validateArgs(call.tools.get(tool)!.inputSchema, args);
    if (!v.ok) return deny(s, `${s.policy.id}.schema`, `the arguments do not match the tool's inputSchema: ${v.reason}`);
  }

  for (const r of s.rules) {
    if (!r.conditional || !ruleMatches(r, tool)) continue;
    const why = conditions(s, r, tool, args);
    if (r.rule.action === 'allow') {
      if (why === undefined) continue;
      return deny(s, r.rule.id, typeof why === 'string' ? why : why.error);
    }
    // deny-action: deny when every condition holds, and when one cannot be evaluated (fail closed).
    if (why === undefined) return deny(s, r.rule.id, `the conditions of ${r.rule.id} hold`);
    if (typeof why === 'object') return deny(s, r.rule.id, why.error);
  }
  return byName;
}

export const REDACTED = '[redacted]';

/** A copy of the arguments with every value at a redaction path replaced; the input is not changed. */
export function redactArgs(s: CompiledServer, args: unknown): unknown {
  if (s.redact.length === 0) return args;
  const walk = (v: unknown, paths: Glob[][]): unknown => {
    if (paths.length === 0 || v === null || typeof v !== 'object') return v;
    const out: Record<string, unknown> | unknown[] = Array.isArray(v) ? [] : {};
    for (const [k, child] of Object.entries(v as Record<string, unknown>)) {
      const here = paths.filter((p) => p[0]!.testFolded(k));
      if (here.some((p) => p.length === 1)) (out as Record<string, unknown>)[k] = REDACTED;
      else (out as Record<string, unknown>)[k] = walk(child, here.map((p) => p.slice(1)));
    }
    return out;
  };
  return walk(args, s.redact);
}

// ---- resources (resources/read, resources/subscribe, resources/list) ----

/** Longest resource URI judged; longer ones are denied (no server needs more, and globs stay cheap). */
const MAX_URI = 8192;

/**
 * Every form a server could take `uri` for: as sent; as a URL parser normalises it; and with its
 * percent-escapes decoded and its dot segments resolved (a server that decodes `..%2F` after the fact
 * walks up a directory). For file: URIs, `path` is that decoded, resolved path. Undefined when the
 * URI cannot be judged (not decodable, a NUL byte).
 */
function uriForms(uri: string): { forms: string[]; path?: string } | undefined {
  const forms = new Set([uri]);
  let url: URL | undefined;
  try {
    url = new URL(uri);
    forms.add(url.href);
  } catch {
    /* not a URL the WHATWG parser takes: judged as written and decoded */
  }
  let decoded: string;
  try {
    decoded = decodeURIComponent(uri);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  forms.add(decoded);
  // no scheme, an absolute path: a server that reads files takes it as one (the same checks as file:)
  if (!url && uri.startsWith('/')) {
    const path = posix.normalize(decoded);
    forms.add(path);
    return { forms: [...forms], path };
  }
  if (url?.protocol !== 'file:') return { forms: [...forms] };
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    return undefined;
  }
  if (path.includes('\0')) return undefined;
  // both the parser's view and a server's that splits on the decoded path ("/a/..%2F..%2Fetc")
  path = posix.normalize(path.startsWith('/') ? path : `/${path}`);
  const host = url.hostname === 'localhost' ? '' : url.hostname;
  forms.add(`file://${host}${path}`);
  return { forms: [...forms], path };
}

/** The credentials.files.deny entry `path` falls under (itself or beneath), if any. */
function credentialRule(s: CompiledServer, path: string): { id: string; path: string } | undefined {
  const under = (p: string) => s.credentials.find((c) => isUnder(p, c.path));
  const hit = under(path);
  if (hit) return hit;
  // a symlink beneath an allowed place that leads into a credential directory (the server follows it)
  let real: string | undefined;
  try {
    real = realpathSync(path);
  } catch {
    return undefined; // nothing there (yet): the lexical check above is all there is
  }
  return real === path ? undefined : under(real);
}

/**
 * The decision for reading (or subscribing to) resource `uri`. Order: the URI must be judgeable; a file:
 * URI beneath a credentials.files.deny entry is denied; resources.deny (any form, letter case ignored)
 * denies; resources.allow grants when every form of the URI matches one of its patterns; else the default.
 */
export function decideResource(s: CompiledServer, uri: unknown): Decision {
  try {
    const id = `${s.policy.id}.resources`;
    if (typeof uri !== 'string' || uri === '') return deny(s, 'mcp.protocol.invalid', 'params.uri must be a non-empty string');
    if (uri.length > MAX_URI) return deny(s, 'mcp.protocol.invalid', `params.uri is ${uri.length} characters long, over the limit of ${MAX_URI}`);
    const f = uriForms(uri);
    if (!f) return deny(s, `${id}.default`, `the URI '${uri}' cannot be judged (a bad percent-escape or a NUL byte)`);
    if (f.path !== undefined) {
      const c = credentialRule(s, f.path);
      if (c) return deny(s, c.id, `'${uri}' is ${f.path === c.path ? '' : 'beneath '}${c.path}, a credential file the policy denies (credentials.files.deny)`);
    }
    for (const d of s.resources.deny) {
      const hit = f.forms.find((x) => d.glob.testFolded(x));
      if (hit !== undefined) return deny(s, d.id, `'${hit}' matches '${d.glob.source}' in ${id}.deny`);
    }
    const a = s.resources.allow.find((x) => f.forms.every((form) => x.glob.test(form)));
    if (a) return { verdict: 'allow', rule: a.id, reason: `'${uri}' matches '${a.glob.source}' in ${id}.allow` };
    if (s.policy.resources.default === 'allow') return { verdict: 'allow', rule: `${id}.default`, reason: `resources.default: allow for server '${s.policy.name}'` };
    const partly = s.resources.allow.find((x) => f.forms.some((form) => x.glob.test(form)));
    const why = partly ? ` ('${partly.glob.source}' matches it as written, but not as a server could read it: ${f.forms.filter((x) => !partly.glob.test(x)).join(', ')})` : '';
    return deny(s, `${id}.default`, `'${uri}' is not in ${id}.allow${why} (default: deny)`);
  } catch (err) {
    return deny(s, 'mcp.error', `internal error while deciding: ${(err as Error).message}`);
  }
}

/** Whether resources/list shows a resource: shown unless reading it would be denied (in monitor mode, always). */
export function visibleResource(s: CompiledServer, uri: unknown): boolean {
  return s.mode === 'monitor' || decideResource(s, uri).verdict === 'allow';
}
