// Reads a policy file: YAML → validated Policy. Every problem names file:line:col; a file with any
// problem yields a PolicyError and no Policy, so an invalid policy can never half-apply.
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { isIP } from 'node:net';
import { isScalar, parseDocument, type Node } from 'yaml';
import { parseMcpSection } from './mcp.js';
import type { Action, AgentRule, ExecRule, NetProto, NetRule, Policy, PortRange, Source } from './types.js';
import { LineCounter, PolicyError, YamlCtx } from './yamlctx.js';

const TOP_KEYS = ['version', 'name', 'mode', 'agents', 'exec', 'network', 'credentials', 'mcp'] as const;

export function loadPolicyFile(file: string): Policy {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new PolicyError([{ file, line: 1, col: 1, message: `cannot read policy: ${e.code ?? e.message}` }]);
  }
  return parsePolicy(text, file);
}

export function parsePolicy(text: string, file = '<policy>'): Policy {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const ctx = new YamlCtx(file, doc, lines);
  for (const e of doc.errors) {
    const p = lines.linePos(e.pos[0]);
    ctx.problems.push({ file, line: p.line, col: p.col, message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (doc.errors.length) throw new PolicyError(ctx.problems);
  const root = doc.contents as Node | null;
  if (root == null) throw new PolicyError([{ file, line: 1, col: 1, message: 'policy is empty' }]);
  const top = ctx.mapping(root, 'policy', TOP_KEYS);
  if (!top) throw new PolicyError(ctx.problems);

  const src = (n: Node | null | undefined): Source => ({ file, ...ctx.pos(n) });

  const versionNode = top.get('version');
  if (versionNode == null) ctx.error(root, "policy: 'version: 1' is required");
  else if (ctx.integer(versionNode, 'version', 1, 1) === undefined) void 0;

  const name = ctx.string(top.get('name'), 'name') ?? '';
  const mode = ctx.oneOf(top.get('mode'), 'mode', ['enforce', 'monitor'] as const, 'enforce');

  // agents
  const agents: AgentRule[] = [];
  ctx.seq(top.get('agents'), 'agents').forEach((item, i) => {
    const where = `agents[${i}]`;
    const m = ctx.mapping(item, where, ['name', 'match']);
    if (!m) return;
    const match = ctx.mapping(m.get('match'), `${where}.match`, ['exe', 'argv']);
    const exe = ctx.stringList(match?.get('exe'), `${where}.match.exe`);
    if (!match?.get('exe')) ctx.error(item, `${where}.match.exe is required`);
    for (const e of exe) {
      if (e.includes('/') && !isAbsolute(e)) ctx.error(match?.get('exe'), `${where}.match.exe: '${e}' must be a basename or an absolute path`);
    }
    agents.push({
      id: where,
      name: ctx.string(m.get('name'), `${where}.name`) ?? where,
      exe,
      argv: ctx.stringList(match?.get('argv'), `${where}.match.argv`),
      src: src(item),
    });
  });

  // exec
  const execM = ctx.mapping(top.get('exec'), 'exec', ['default', 'allow', 'deny', 'fileless']) ?? new Map();
  const execRules = (action: Action): ExecRule[] => {
    const out: ExecRule[] = [];
    ctx.seq(execM.get(action), `exec.${action}`).forEach((item, i) => {
      const id = `exec.${action}[${i}]`;
      const before = ctx.problems.length;
      const m = ctx.mapping(item, id, ['path', 'dir', 'argv']);
      if (!m || ctx.problems.length > before) return;
      const kinds = [...m.keys()];
      if (kinds.length !== 1) {
        ctx.error(item, `${id} must have exactly one of path:, dir:, argv:`);
        return;
      }
      const kind = kinds[0]!;
      const node = m.get(kind);
      if (kind === 'argv') {
        const argv = ctx.stringList(node, `${id}.argv`);
        if (argv.length === 0) ctx.error(node ?? item, `${id}.argv must name at least one word`);
        else out.push({ kind: 'argv', argv, id, action, src: src(item) });
        return;
      }
      const p = ctx.string(node, `${id}.${kind}`);
      if (p === undefined) return;
      const abs = expandHome(p);
      if (!isAbsolute(abs)) {
        ctx.error(node, `${id}.${kind}: '${p}' must be an absolute path`);
        return;
      }
      if (kind === 'path') {
        // Identity rules need the file now: a rule on a file that does not exist would match nothing.
        try {
          if (!statSync(abs).isFile()) ctx.error(node, `${id}.path: '${p}' is not a regular file`);
        } catch (err) {
          ctx.error(node, `${id}.path: '${p}': ${(err as NodeJS.ErrnoException).code ?? 'cannot stat'}`);
          return;
        }
        out.push({ kind: 'path', path: abs, id, action, src: src(item) });
      } else {
        out.push({ kind: 'dir', dir: abs.replace(/\/+$/, '') || '/', id, action, src: src(item) });
      }
    });
    return out;
  };
  const exec = {
    default: ctx.oneOf(execM.get('default'), 'exec.default', ['allow', 'deny'] as const, 'allow'),
    allow: execRules('allow'),
    deny: execRules('deny'),
    fileless: ctx.oneOf(execM.get('fileless'), 'exec.fileless', ['allow', 'deny'] as const, 'deny'),
  };

  // network
  const netM = ctx.mapping(top.get('network'), 'network', ['default', 'allow', 'deny', 'unix', 'dns']) ?? new Map();
  const netRules = (action: Action): NetRule[] => {
    const out: NetRule[] = [];
    ctx.seq(netM.get(action), `network.${action}`).forEach((item, i) => {
      const id = `network.${action}[${i}]`;
      const before = ctx.problems.length;
      const m = ctx.mapping(item, id, ['cidr', 'host', 'ports', 'proto']);
      if (!m || ctx.problems.length > before) return;
      const ports = parsePorts(ctx, m.get('ports'), `${id}.ports`);
      const proto = ctx.oneOf(m.get('proto'), `${id}.proto`, ['tcp', 'udp', 'any'] as const, 'any') as NetProto;
      const hasCidr = m.has('cidr');
      if (hasCidr === m.has('host')) {
        ctx.error(item, `${id} must have exactly one of cidr:, host:`);
        return;
      }
      if (hasCidr) {
        const node = m.get('cidr');
        const c = ctx.string(node, `${id}.cidr`);
        if (c === undefined) return;
        const norm = normalizeCidr(c);
        if (!norm) ctx.error(node, `${id}.cidr: '${c}' is not an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or ::1/128)`);
        else out.push({ kind: 'cidr', cidr: norm, ports, proto, id, action, src: src(item) });
      } else {
        const node = m.get('host');
        const h = ctx.string(node, `${id}.host`);
        if (h === undefined) return;
        if (!/^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.?$/i.test(h) || isIP(h)) {
          ctx.error(node, `${id}.host: '${h}' is not a hostname (use cidr: for addresses)`);
        } else out.push({ kind: 'host', host: h.toLowerCase().replace(/\.$/, ''), ports, proto, id, action, src: src(item) });
      }
    });
    return out;
  };
  const unixM = ctx.mapping(netM.get('unix'), 'network.unix', ['allow', 'deny']) ?? new Map();
  const unixList = (k: 'allow' | 'deny'): string[] => {
    const out: string[] = [];
    const node = unixM.get(k);
    // one name alone, or a list of them
    const items = node != null && isScalar(node) ? [node] : ctx.seq(node, `network.unix.${k}`);
    items.forEach((item, i) => {
      const where = `network.unix.${k}[${i}]`;
      const p = ctx.string(item, where);
      if (p === undefined) return;
      // @name: an abstract socket (no file)
      if (p.startsWith('@')) {
        if (p.length < 2 || Buffer.byteLength(p) > 108) ctx.error(item, `${where}: '${p}' is not an abstract socket name (@ and 1 to 107 bytes)`);
        else out.push(p);
        return;
      }
      const abs = expandHome(p);
      if (!isAbsolute(abs)) ctx.error(item, `${where}: '${p}' must be an absolute path`);
      else out.push(abs);
    });
    return out;
  };
  const dnsM = ctx.mapping(netM.get('dns'), 'network.dns', ['upstream', 'min_ttl', 'names']) ?? new Map();
  const upstream = ctx.string(dnsM.get('upstream'), 'network.dns.upstream', { optional: true });
  // how long (s) an answered address stays allowed at least, whatever TTL the answer gave
  const minTtl = ctx.integer(dnsM.get('min_ttl'), 'network.dns.min_ttl', 1, 86_400);
  // which names the resolver answers: any (unless a host: deny rule names it), or those host: allow rules name
  const names = dnsM.has('names') ? ctx.oneOf(dnsM.get('names'), 'network.dns.names', ['any', 'hosts'] as const, 'any') : undefined;
  const network = {
    default: ctx.oneOf(netM.get('default'), 'network.default', ['allow', 'deny'] as const, 'allow'),
    allow: netRules('allow'),
    deny: netRules('deny'),
    unix: { deny: unixList('deny'), allow: unixList('allow') },
    ...(upstream || minTtl !== undefined || names
      ? { dns: { ...(upstream ? { upstream } : {}), ...(minTtl !== undefined ? { minTtl } : {}), ...(names ? { names } : {}) } }
      : {}),
  };

  // credentials
  const credM = ctx.mapping(top.get('credentials'), 'credentials', ['env', 'files']) ?? new Map();
  const envM = ctx.mapping(credM.get('env'), 'credentials.env', ['allow']) ?? new Map();
  const filesM = ctx.mapping(credM.get('files'), 'credentials.files', ['deny']) ?? new Map();
  const envAllow = ctx.stringList(envM.get('allow'), 'credentials.env.allow');
  for (const v of envAllow) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*\*?$/.test(v)) ctx.error(envM.get('allow'), `credentials.env.allow: '${v}' is not a variable name (a trailing * is allowed)`);
  }
  // Kept as written: `~/` means every session user's home, resolved when the policy is compiled.
  const credFiles: string[] = [];
  ctx.seq(filesM.get('deny'), 'credentials.files.deny').forEach((item, i) => {
    const where = `credentials.files.deny[${i}]`;
    const f = ctx.string(item, where);
    if (f === undefined) return;
    if (f === '~' || f === '~/') ctx.error(item, `${where}: '${f}' would deny whole home directories; name what in them (~/.ssh, ~/.aws)`);
    else if (!isAbsolute(f) && !f.startsWith('~/')) ctx.error(item, `${where}: '${f}' must be an absolute path or start with ~/`);
    else credFiles.push(f);
  });
  const credentials = {
    env: { allow: envAllow },
    files: { deny: credFiles },
  };

  const mcp = parseMcpSection(top.get('mcp'), ctx);

  if (ctx.problems.length) throw new PolicyError(ctx.problems);
  return {
    version: 1,
    name,
    mode,
    agents,
    exec,
    network,
    credentials,
    mcp,
    file,
    sha256: createHash('sha256').update(text).digest('hex'),
  };
}

function expandHome(p: string): string {
  if (p === '~') return homedir();
  if (p.startsWith('~/')) return resolve(homedir(), p.slice(2));
  return p;
}

function parsePorts(ctx: YamlCtx, node: Node | null | undefined, where: string): PortRange[] {
  if (node == null) return [];
  const out: PortRange[] = [];
  ctx.seq(node, where).forEach((item, i) => {
    const v = ctx.value(item);
    const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v : '';
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(s.trim());
    const from = m ? Number(m[1]) : NaN;
    const to = m ? Number(m[2] ?? m[1]) : NaN;
    if (!m || from < 1 || to > 65535 || from > to) {
      ctx.error(item, `${where}[${i}]: '${s}' is not a port (1-65535) or a range like "8000-8100"`);
      return;
    }
    out.push({ from, to });
  });
  return out;
}

/** Normalizes "10.1.2.3/24" → "10.1.2.0/24"; a bare address gets /32 or /128. Returns undefined when invalid. */
export function normalizeCidr(c: string): string | undefined {
  const [addr, bitsStr, extra] = c.split('/');
  if (extra !== undefined || addr === undefined) return undefined;
  const fam = isIP(addr);
  if (!fam) return undefined;
  const max = fam === 4 ? 32 : 128;
  const bits = bitsStr === undefined ? max : /^\d{1,3}$/.test(bitsStr) ? Number(bitsStr) : NaN;
  if (!(bits >= 0 && bits <= max)) return undefined;
  const bytes = ipToBytes(addr);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return `${bytesToIp(bytes)}/${bits}`;
}

export function ipToBytes(addr: string): Uint8Array {
  if (isIP(addr) === 4) return Uint8Array.from(addr.split('.').map(Number));
  // IPv6, possibly with an embedded IPv4 tail
  let a = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  let tail: number[] = [];
  if (v4) {
    tail = v4[1]!.split('.').map(Number);
    a = a.slice(0, -v4[1]!.length) + '0:0';
  }
  const [head, rest] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined ? (rest ? rest.split(':') : []) : [];
  const fill = rest !== undefined ? 8 - h.length - r.length : 0;
  const groups = [...h, ...Array(fill).fill('0'), ...r].map((g) => parseInt(g || '0', 16));
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  if (v4) out.set(tail, 12);
  return out;
}

export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return Array.from(b).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // compress the longest run of zeros
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
