import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePolicy, normalizeCidr } from '../../src/policy/load.js';
import { PolicyError } from '../../src/policy/yamlctx.js';
import { argvHash, credentialPaths, fnv1a, homeDirs, kernelDev } from '../../src/policy/compile.js';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function problems(text: string): string[] {
  try {
    parsePolicy(text, 'p.yaml');
  } catch (err) {
    assert.ok(err instanceof PolicyError);
    return err.problems.map((p) => `${p.file}:${p.line}:${p.col}: ${p.message}`);
  }
  assert.fail('policy was accepted');
}

test('the DESIGN.md example policy is accepted', () => {
  const p = parsePolicy(`version: 1
name: ci-default
mode: enforce
agents:
  - name: claude-code
    match: { exe: [claude] }
exec:
  default: allow
  allow:
    - dir: /usr
  deny:
    - path: /usr/bin/wget
    - dir: /tmp
    - argv: [git, push, --force]
network:
  default: deny
  allow:
    - cidr: 127.0.0.1/32
    - cidr: 10.1.2.0/24
      ports: [443, "8000-8100"]
      proto: tcp
    - host: api.github.com
      ports: [443]
  deny:
    - cidr: 169.254.169.254/32
  unix:
    deny: [/var/run/docker.sock]
credentials:
  env:
    allow: [PATH, HOME, LANG, GITHUB_TOKEN]
  files:
    deny: [~/.ssh, ~/.aws, ~/.config/gh]
mcp:
  servers:
    github:
      tools:
        allow: [get_issue, "list_*"]
        deny: [delete_repository]
      rules:
        - tool: create_issue
          when: "args.repo.startsWith('acme/')"
`);
  assert.equal(p.name, 'ci-default');
  assert.equal(p.exec.deny[2]?.kind, 'argv');
  assert.deepEqual(p.network.allow[1]?.ports, [{ from: 443, to: 443 }, { from: 8000, to: 8100 }]);
  assert.equal(p.agents[0]?.exe[0], 'claude');
});

test('errors name file, line and column, and every problem is reported', () => {
  const errs = problems(`version: 1
name: x
mode: enforse
exec:
  default: allow
  deny:
    - path: /no/such/file
    - dri: /tmp
network:
  allow:
    - cidr: 10.0.0.300/8
      ports: [70000]
`);
  assert.deepEqual(errs, [
    "p.yaml:3:7: mode must be one of enforce | monitor, not 'enforse'",
    "p.yaml:7:13: exec.deny[0].path: '/no/such/file': ENOENT",
    "p.yaml:8:7: exec.deny[1]: unknown key 'dri' (expected one of: path, dir, argv)",
    "p.yaml:11:13: network.allow[0].cidr: '10.0.0.300/8' is not an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or ::1/128)",
    "p.yaml:12:15: network.allow[0].ports[0]: '70000' is not a port (1-65535) or a range like \"8000-8100\"",
  ]);
});

test('YAML syntax errors and missing version are located too', () => {
  assert.match(problems('version: 1\nname: [x\n')[0]!, /^p\.yaml:\d+:\d+: YAML: /);
  assert.deepEqual(problems('name: x\n'), ["p.yaml:1:1: policy: 'version: 1' is required"]);
  assert.deepEqual(problems('version: 2\nname: x\n'), ['p.yaml:1:10: version must be between 1 and 1, not 2']);
  assert.deepEqual(problems('version: 1\nname: x\nexec:\n  deny:\n    - { path: /usr/bin/env, dir: /tmp }\n'), [
    'p.yaml:5:7: exec.deny[0] must have exactly one of path:, dir:, argv:',
  ]);
});

test('CIDRs are normalized; hashes match the kernel definitions', () => {
  assert.equal(normalizeCidr('10.1.2.3/24'), '10.1.2.0/24');
  assert.equal(normalizeCidr('::1'), '::1/128');
  assert.equal(normalizeCidr('::ffff:10.0.0.1/104'), '::ffff:a00:0/104');
  assert.equal(normalizeCidr('1.2.3.4/33'), undefined);
  // FNV-1a 64 test vectors
  assert.equal(fnv1a(Buffer.from('')), 0xcbf29ce484222325n);
  assert.equal(fnv1a(Buffer.from('a')), 0xaf63dc4c8601ec8cn);
  assert.equal(argvHash(['/usr/bin/git', 'push']), fnv1a(Buffer.from('git\0push')));
  // glibc st_dev encoding → kernel MKDEV(major, minor) = major << 20 | minor
  assert.equal(kernelDev(0x0801n), (8n << 20n) | 1n);
  assert.equal(kernelDev(0x10300n /* major 259 minor 0 */), (259n << 20n) | 0n);
});

test('credentials.files.deny: kept as written; ~/ means every session user home; bad entries are located', () => {
  const p = parsePolicy(`version: 1
name: c
credentials:
  files:
    deny: [~/.ssh, /etc/bridle-test-secret]
`, 'p.yaml');
  assert.deepEqual(p.credentials.files.deny, ['~/.ssh', '/etc/bridle-test-secret']);
  assert.deepEqual(problems(`version: 1
name: c
credentials:
  files:
    deny:
      - "~"
      - .aws/credentials
`), [
    "p.yaml:6:9: credentials.files.deny[0]: '~' would deny whole home directories; name what in them (~/.ssh, ~/.aws)",
    "p.yaml:7:9: credentials.files.deny[1]: '.aws/credentials' must be an absolute path or start with ~/",
  ]);
  // network.unix entries are located one by one too
  assert.deepEqual(problems(`version: 1
name: u
network:
  unix:
    deny:
      - /run/docker.sock
      - run/x.sock
      - "@"
`), [
    "p.yaml:7:9: network.unix.deny[1]: 'run/x.sock' must be an absolute path",
    "p.yaml:8:9: network.unix.deny[2]: '@' is not an abstract socket name (@ and 1 to 107 bytes)",
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'bridle-passwd-'));
  try {
    const passwd = join(dir, 'passwd');
    const [alice, bob] = [join(dir, 'alice'), join(dir, 'bob')];
    mkdirSync(alice);
    mkdirSync(bob);
    writeFileSync(passwd, [
      'root:x:0:0:root:/root:/bin/bash',
      'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
      `alice:x:1000:1000::${alice}:/bin/bash`,
      `bob:x:1001:1001::${bob}:/bin/sh`,
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
      'svc:x:999:999::/:/usr/sbin/nologin',
    ].join('\n'));
    // no getent on this "host": /etc/passwd (here the file given) is read instead
    const homes = homeDirs({ getent: join(dir, 'no-getent'), passwd });
    for (const h of ['/root', alice, bob]) assert.ok(homes.includes(h), h);
    for (const h of ['/usr/sbin', '/nonexistent', '/']) assert.ok(!homes.includes(h), `system account home ${h} is not a session home`);
    assert.deepEqual(credentialPaths('~/.ssh', ['/root', '/home/alice']), ['/root/.ssh', '/home/alice/.ssh']);
    assert.deepEqual(credentialPaths('/etc/x', ['/root']), ['/etc/x']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('~/ homes come from NSS (getent passwd), of any uid, when they are real directories; the HOME a session is given too; sorted', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-getent-'));
  try {
    const home = (n: string) => {
      mkdirSync(join(dir, n));
      return join(dir, n);
    };
    const [ldap, svc, big, given] = [home('ldap-user'), home('svc'), home('big'), join(dir, 'given-not-there')];
    // what getent answers: accounts no /etc/passwd has (LDAP, sssd, systemd-homed), service and high uids
    const getent = join(dir, 'getent');
    writeFileSync(getent, `#!/bin/sh\n[ "$1" = passwd ] || exit 2\ncat <<'EOF'\n${[
      'root:x:0:0:root:/root:/bin/bash',
      `ldapuser:*:1234567:100::${ldap}:/bin/bash`,
      `postgres:x:115:120::${svc}:/bin/bash`,
      `huge:x:4000000000:1::${big}/:/bin/sh`,
      'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
      'bin:x:2:2:bin:/bin:/usr/sbin/nologin',
      'sys:x:3:3:sys:/dev:/usr/sbin/nologin',
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
      'null:x:998:998::/dev/null:/usr/sbin/nologin',
      'svc:x:999:999::/:/usr/sbin/nologin',
      `gone:x:1001:1001::${join(dir, 'no-such-home')}:/bin/sh`,
      'relative:x:1002:1002::home/rel:/bin/sh',
    ].join('\n')}\nEOF\n`, { mode: 0o755 });
    const passwd = join(dir, 'passwd');
    writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/bash\n');
    const homes = homeDirs({ getent, passwd, extra: [given] });
    for (const h of [ldap, svc, big, '/root', given]) assert.ok(homes.includes(h), `${h} in ${homes.join(' ')}`);
    for (const h of ['/usr/sbin', '/bin', '/dev', '/nonexistent', '/dev/null', '/', join(dir, 'no-such-home'), 'home/rel']) {
      assert.ok(!homes.includes(h), `${h} is not a home ~/ stands for`);
    }
    assert.deepEqual(homes, [...homes].sort(), 'sorted: the same accounts give the same rules');
    assert.deepEqual(homeDirs({ getent, passwd, extra: [given] }), homes);
    assert.ok(credentialPaths('~/.pgpass', homes).includes(join(svc, '.pgpass')), 'a service account\'s home');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('~/ homes: getent runs at most once a minute, and again at once when the passwd file changes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-getent-cache-'));
  try {
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    mkdirSync(a);
    mkdirSync(b);
    const calls = join(dir, 'calls');
    const list = join(dir, 'accounts');
    writeFileSync(list, `a:x:1000:1000::${a}:/bin/sh\n`);
    const getent = join(dir, 'getent');
    writeFileSync(getent, `#!/bin/sh\necho x >> ${calls}\ncat ${list}\n`, { mode: 0o755 });
    const passwd = join(dir, 'passwd');
    writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/bash\n');
    const ran = () => readFileSync(calls, 'utf8').split('\n').filter(Boolean).length;
    assert.ok(homeDirs({ getent, passwd }).includes(a));
    assert.ok(homeDirs({ getent, passwd, extra: [b] }).includes(b), 'the extra homes are never cached');
    writeFileSync(list, `a:x:1000:1000::${a}:/bin/sh\nb:x:1001:1001::${b}:/bin/sh\n`); // an LDAP account appears
    assert.ok(!homeDirs({ getent, passwd }).includes(b), 'read once: the new account waits for the cache to age');
    assert.equal(ran(), 1);
    assert.ok(homeDirs({ getent, passwd, maxAgeMs: 0 }).includes(b), 'an aged cache is read again');
    assert.equal(ran(), 2);
    writeFileSync(list, `a:x:1000:1000::${a}:/bin/sh\n`);
    writeFileSync(passwd, 'root:x:0:0:root:/root:/bin/bash\nb:x:1001:1001::/nowhere:/bin/sh\n'); // useradd, userdel
    assert.ok(!homeDirs({ getent, passwd }).includes(b), 'a changed passwd file is read again at once');
    assert.equal(ran(), 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('network.dns.names is any or hosts; anything else is named with its position', () => {
  const p = parsePolicy('version: 1\nname: n\nnetwork:\n  dns:\n    names: hosts\n', 'p.yaml');
  assert.equal(p.network.dns?.names, 'hosts');
  assert.equal(parsePolicy('version: 1\nname: n\n', 'p.yaml').network.dns?.names, undefined);
  const bad = problems('version: 1\nname: n\nnetwork:\n  dns:\n    names: some\n');
  assert.equal(bad.length, 1);
  assert.match(bad[0]!, /^p\.yaml:5:12: .*network\.dns\.names/);
});
