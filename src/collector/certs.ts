// A small private PKI for bridle, made with @peculiar/x509 over Node's WebCrypto (ECDSA P-256, SHA-256).
//
// Files in a certs directory (keys are mode 0600):
//   ca.crt, ca.key                 the CA (signs everything below; keep ca.key off the agents)
//   collector.crt, collector.key   the collector's server certificate (role bridle-collector)
//   agent-<host>.crt / .key        one per agent host: CN = SAN = host name (role bridle-agent)
//   query-<name>.crt / .key        query clients (role bridle-query)
//   query.token                    bearer tokens for the query API, one per line
// @peculiar/x509 resolves its ASN.1 schemas through tsyringe, which needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto, randomBytes, X509Certificate as NodeX509 } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { ROLE_AGENT, ROLE_COLLECTOR, ROLE_QUERY } from './tls.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const subtle = webcrypto.subtle as unknown as SubtleCrypto;

export type Role = 'agent' | 'query' | 'collector';
const OU: Record<Role, string> = { agent: ROLE_AGENT, query: ROLE_QUERY, collector: ROLE_COLLECTOR };

export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
}

/** Names that go into a certificate subject and file names: host-name characters only. */
export function checkName(name: string, what = 'name'): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/.test(name)) {
    throw new Error(`${what} '${name}' must be letters, digits, '.', '_' or '-' (a host name)`);
  }
  return name;
}

function writeKey(path: string, pem: string): void {
  writeFileSync(path, pem, { mode: 0o600 });
  chmodSync(path, 0o600);
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  return b.toString('hex');
}

export const caPaths = (dir: string) => ({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') });

/** Creates ca.crt / ca.key in `dir`. Refuses to overwrite an existing CA unless `force`. */
export async function createCA(dir: string, opts: { name?: string; days?: number; force?: boolean } = {}): Promise<{ cert: string; key: string }> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const paths = caPaths(dir);
  if (existsSync(paths.key) && !opts.force) throw new Error(`${paths.key} exists already (use --force to replace the CA and every certificate it signed)`);
  const keys = (await subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${opts.name ?? 'bridle CA'}`,
    notBefore: new Date(now.getTime() - 5 * 60_000),
    notAfter: new Date(now.getTime() + (opts.days ?? 3650) * 86_400_000),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeFileSync(paths.cert, cert.toString('pem'));
  writeKey(paths.key, await keyPem(keys.privateKey));
  return paths;
}

/**
 * Issues a certificate signed by the CA in `dir`. Agents: CN and DNS SAN = the host name (the identity
 * the collector lets it write as). Collector: SANs for every name and address clients dial.
 */
export async function issueCert(
  dir: string,
  opts: { role: Role; name: string; dns?: string[]; ips?: string[]; days?: number; file?: string },
): Promise<CertFiles> {
  checkName(opts.name, opts.role === 'agent' ? 'host name' : 'name');
  const paths = caPaths(dir);
  if (!existsSync(paths.key)) throw new Error(`no CA in ${dir}: run 'bridle certs init --dir ${dir}' first`);
  const caCert = new x509.X509Certificate(readFileSync(paths.cert, 'utf8'));
  const caKey = await subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(readFileSync(paths.key, 'utf8')), ALG, false, ['sign']);
  const keys = (await subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const dns = [...new Set([opts.name, ...(opts.dns ?? [])].filter((n) => !isIP(n)))];
  const ips = [...new Set([...(opts.ips ?? []), ...[opts.name, ...(opts.dns ?? [])].filter((n) => isIP(n))])];
  for (const d of dns) checkName(d, 'DNS name');
  for (const ip of ips) if (!isIP(ip)) throw new Error(`'${ip}' is not an IP address`);
  const eku =
    opts.role === 'collector' ? [x509.ExtendedKeyUsage.serverAuth] : opts.role === 'agent' ? [x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth];
  const now = new Date();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.name}, OU=${OU[opts.role]}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 5 * 60_000),
    notAfter: new Date(now.getTime() + (opts.days ?? 825) * 86_400_000),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension(eku, false),
      new x509.SubjectAlternativeNameExtension([...dns.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  const base = opts.file ?? (opts.role === 'collector' ? 'collector' : `${opts.role}-${opts.name}`);
  const out = { ca: paths.cert, cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) };
  writeFileSync(out.cert, cert.toString('pem'));
  writeKey(out.key, await keyPem(keys.privateKey));
  return out;
}

/** A random bearer token (URL-safe, 256 bits). */
export function newToken(): string {
  return `brdl_${randomBytes(32).toString('base64url')}`;
}

/** Appends a new token to `<dir>/query.token` (created 0600) and returns it. */
export function addToken(dir: string): { token: string; file: string } {
  const file = join(dir, 'query.token');
  const token = newToken();
  const prev = existsSync(file) ? readFileSync(file, 'utf8') : '# bridle query API bearer tokens, one per line\n';
  writeKey(file, `${prev.endsWith('\n') ? prev : prev + '\n'}${token}\n`);
  return { token, file };
}

export interface PkiInit {
  dir: string;
  ca: string;
  collector: CertFiles;
  query: CertFiles;
  token: string;
  tokenFile: string;
}

/** CA, a collector certificate (localhost, 127.0.0.1, ::1, this host name, plus `dns`/`ips`), a query client certificate and a token. */
export async function initPki(dir: string, opts: { dns?: string[]; ips?: string[]; force?: boolean; days?: number } = {}): Promise<PkiInit> {
  const ca = await createCA(dir, opts.force !== undefined ? { force: opts.force } : {});
  const host = hostname();
  const collector = await issueCert(dir, {
    role: 'collector',
    name: /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(host) ? host : 'localhost',
    dns: ['localhost', ...(opts.dns ?? [])],
    ips: ['127.0.0.1', '::1', ...(opts.ips ?? [])],
  });
  const query = await issueCert(dir, { role: 'query', name: 'admin' });
  const { token, file } = addToken(dir);
  return { dir, ca: ca.cert, collector, query, token, tokenFile: file };
}

/** One line about a certificate file: subject, SANs, validity. */
export function describeCert(path: string): string {
  const c = new NodeX509(readFileSync(path));
  return `${c.subject.replace(/\n/g, ', ')}; SAN ${c.subjectAltName ?? '-'}; valid ${c.validFrom} → ${c.validTo}`;
}
