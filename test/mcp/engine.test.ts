// The decision function, without transports: policy + tool + arguments (+ what the server listed) → verdict,
// rule, reason.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { compileServer, decide, redactArgs, visible, type ToolDef } from '../../src/mcp/engine.js';
import { loadSqlParser } from '../../src/mcp/sql.js';
import { parsePolicy } from '../../src/policy/load.js';

function server(yaml: string, name = 's', mode: 'enforce' | 'monitor' = 'enforce') {
  const p = parsePolicy(`version: 1\nname: t\nmode: ${mode}\nmcp:\n  servers:\n    ${name}:\n${yaml.replace(/^/gm, '      ')}`, 'p.yaml');
  return compileServer(p.mcp.servers[name]!, p.mode, p.mcp.redact);
}

const github = server(`tools:
  allow: [get_issue, "list_*"]
  deny: [delete_repository]
rules:
  - tool: create_issue
    when: "args.repo.startsWith('acme/')"
`, 'github');

describe('engine: the DESIGN.md example', () => {
  test('allow list, globs, deny list, default', () => {
    assert.deepEqual(decide(github, { tool: 'get_issue', args: {} }), { verdict: 'allow', rule: 'mcp.servers.github.tools.allow[0]', reason: "'get_issue' matches 'get_issue' in mcp.servers.github.tools.allow" });
    assert.equal(decide(github, { tool: 'list_repos', args: {} }).rule, 'mcp.servers.github.tools.allow[1]');
    const d = decide(github, { tool: 'delete_repository', args: {} });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'mcp.servers.github.tools.deny[0]');
    const other = decide(github, { tool: 'merge_pull_request', args: {} });
    assert.equal(other.verdict, 'deny');
    assert.equal(other.rule, 'mcp.servers.github.default');
    assert.match(other.reason, /not in mcp\.servers\.github\.tools\.allow/);
  });

  test('deny lists compare names ignoring letter case and Unicode compatibility forms', () => {
    for (const name of ['DELETE_REPOSITORY', 'Delete_Repository', 'ｄｅｌｅｔｅ_ｒｅｐｏｓｉｔｏｒｙ']) {
      const d = decide(github, { tool: name, args: {} });
      assert.equal(d.verdict, 'deny', name);
      assert.equal(d.rule, 'mcp.servers.github.tools.deny[0]', name);
    }
    // allow lists do not: GET_ISSUE is not get_issue
    assert.equal(decide(github, { tool: 'GET_ISSUE', args: {} }).rule, 'mcp.servers.github.default');
  });

  test('a rule grants its tool only when its condition holds; an unevaluable condition denies', () => {
    assert.deepEqual(decide(github, { tool: 'create_issue', args: { repo: 'acme/web' } }).rule, 'mcp.servers.github.rules[0]');
    assert.equal(decide(github, { tool: 'create_issue', args: { repo: 'acme/web' } }).verdict, 'allow');
    const no = decide(github, { tool: 'create_issue', args: { repo: 'evil/web' } });
    assert.equal(no.verdict, 'deny');
    assert.equal(no.rule, 'mcp.servers.github.rules[0]');
    assert.match(no.reason, /is false/);
    const missing = decide(github, { tool: 'create_issue', args: {} });
    assert.equal(missing.verdict, 'deny');
    assert.match(missing.reason, /could not be evaluated: No such key: repo/);
    const wrongType = decide(github, { tool: 'create_issue', args: { repo: 42 } });
    assert.equal(wrongType.verdict, 'deny');
  });
});

describe('engine: names the server listed', () => {
  const tools = new Map<string, ToolDef>([
    ['get_issue', { name: 'get_issue', inputSchema: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } }],
    ['delete_repository', { name: 'delete_repository', inputSchema: { type: 'object' } }],
  ]);
  test('an unlisted name is refused; a case variant of a listed one says which name exists', () => {
    assert.equal(decide(github, { tool: 'list_x', args: {}, tools }).rule, 'mcp.protocol.unknown_tool');
    const c = decide(github, { tool: 'Get_Issue', args: { n: 1 }, tools });
    assert.equal(c.rule, 'mcp.protocol.tool_case');
    assert.match(c.reason, /the server's tool is 'get_issue'/);
  });
  test('arguments must be an object and match the inputSchema', () => {
    assert.equal(decide(github, { tool: 'get_issue', args: [1], tools }).rule, 'mcp.protocol.invalid');
    assert.equal(decide(github, { tool: 'get_issue', args: 'x', tools }).rule, 'mcp.protocol.invalid');
    const bad = decide(github, { tool: 'get_issue', args: { n: 'one' }, tools });
    assert.equal(bad.rule, 'mcp.servers.github.schema');
    assert.match(bad.reason, /arguments\.n must be integer/);
    assert.equal(decide(github, { tool: 'get_issue', args: {}, tools }).rule, 'mcp.servers.github.schema');
    assert.equal(decide(github, { tool: 'get_issue', args: { n: 3 }, tools }).verdict, 'allow');
    assert.equal(decide(github, { tool: 'get_issue', args: undefined, tools }).rule, 'mcp.servers.github.schema', 'missing arguments count as {}');
  });
  test('a changed definition is denied with pin: block and allowed with pin: report', () => {
    const changed = new Map([['get_issue', 'description changed']]);
    const d = decide(github, { tool: 'get_issue', args: { n: 1 }, tools, changed });
    assert.equal(d.rule, 'mcp.servers.github.pin');
    assert.match(d.reason, /description changed/);
    assert.equal(visible(github, 'get_issue', changed), false);
    const report = server('default: allow\npin: report', 'r');
    assert.equal(decide(report, { tool: 'get_issue', args: { n: 1 }, tools, changed }).verdict, 'allow');
    assert.equal(visible(report, 'get_issue', changed), true);
  });
  test('schema: off skips the inputSchema', () => {
    const s = server('default: allow\nschema: "off"');
    assert.equal(decide(s, { tool: 'get_issue', args: { n: 'one' }, tools }).verdict, 'allow');
  });
  test('a server inputSchema that does not compile fails closed', () => {
    const broken = new Map<string, ToolDef>([['t', { name: 't', inputSchema: { type: 'object', properties: { x: { type: 'nonsense' } } } }]]);
    const s = server('default: allow');
    const d = decide(s, { tool: 't', args: {}, tools: broken });
    assert.equal(d.verdict, 'deny');
    assert.match(d.reason, /does not compile/);
    const none = new Map<string, ToolDef>([['t', { name: 't' }]]);
    assert.equal(decide(s, { tool: 't', args: {}, tools: none }).verdict, 'deny');
  });
  test('draft-07 and 2020-12 schemas are both understood', () => {
    const s = server('default: allow');
    const t7 = new Map<string, ToolDef>([['t', { name: 't', inputSchema: { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { a: { type: 'array', items: [{ type: 'string' }] } } } }]]);
    assert.equal(decide(s, { tool: 't', args: { a: ['x'] }, tools: t7 }).verdict, 'allow');
    assert.equal(decide(s, { tool: 't', args: { a: [1] }, tools: t7 }).verdict, 'deny');
    const t20 = new Map<string, ToolDef>([['t', { name: 't', inputSchema: { type: 'object', properties: { a: { type: 'array', prefixItems: [{ type: 'string' }] } } } }]]);
    assert.equal(decide(s, { tool: 't', args: { a: [1] }, tools: t20 }).verdict, 'deny');
  });
});

describe('engine: precedence and rules', () => {
  test('an explicit deny beats an explicit allow', () => {
    const s = server('tools:\n  allow: ["*"]\n  deny: [rm]');
    assert.equal(decide(s, { tool: 'rm', args: {} }).verdict, 'deny');
    assert.equal(decide(s, { tool: 'ls', args: {} }).verdict, 'allow');
  });
  test('no allow list: default allow; default: deny can be explicit', () => {
    assert.equal(decide(server('tools:\n  deny: [x]'), { tool: 'y', args: {} }).rule, 'mcp.servers.s.default');
    assert.equal(decide(server('tools:\n  deny: [x]'), { tool: 'y', args: {} }).verdict, 'allow');
    assert.equal(decide(server('default: deny'), { tool: 'y', args: {} }).verdict, 'deny');
  });
  test('a glob * matches names with / and .', () => {
    const s = server('tools:\n  deny: ["*"]');
    assert.equal(decide(s, { tool: 'a/b.c', args: {} }).verdict, 'deny');
  });
  test('conditional allow rules constrain tools the allow list grants', () => {
    const s = server(`tools:
  allow: [write_file]
rules:
  - tool: write_file
    args:
      path: { under: /work }
`);
    assert.equal(decide(s, { tool: 'write_file', args: { path: '/work/a' } }).verdict, 'allow');
    const d = decide(s, { tool: 'write_file', args: { path: '/work/../etc/passwd' } });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'mcp.servers.s.rules[0]');
    assert.match(d.reason, /under \/work/);
  });
  test('deny-action rules deny when their conditions hold, and when they cannot be evaluated', () => {
    const s = server(`default: allow
rules:
  - tool: "write_*"
    action: deny
    when: "args.path.startsWith('/etc/')"
  - tool: rm
    action: deny
`);
    assert.equal(decide(s, { tool: 'write_file', args: { path: '/tmp/x' } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'write_file', args: { path: '/etc/passwd' } }).rule, 'mcp.servers.s.rules[0]');
    assert.equal(decide(s, { tool: 'WRITE_FILE', args: { path: '/etc/passwd' } }).verdict, 'deny', 'deny rules match case-insensitively');
    assert.equal(decide(s, { tool: 'write_file', args: {} }).verdict, 'deny', 'unevaluable → deny');
    assert.equal(decide(s, { tool: 'rm', args: {} }).rule, 'mcp.servers.s.rules[1]');
    assert.equal(visible(s, 'rm'), false);
    assert.equal(visible(s, 'write_file'), true);
  });
  test('structured conditions: equals, one_of, prefix, suffix, regex, min/max, max_length, optional', () => {
    const s = server(`default: allow
rules:
  - tool: t
    args:
      mode: { one_of: [fast, slow] }
      owner: { prefix: acme-, suffix: -team }
      name: { regex: "[a-z]+" }
      n: { min: 1, max: 10 }
      tags: { max_length: 2, optional: true }
      dry: { equals: true }
      opts.depth: { max: 3, optional: true }
`);
    const base = { mode: 'fast', owner: 'acme-web-team', name: 'abc', n: 5, dry: true };
    assert.equal(decide(s, { tool: 't', args: base }).verdict, 'allow');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ mode: 'medium' }, /mode' must be one of/],
      [{ owner: 'evil-team' }, /must start with "acme-"/],
      [{ owner: 'acme-web' }, /must end with "-team"/],
      [{ name: 'abc1' }, /must match/],
      [{ name: 'x\nabc' }, /must match/],
      [{ n: 0 }, /at least 1/],
      [{ n: 11 }, /at most 10/],
      [{ n: '5' }, /must be a number/],
      [{ tags: ['a', 'b', 'c'] }, /more than max_length 2/],
      [{ dry: false }, /must equal true/],
      [{ dry: undefined }, /'dry' is required/],
      [{ opts: { depth: 4 } }, /'opts\.depth' must be at most 3/],
    ];
    for (const [patch, re] of cases) {
      const d = decide(s, { tool: 't', args: { ...base, ...patch } });
      assert.equal(d.verdict, 'deny', JSON.stringify(patch));
      assert.match(d.reason, re, JSON.stringify(patch));
    }
  });
  test('string conditions apply to every element of a list argument', () => {
    const s = server(`default: allow
rules:
  - tool: read_multiple_files
    args:
      paths: { under: /work }
`);
    assert.equal(decide(s, { tool: 'read_multiple_files', args: { paths: ['/work/a', '/work/b/c'] } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'read_multiple_files', args: { paths: ['/work/a', '/etc/shadow'] } }).verdict, 'deny');
    assert.equal(decide(s, { tool: 'read_multiple_files', args: { paths: ['/work/a', 7] } }).verdict, 'deny');
  });
  test('deny rules with args: are not escaped by shape (one element of a list, a line break, a relative path, another type, a number JSON cannot hold)', () => {
    const s = server(`default: allow
schema: off
rules:
  - tool: read_multiple_files
    action: deny
    args:
      paths: { under: /home/u/.ssh }
  - tool: run
    action: deny
    args:
      cmd: { regex: "rm .*" }
  - tool: push
    action: deny
    args:
      force: { equals: true }
  - tool: batch
    action: deny
    args:
      n: { min: 1000 }
  - tool: "del*"
    action: deny
`);
    const cases: [string, Record<string, unknown>][] = [
      ['read_multiple_files', { paths: ['/work/a', '/home/u/.ssh/id_rsa'] }],
      ['read_multiple_files', { paths: 'secrets/k' }],
      ['read_multiple_files', { paths: ['/work/a', 'id_rsa'] }],
      ['run', { cmd: 'rm -rf /\necho' }],
      ['push', { force: 'true' }],
      ['batch', { n: JSON.parse('1e400') }],
      ['batch', { n: '5000' }],
      ['del\nete', {}],
    ];
    for (const [tool, args] of cases) assert.equal(decide(s, { tool, args }).verdict, 'deny', `${tool} ${JSON.stringify(args)}`);
    // what the rules do not name stays allowed
    assert.equal(decide(s, { tool: 'read_multiple_files', args: { paths: ['/work/a', '/work/b'] } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'run', args: { cmd: 'ls -l' } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'push', args: { force: false } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'batch', args: { n: 10 } }).verdict, 'allow');
  });
  test('monitor mode reports would_deny', () => {
    const m = server('tools:\n  deny: [x]', 's', 'monitor');
    const d = decide(m, { tool: 'x', args: {} });
    assert.equal(d.verdict, 'would_deny');
    assert.equal(d.rule, 'mcp.servers.s.tools.deny[0]');
    assert.equal(visible(m, 'x'), true, 'monitor mode hides nothing');
  });
});

describe('engine: sql: read-only in rules', () => {
  before(() => loadSqlParser());
  test('the SQL argument is found by name or by arg:', () => {
    const s = server(`default: allow
rules:
  - tool: query
    sql: read-only
  - tool: exec
    sql: { check: read-only, arg: statement }
`);
    assert.equal(decide(s, { tool: 'query', args: { sql: 'select 1' } }).verdict, 'allow');
    assert.equal(decide(s, { tool: 'query', args: { query: 'select 1' } }).verdict, 'allow');
    const d = decide(s, { tool: 'query', args: { sql: 'with d as (delete from t returning *) select * from d' } });
    assert.equal(d.verdict, 'deny');
    assert.equal(d.rule, 'mcp.servers.s.rules[0]');
    assert.match(d.reason, /sql: read-only: .*DELETE/);
    assert.match(decide(s, { tool: 'query', args: { text: 'select 1' } }).reason, /needs the SQL as a string/);
    assert.equal(decide(s, { tool: 'exec', args: { statement: 'drop table t' } }).verdict, 'deny');
    assert.equal(decide(s, { tool: 'exec', args: { sql: 'select 1' } }).verdict, 'deny', 'arg: statement is required');
  });
});

describe('engine: redaction', () => {
  test('paths, glob segments, nesting and arrays; the input is not changed', () => {
    const s = server('default: allow\nredact: [token, "auth.*", "items.*.secret"]');
    const args = { token: 'T', auth: { user: 'u', pass: 'p' }, items: [{ secret: 's', ok: 1 }], keep: 'k', Token2: 'x' };
    assert.deepEqual(redactArgs(s, args), { token: '[redacted]', auth: { user: '[redacted]', pass: '[redacted]' }, items: [{ secret: '[redacted]', ok: 1 }], keep: 'k', Token2: 'x' });
    assert.equal(args.token, 'T');
    const caseFold = server('default: allow\nredact: [password]');
    assert.deepEqual(redactArgs(caseFold, { PassWord: 'x' }), { PassWord: '[redacted]' });
  });
});
