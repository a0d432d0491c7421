// The demo: an embedded collector (mutual TLS on loopback, SQLite in a temp dir), the scripted agent run
// as a session under the example policy with every event shipped to that collector, then the questions
// an incident responder would ask, answered from the collector's store.
import { copyFileSync, existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { ExecEvent } from '../events/types.js';
import { HOST } from './ids.js';
import { runCommand } from './run.js';

export async function runDemo(root: string, o: { events?: string; keep?: boolean }): Promise<number> {
  const out = (s: string) => process.stderr.write(s + '\n');
  const dir = mkdtempSync(join(tmpdir(), 'bridle-demo-'));
  const log = pino({ level: 'silent' });
  const { initPki, issueCert } = await import('../collector/certs.js');
  const { startCollector } = await import('../collector/server.js');
  const { createShipper } = await import('./shipper.js');
  const { createQueryClient } = await import('../collector/client.js');

  out(`==> collector: a CA and certificates in ${dir}/certs, SQLite at ${dir}/collector.db`);
  const pki = await initPki(join(dir, 'certs'));
  const collector = await startCollector({ listen: '127.0.0.1:0', dbPath: join(dir, 'collector.db'), tls: pki.collector, queryTokens: [pki.token], log });
  const shipper = await createShipper({ collector: collector.address, spoolDir: join(dir, 'spool'), host: HOST, tls: await issueCert(join(dir, 'certs'), { role: 'agent', name: HOST }), log });
  const query = createQueryClient({ collector: collector.address, tls: pki.query, token: pki.token });
  out(`==> collector listening on ${collector.address} (mutual TLS); the session's events ship there as they happen\n`);

  const denied: ExecEvent[] = [];
  // The demo policy denies running anything from /tmp: a checkout there would see its own agent script
  // refused, so the script then runs from a copy elsewhere.
  let agent = join(root, 'examples', 'demo-agent.sh');
  let agentDir: string | undefined;
  if (/^\/tmp(\/|$)/.test(realpathSync(agent)) && existsSync('/var/tmp')) {
    agentDir = mkdtempSync('/var/tmp/bridle-demo-agent-');
    copyFileSync(agent, join(agentDir, 'demo-agent.sh'));
    agent = join(agentDir, 'demo-agent.sh');
    out(`==> this checkout is under /tmp, which the demo policy keeps from running: the agent runs from ${agent}`);
  }
  try {
    const status = await runCommand({
      policyFile: join(root, 'examples', 'demo-policy.yaml'),
      argv: [agent],
      ...(o.events ? { events: o.events } : {}),
      summary: true,
      live: true,
      standalone: true,
      // the collector's store, certificates, query token and the spool: no session's to read
      bridleFiles: [dir],
      extraSinks: [
        shipper,
        { emit: (ev) => void (ev.type === 'exec' && ev.verdict === 'deny' && denied.push(ev)) },
      ],
    });
    await shipper.flush(5000);
    const st = shipper.stats();
    out(`\n==> shipped ${st.acked} events, ${st.lost} lost; the collector stored ${collector.stats().stored}`);
    const [session] = await query.sessions({ limit: 1 });
    if (session) out(`==> bridle sessions: ${session.session} on ${session.host}, policy ${session.policy}, ${session.denials ?? 0} denials`);
    const first = denied[0];
    if (first) {
      const lin = await query.lineage(first.exec_id);
      out(`==> bridle lineage ${first.exec_id}`);
      for (const p of lin?.processes ?? []) {
        const v = p.events.find((e) => e.type === 'exec');
        out(`    ${p.relation.padEnd(10)} [${p.pid}] ${p.path}${v && v.type === 'exec' && v.verdict !== 'allow' ? `  ✗ ${v.verdict} by ${v.rule}` : ''}`);
      }
    }
    out(`\n(query it yourself while it runs: bridle events --collector ${collector.address} …; this demo stops its collector now)`);
    return status;
  } finally {
    query.close();
    await shipper.close();
    await collector.close();
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
    if (agentDir) rmSync(agentDir, { recursive: true, force: true });
  }
}
