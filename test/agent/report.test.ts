// The report socket (src/agent/report.ts): what a session process reports is stamped by the agent (who,
// from the kernel's view of the peer; when, from the agent's clock), and a sender that floods it has the
// excess dropped and said.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { serveReports, type Stamp } from '../../src/agent/report.js';
import type { BridleEvent } from '../../src/events/types.js';

async function until<T>(f: () => T | undefined, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('reports are stamped by the agent: identity from the peer, time from its clock; only tool calls; a flood is cut and said', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-report-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'report.sock');
  const got: BridleEvent[] = [];
  const stampOf = (pid: number, uid: number): Stamp => ({ host: 'h', session: 'sess-1', exec_id: `h:b:${pid}:1`, parent_exec_id: '', pid, ppid: 1, uid });
  const srv = await serveReports(path, stampOf, (ev) => got.push(ev), { perSecond: 10, burst: 20 });
  t.after(() => srv.close());
  const sock = createConnection(path);
  t.after(() => sock.destroy());
  await new Promise((r) => sock.once('connect', r));
  const line = (o: object) => JSON.stringify(o) + '\n';
  const before = Date.now();
  sock.write(line({ type: 'tool_call', ts: '2999-01-01T00:00:00.000Z', session: 'forged', pid: 1, server: 's', tool: 'x', verdict: 'allow', rule: 'r' }));
  sock.write(line({ type: 'exec', path: '/usr/bin/true' })); // the kernel reports execs, not processes
  const first = await until(() => got[0]);
  assert.equal(first.type, 'tool_call');
  assert.equal(first.session, 'sess-1', 'who it is comes from the agent');
  assert.equal(first.pid, process.pid);
  const ts = Date.parse(first.ts);
  assert.ok(ts >= before - 1000 && ts <= Date.now() + 1000, `stamped now, not ${first.ts}`);

  // 50 more at once: the burst allows 19 more (20 in all), the rest are dropped and said once
  for (let i = 0; i < 50; i++) sock.write(line({ type: 'tool_call', server: 's', tool: `t${i}`, verdict: 'allow', rule: 'r' }));
  const flood = await until(() => got.find((e) => e.type === 'violation'), 3000);
  assert.equal((flood as { what?: string }).what, 'report_flood');
  const calls = got.filter((e) => e.type === 'tool_call').length;
  assert.ok(calls >= 20 && calls <= 22, `about the burst got through (${calls})`);
  assert.match(String((flood as { detail?: string }).detail), new RegExp(`^${51 - calls} report\\(s\\) from session sess-1 dropped`));
  assert.equal(got.filter((e) => e.type === 'exec').length, 0);
});

test('a report socket that cannot be served rejects, and leaves no flush timer running', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bridle-report-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // longer than a socket address holds: listened on cut short, so the socket is not where it was asked for
  const path = join(dir, 'r'.repeat(120));
  const intervals = t.mock.method(globalThis, 'setInterval');
  await assert.rejects(serveReports(path, () => ({ host: 'h', session: '', exec_id: '', parent_exec_id: '', pid: 0, ppid: 0, uid: 0 }), () => undefined), /ENOENT|ENAMETOOLONG|EINVAL/);
  assert.equal(intervals.mock.callCount(), 0, 'no flush timer started');
});
