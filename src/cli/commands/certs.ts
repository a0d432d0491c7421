import type { Command } from '../command.js';
import { UsageError } from '../command.js';
import { parseFlags } from '../args.js';

const help = `usage: bridle certs init   [--dir DIR] [--dns NAME]... [--ip ADDR]... [--force]
       bridle certs host NAME [--dir DIR] [--dns NAME]... [--ip ADDR]...
       bridle certs client NAME [--dir DIR]
       bridle certs token  [--dir DIR]
       bridle certs show   [--dir DIR]

Makes the private PKI of the agent–collector link (mutual TLS): ECDSA P-256 keys, X.509 certificates
made with @peculiar/x509. Keys are written mode 0600.

  init    a CA (ca.crt, ca.key), the collector's certificate (collector.crt/.key) valid for localhost,
          127.0.0.1, ::1, this host's name and every --dns/--ip, a query client certificate
          (query-admin.crt/.key) and a bearer token for the query API (query.token)
  host    an agent certificate for host NAME (agent-NAME.crt/.key): CN = DNS SAN = NAME, role
          bridle-agent. The collector lets it write events as NAME only. Copy ca.crt and the pair
          to that host; keep ca.key on the machine that issues certificates.
  client  a query client certificate (query-NAME.crt/.key, role bridle-query): a credential for
          bridle events / lineage / sessions without a token
  token   appends a new random token to query.token and prints it
  show    lists the certificates in DIR with subject, names and validity

Flags:
  --dir DIR      where the files are (default $BRIDLE_HOME/certs: /var/lib/bridle/certs for root,
                 ~/.bridle/certs otherwise)
  --dns NAME     another DNS name for the certificate (repeatable)
  --ip ADDR      an IP address for the certificate (repeatable)
  --days N       validity (default: CA 3650, others 825)
  --force        init: replace an existing CA (every certificate it signed stops working)

Example:
  bridle certs init --dns collector.corp
  bridle certs host build-runner-7
  bridle collector &                       # uses collector.crt and query.token from the same dir
  bridle agent --policy p.yaml --collector collector.corp:7443 \\
    --ca ~/.bridle/certs/ca.crt --cert ~/.bridle/certs/agent-build-runner-7.crt --key ~/.bridle/certs/agent-build-runner-7.key
`;

const certs: Command = {
  summary: 'create the CA, collector, host and query certificates for mutual TLS',
  help,
  async run(argv) {
    const { flags, rest } = parseFlags(argv, { dir: 'string', dns: 'list', ip: 'list', days: 'string', force: 'boolean' });
    const [sub, name, ...extra] = rest;
    if (!sub) throw new UsageError('say what to make: init, host NAME, client NAME, token or show');
    if (extra.length) throw new UsageError(`unexpected argument '${extra[0]}'`);
    const { defaultCertsDir } = await import('../../collector/cli.js');
    const c = await import('../../collector/certs.js');
    const dir = (flags.dir as string | undefined) ?? defaultCertsDir();
    const days = flags.days !== undefined ? Number(flags.days) : undefined;
    if (days !== undefined && !(Number.isInteger(days) && days > 0)) throw new UsageError('--days must be a positive whole number');
    const dns = (flags.dns as string[] | undefined) ?? [];
    const ips = (flags.ip as string[] | undefined) ?? [];
    const say = (s: string) => process.stdout.write(s + '\n');
    switch (sub) {
      case 'init': {
        if (name) throw new UsageError(`init takes no name (got '${name}')`);
        const r = await c.initPki(dir, { dns, ips, force: !!flags.force, ...(days ? { days } : {}) });
        say(`CA            ${r.ca}`);
        say(`collector     ${r.collector.cert}   (${c.describeCert(r.collector.cert)})`);
        say(`query client  ${r.query.cert}`);
        say(`query token   ${r.tokenFile}`);
        say(`\nNext: bridle certs host HOSTNAME   (one per agent host), then: bridle collector --certs ${dir}`);
        return 0;
      }
      case 'host':
      case 'client': {
        if (!name) throw new UsageError(`${sub} needs a NAME: bridle certs ${sub} NAME`);
        const r = await c.issueCert(dir, { role: sub === 'host' ? 'agent' : 'query', name, dns, ips, ...(days ? { days } : {}) });
        say(`${r.cert}\n${r.key}\n(${c.describeCert(r.cert)})`);
        return 0;
      }
      case 'token': {
        const { existsSync } = await import('node:fs');
        if (!existsSync(dir)) throw new Error(`${dir} does not exist: run 'bridle certs init' first`);
        const r = c.addToken(dir);
        say(r.token);
        process.stderr.write(`(appended to ${r.file}; restart the collector to accept it)\n`);
        return 0;
      }
      case 'show': {
        const { readdirSync, existsSync } = await import('node:fs');
        const { join } = await import('node:path');
        if (!existsSync(dir)) throw new Error(`${dir} does not exist`);
        for (const f of readdirSync(dir).filter((f) => f.endsWith('.crt')).sort()) say(`${f.padEnd(28)} ${c.describeCert(join(dir, f))}`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand '${sub}' (init, host, client, token, show)`);
    }
  },
};
export default certs;
