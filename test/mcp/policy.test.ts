// The mcp: section of the policy: the DESIGN.md example stays valid, every key parses, and every mistake
// is reported with file:line:col.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePolicy } from '../../src/policy/load.js';
import { PolicyError } from '../../src/policy/yamlctx.js';

const DESIGN_EXAMPLE = `version: 1
name: ci-default
mcp:
  servers:
    github:
      tools:
        allow: [get_issue, "list_*"]
        deny: [delete_repository]
      rules:
        - tool: create_issue
          when: "args.repo.startsWith('acme/')"
`;

function problems(yaml: string): string[] {
  try {
    parsePolicy(yaml, 'p.yaml');
  } catch (err) {
    assert.ok(err instanceof PolicyError, String(err));
    return err.problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.message}`);
  }
  assert.fail('expected a PolicyError');
}

test('policy: the DESIGN.md example parses to the documented shape', () => {
  const p = parsePolicy(DESIGN_EXAMPLE, 'p.yaml');
  const gh = p.mcp.servers.github!;
  assert.equal(gh.id, 'mcp.servers.github');
  assert.equal(gh.default, 'deny', 'an allow list makes the default deny');
  assert.deepEqual(gh.allow.map((a) => [a.id, a.glob]), [['mcp.servers.github.tools.allow[0]', 'get_issue'], ['mcp.servers.github.tools.allow[1]', 'list_*']]);
  assert.deepEqual(gh.deny.map((a) => a.glob), ['delete_repository']);
  assert.equal(gh.rules.length, 1);
  assert.deepEqual(gh.rules[0]!.tools, ['create_issue']);
  assert.equal(gh.rules[0]!.action, 'allow');
  assert.equal(gh.rules[0]!.when, "args.repo.startsWith('acme/')");
  assert.deepEqual(gh.rules[0]!.src, { file: 'p.yaml', line: 10, col: 11 });
  assert.equal(gh.pin, 'block');
  assert.equal(gh.schema, 'enforce');
  assert.equal(p.mcp.maxMessageBytes, 4 * 1024 * 1024);
  assert.doesNotThrow(() => JSON.stringify(p), 'the policy stays plain data');
});

test('policy: every mcp key parses', () => {
  const p = parsePolicy(`version: 1
name: all
mcp:
  pins: /var/lib/bridle/pins.json
  max_message_bytes: 65536
  redact: [token]
  servers:
    db:
      default: allow
      pin: report
      schema: "off"
      redact: ["auth.*", password]
      tools:
        deny: drop_everything
      resources:
        allow: ["file:///srv/data/*"]
        deny: "file:///srv/data/secret*"
        default: allow
      rules:
        - tool: [query, "run_*"]
          sql: read-only
        - tool: exec
          sql: { check: read-only, arg: statement, dialect: postgres }
        - tool: write
          action: deny
          args:
            path: { under: /etc }
        - tool: search
          args:
            limit: { min: 1, max: 100 }
            order: { one_of: [asc, desc], optional: true }
            q: { regex: "[a-z ]+", max_length: 200 }
            owner: { prefix: acme-, suffix: -team }
            strict: { equals: true }
`, 'p.yaml');
  assert.equal(p.mcp.pins, '/var/lib/bridle/pins.json');
  assert.equal(p.mcp.maxMessageBytes, 65536);
  assert.deepEqual(p.mcp.redact, ['token']);
  const db = p.mcp.servers.db!;
  assert.equal(db.default, 'allow');
  assert.equal(db.pin, 'report');
  assert.equal(db.schema, 'off');
  assert.deepEqual(db.deny.map((d) => d.glob), ['drop_everything']);
  assert.deepEqual(
    { default: db.resources.default, allow: db.resources.allow.map((a) => [a.id, a.glob]), deny: db.resources.deny.map((d) => [d.id, d.glob]) },
    { default: 'allow', allow: [['mcp.servers.db.resources.allow[0]', 'file:///srv/data/*']], deny: [['mcp.servers.db.resources.deny[0]', 'file:///srv/data/secret*']] },
  );
  assert.equal(parsePolicy('version: 1\nname: d\nmcp:\n  servers:\n    a:\n      resources:\n        allow: [x]\n', 'p.yaml').mcp.servers.a!.resources.default, 'deny', 'an allow list makes the default deny');
  assert.deepEqual(db.rules[0]!.sql, { check: 'read-only', dialect: 'postgres' });
  assert.deepEqual(db.rules[1]!.sql, { check: 'read-only', dialect: 'postgres', arg: 'statement' });
  assert.equal(db.rules[2]!.action, 'deny');
  assert.deepEqual(db.rules[3]!.args.map((a) => [a.path, a.ops]), [
    ['limit', { min: 1, max: 100 }],
    ['order', { one_of: ['asc', 'desc'], optional: true }],
    ['q', { regex: '[a-z ]+', max_length: 200 }],
    ['owner', { prefix: 'acme-', suffix: '-team' }],
    ['strict', { equals: true }],
  ]);
});

test('policy: mistakes in mcp are reported with file:line:col', () => {
  const got = problems(`version: 1
name: bad
mcp:
  servers:
    github:
      tools:
        allow: ["list_[", get_issue]
        denied: [x]
      rules:
        - tool: create_issue
          when: "args.repo.startsWith("
        - tool: create_issue
          when: "arg.repo == 'x'"
        - tool: create_issue
          when: "args.count + 1"
        - tool: q
          args:
            name: { regex: "(unclosed" }
            path: { under: relative/dir }
            n: { min: 5, max: 1 }
            x: { bogus: 1 }
        - tool: q
          sql: write-ok
        - when: "true"
      pin: sometimes
      resources:
        allow: ["file:///[x"]
        read: [y]
  colour: blue
`);
  const expect = [
    /^p\.yaml:7:17: mcp\.servers\.github\.tools\.allow\[0\]: bad glob 'list_\[': '\[' is not closed/,
    /^p\.yaml:8:9: mcp\.servers\.github\.tools: unknown key 'denied'/,
    /^p\.yaml:11:17: mcp\.servers\.github\.rules\[0\]\.when: the CEL expression does not compile: Unexpected token: EOF/,
    /^p\.yaml:13:17: mcp\.servers\.github\.rules\[1\]\.when: the CEL expression does not compile: Unknown variable: arg/,
    /^p\.yaml:15:17: mcp\.servers\.github\.rules\[2\]\.when: .*yields int, not bool/,
    /^p\.yaml:18:28: mcp\.servers\.github\.rules\[3\]\.args\.name\.regex: bad regular expression/,
    /^p\.yaml:19:28: mcp\.servers\.github\.rules\[3\]\.args\.path\.under: 'relative\/dir' must be an absolute directory/,
    /^p\.yaml:20:23: mcp\.servers\.github\.rules\[3\]\.args\.n: min 5 is greater than max 1/,
    /^p\.yaml:21:18: mcp\.servers\.github\.rules\[3\]\.args\.x: unknown key 'bogus'/,
    /^p\.yaml:23:16: mcp\.servers\.github\.rules\[4\]\.sql must be 'read-only'/,
    /^p\.yaml:24:11: mcp\.servers\.github\.rules\[5\]\.tool is required/,
    /^p\.yaml:25:12: mcp\.servers\.github\.pin must be one of block \| report \| off/,
    /^p\.yaml:27:17: mcp\.servers\.github\.resources\.allow\[0\]: bad glob 'file:\/\/\/\[x'/,
    /^p\.yaml:28:9: mcp\.servers\.github\.resources: unknown key 'read'/,
    /^p\.yaml:29:3: mcp: unknown key 'colour'/,
  ];
  for (const re of expect) assert.ok(got.some((g) => re.test(g)), `no problem matches ${re}\ngot:\n${got.join('\n')}`);
  assert.equal(got.length, expect.length, got.join('\n'));
});

test('policy: an args condition needs an operator; optional alone is refused', () => {
  const got = problems(`version: 1
name: bad
mcp:
  servers:
    s:
      rules:
        - tool: t
          args:
            a: {}
            b: { optional: true }
`);
  assert.ok(got.some((g) => /p\.yaml:9:\d+: .*args\.a: give at least one of/.test(g)), got.join('\n'));
  assert.ok(got.some((g) => /p\.yaml:10:\d+: .*args\.b: 'optional' alone checks nothing/.test(g)), got.join('\n'));
});
