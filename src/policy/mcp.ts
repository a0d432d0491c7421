// The `mcp:` section of the policy: which tools of which MCP server an agent may call, under which
// argument conditions, and how the proxy treats tool definitions (pinning) and logged arguments
// (redaction). Everything here is plain data (the policy stays JSON-serialisable); globs, CEL expressions
// and regexes are compiled once here only to report mistakes with file:line:col, and again by
// src/mcp/engine.ts, which makes the decisions. docs/mcp.md documents the section for users.
import type { Node } from 'yaml';
import { isMap, isScalar } from 'yaml';
import { ARG_OPS, compileArgRegex, compileCel } from '../mcp/conditions.js';
import { compileGlob } from '../mcp/glob.js';
import type { Action, Source } from './types.js';
import type { YamlCtx } from './yamlctx.js';

export type PinMode = 'block' | 'report' | 'off';

export interface ToolPattern {
  /** Stable rule id, e.g. "mcp.servers.github.tools.deny[0]". */
  id: string;
  glob: string;
  src: Source;
}

/** Structured checks on one argument; all present keys must hold. */
export interface ArgOps {
  equals?: unknown;
  one_of?: unknown[];
  prefix?: string;
  suffix?: string;
  /** Matches the whole value. */
  regex?: string;
  min?: number;
  max?: number;
  /** Absolute directory; the value must be an absolute path beneath it after lexical normalisation. */
  under?: string;
  max_length?: number;
  /** When true, a missing argument satisfies the condition (otherwise it fails it). */
  optional?: boolean;
}

export interface ArgCondition {
  /** Dot-separated path into the arguments: "repo", "options.path". */
  path: string;
  ops: ArgOps;
  src: Source;
}

export interface SqlCheck {
  check: 'read-only';
  /** The argument that holds the SQL; default: the first of sql, query, statement that is present. */
  arg?: string;
  dialect: 'postgres';
}

export interface McpRule {
  id: string;
  /** Tool-name globs the rule applies to. */
  tools: string[];
  /**
   * allow: the named tools are allowed (even when not in tools.allow), but only when every condition
   * holds; a failing condition denies. deny: the call is denied when every condition holds.
   */
  action: Action;
  /** CEL expression over `args`, `tool`, `server`. */
  when?: string;
  args: ArgCondition[];
  sql?: SqlCheck;
  src: Source;
}

/** Which resources (by URI) a client may read or subscribe to; listings show only those. */
export interface ResourcePolicy {
  /** For URIs neither list names. Default: deny when resources.allow is given, else allow. */
  default: Action;
  allow: ToolPattern[];
  deny: ToolPattern[];
}

export interface McpServerPolicy {
  name: string;
  /** "mcp.servers.<name>" */
  id: string;
  /** For tools no allow list, rule or deny list names. Default: deny when tools.allow is given, else allow. */
  default: Action;
  allow: ToolPattern[];
  deny: ToolPattern[];
  rules: McpRule[];
  /** Argument paths (dot-separated, segments may be globs) replaced by "[redacted]" in events. */
  redact: string[];
  /** What a changed tool definition (rug pull) does: block the tool, report it, or nothing. */
  pin: PinMode;
  /** Validate arguments against the tool's inputSchema before forwarding. */
  schema: 'enforce' | 'off';
  resources: ResourcePolicy;
  src: Source;
}

export interface McpPolicy {
  servers: Record<string, McpServerPolicy>;
  /** Pin store path from the policy (the CLI's --pins overrides; default under ~/.local/state/bridle). */
  pins?: string;
  /** Largest JSON-RPC message accepted from the client, in bytes. */
  maxMessageBytes: number;
  /** Redaction paths applied to every server. */
  redact: string[];
}

export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

const SERVER_KEYS = ['default', 'tools', 'rules', 'redact', 'pin', 'schema', 'resources'] as const;
const RULE_KEYS = ['tool', 'action', 'when', 'args', 'sql'] as const;

export function parseMcpSection(node: Node | null | undefined, ctx: YamlCtx): McpPolicy {
  const src = (n: Node | null | undefined): Source => ({ file: ctx.file, ...ctx.pos(n) });
  const m = ctx.mapping(node, 'mcp', ['servers', 'pins', 'max_message_bytes', 'redact']) ?? new Map<string, Node | null>();

  const pins = ctx.string(m.get('pins'), 'mcp.pins', { optional: true });
  const maxMessageBytes = ctx.integer(m.get('max_message_bytes'), 'mcp.max_message_bytes', 1024, 1024 * 1024 * 1024) ?? DEFAULT_MAX_MESSAGE_BYTES;
  const redact = parseRedact(ctx, m.get('redact'), 'mcp.redact');

  const servers: Record<string, McpServerPolicy> = {};
  for (const [name, value, keyNode] of ctx.entries(m.get('servers'), 'mcp.servers')) {
    const id = `mcp.servers.${name}`;
    if (name === '' || /[\s]/.test(name)) {
      ctx.error(keyNode, `${id}: a server name must be non-empty and contain no spaces`);
      continue;
    }
    if (Object.prototype.hasOwnProperty.call(servers, name)) {
      ctx.error(keyNode, `mcp.servers: duplicate server '${name}'`);
      continue;
    }
    const sm = ctx.mapping(value, id, SERVER_KEYS);
    if (!sm) continue;
    const tm = ctx.mapping(sm.get('tools'), `${id}.tools`, ['allow', 'deny']) ?? new Map<string, Node | null>();
    const rm = ctx.mapping(sm.get('resources'), `${id}.resources`, ['default', 'allow', 'deny']) ?? new Map<string, Node | null>();
    const patterns = (action: Action, section: 'tools' | 'resources' = 'tools'): ToolPattern[] => {
      const where = `${id}.${section}.${action}`;
      const listNode = (section === 'tools' ? tm : rm).get(action);
      const items = listNode != null && isScalar(listNode) ? [listNode] : ctx.seq(listNode, where);
      const out: ToolPattern[] = [];
      items.forEach((item, i) => {
        const g = ctx.string(item, `${where}[${i}]`);
        if (g === undefined) return;
        if (checkGlob(ctx, item, `${where}[${i}]`, g)) out.push({ id: `${where}[${i}]`, glob: g, src: src(item) });
      });
      return out;
    };
    const allow = patterns('allow');
    const deny = patterns('deny');
    const rules: McpRule[] = [];
    ctx.seq(sm.get('rules'), `${id}.rules`).forEach((item, i) => {
      const r = parseRule(ctx, item, `${id}.rules[${i}]`);
      if (r) rules.push(r);
    });
    servers[name] = {
      name,
      id,
      default: ctx.oneOf(sm.get('default'), `${id}.default`, ['allow', 'deny'] as const, tm.has('allow') ? 'deny' : 'allow'),
      allow,
      deny,
      rules,
      redact: parseRedact(ctx, sm.get('redact'), `${id}.redact`),
      pin: ctx.oneOf(sm.get('pin'), `${id}.pin`, ['block', 'report', 'off'] as const, 'block'),
      schema: ctx.oneOf(sm.get('schema'), `${id}.schema`, ['enforce', 'off'] as const, 'enforce'),
      resources: {
        default: ctx.oneOf(rm.get('default'), `${id}.resources.default`, ['allow', 'deny'] as const, rm.has('allow') ? 'deny' : 'allow'),
        allow: patterns('allow', 'resources'),
        deny: patterns('deny', 'resources'),
      },
      src: src(keyNode),
    };
  }
  return { servers, ...(pins !== undefined ? { pins } : {}), maxMessageBytes, redact };
}

function checkGlob(ctx: YamlCtx, node: Node | null | undefined, where: string, g: string): boolean {
  try {
    compileGlob(g);
    return true;
  } catch (err) {
    ctx.error(node, `${where}: bad glob ${(err as Error).message}`);
    return false;
  }
}

function parseRedact(ctx: YamlCtx, node: Node | null | undefined, where: string): string[] {
  const out = ctx.stringList(node, where);
  for (const p of out) {
    for (const seg of p.split('.')) {
      if (seg === '') ctx.error(node, `${where}: '${p}' has an empty path segment`);
      else {
        try {
          compileGlob(seg);
        } catch (err) {
          ctx.error(node, `${where}: '${p}': bad glob ${(err as Error).message}`);
        }
      }
    }
  }
  return out;
}

function parseRule(ctx: YamlCtx, item: Node, id: string): McpRule | undefined {
  const src: Source = { file: ctx.file, ...ctx.pos(item) };
  const m = ctx.mapping(item, id, RULE_KEYS);
  if (!m) return undefined;
  if (!m.has('tool')) {
    ctx.error(item, `${id}.tool is required (a tool name or glob, or a list of them)`);
    return undefined;
  }
  const toolNode = m.get('tool');
  const tools = ctx.stringList(toolNode, `${id}.tool`);
  let ok = tools.length > 0;
  for (const g of tools) ok = checkGlob(ctx, toolNode, `${id}.tool`, g) && ok;

  const action = ctx.oneOf(m.get('action'), `${id}.action`, ['allow', 'deny'] as const, 'allow');

  let when: string | undefined;
  if (m.has('when')) {
    const wn = m.get('when');
    when = ctx.string(wn, `${id}.when`);
    if (when !== undefined) {
      try {
        compileCel(when);
      } catch (err) {
        ctx.error(wn, `${id}.when: the CEL expression does not compile: ${(err as Error).message}`);
        ok = false;
      }
    } else ok = false;
  }

  const args: ArgCondition[] = [];
  for (const [path, condNode, keyNode] of ctx.entries(m.get('args'), `${id}.args`)) {
    const where = `${id}.args.${path}`;
    if (path === '' || path.split('.').some((s) => s === '')) {
      ctx.error(keyNode, `${where}: an argument path is dot-separated names, like repo or options.path`);
      ok = false;
      continue;
    }
    const c = parseArgOps(ctx, condNode, keyNode, where);
    if (c) args.push({ path, ops: c, src: { file: ctx.file, ...ctx.pos(keyNode) } });
    else ok = false;
  }

  let sql: SqlCheck | undefined;
  if (m.has('sql')) {
    sql = parseSql(ctx, m.get('sql'), `${id}.sql`);
    if (!sql) ok = false;
  }

  if (!ok) return undefined;
  return { id, tools, action, ...(when !== undefined ? { when } : {}), args, ...(sql ? { sql } : {}), src };
}

function parseSql(ctx: YamlCtx, node: Node | null | undefined, where: string): SqlCheck | undefined {
  if (node != null && isScalar(node)) {
    const s = ctx.string(node, where);
    if (s === undefined) return undefined;
    if (s !== 'read-only') {
      ctx.error(node, `${where} must be 'read-only' or a mapping {check: read-only, arg: NAME, dialect: postgres}`);
      return undefined;
    }
    return { check: 'read-only', dialect: 'postgres' };
  }
  const m = ctx.mapping(node, where, ['check', 'arg', 'dialect']);
  if (!m) return undefined;
  if (!m.has('check')) {
    ctx.error(node, `${where}.check is required (read-only)`);
    return undefined;
  }
  const check = ctx.oneOf(m.get('check'), `${where}.check`, ['read-only'] as const, 'read-only');
  const arg = ctx.string(m.get('arg'), `${where}.arg`, { optional: true });
  const dialect = ctx.oneOf(m.get('dialect'), `${where}.dialect`, ['postgres'] as const, 'postgres');
  return { check, dialect, ...(arg !== undefined ? { arg } : {}) };
}

function parseArgOps(ctx: YamlCtx, node: Node | null, keyNode: Node, where: string): ArgOps | undefined {
  const m = ctx.mapping(node, where, ARG_OPS);
  if (!m) return undefined;
  if (node == null || (isMap(node) && node.items.length === 0)) {
    ctx.error(node ?? keyNode, `${where}: give at least one of ${ARG_OPS.join(', ')}`);
    return undefined;
  }
  if (m.size === 0) return undefined; // only unknown keys, each reported already
  const before = ctx.problems.length;
  const ops: ArgOps = {};
  const str = (k: 'prefix' | 'suffix' | 'regex' | 'under') => {
    if (m.has(k)) {
      const v = ctx.string(m.get(k), `${where}.${k}`);
      if (v !== undefined) ops[k] = v;
    }
  };
  const num = (k: 'min' | 'max') => {
    const n = m.get(k);
    if (n == null) return;
    if (!isScalar(n) || typeof n.value !== 'number' || !Number.isFinite(n.value)) ctx.error(n, `${where}.${k} must be a number`);
    else ops[k] = n.value;
  };
  if (m.has('equals')) ops.equals = ctx.value(m.get('equals')) ?? null;
  if (m.has('one_of')) {
    const v = ctx.value(m.get('one_of'));
    if (!Array.isArray(v) || v.length === 0) ctx.error(m.get('one_of'), `${where}.one_of must be a non-empty list of values`);
    else ops.one_of = v;
  }
  str('prefix');
  str('suffix');
  str('regex');
  str('under');
  num('min');
  num('max');
  if (ops.min !== undefined && ops.max !== undefined && ops.min > ops.max) ctx.error(m.get('min'), `${where}: min ${ops.min} is greater than max ${ops.max}`);
  if (m.has('max_length')) {
    const n = ctx.integer(m.get('max_length'), `${where}.max_length`, 0, Number.MAX_SAFE_INTEGER);
    if (n !== undefined) ops.max_length = n;
  }
  if (m.has('optional')) ops.optional = ctx.boolean(m.get('optional'), `${where}.optional`, false);
  if (ops.regex !== undefined) {
    try {
      compileArgRegex(ops.regex);
    } catch (err) {
      ctx.error(m.get('regex'), `${where}.regex: bad regular expression: ${(err as Error).message}`);
    }
  }
  if (ops.under !== undefined && !ops.under.startsWith('/')) ctx.error(m.get('under'), `${where}.under: '${ops.under}' must be an absolute directory`);
  if (Object.keys(ops).length === 1 && ops.optional !== undefined) ctx.error(node, `${where}: 'optional' alone checks nothing`);
  return ctx.problems.length === before ? ops : undefined;
}
