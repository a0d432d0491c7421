// Mutual TLS between agents, the collector and query clients, and who a peer is.
//
// Identities live in the certificates `bridle certs` makes (see certs.ts):
//   CN = the host name (agents) or a user name (query clients); DNS SANs = more names of the same host.
//   OU = the role: bridle-agent (may Ingest as its CN/SANs), bridle-query (may query), bridle-collector.
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { timingSafeEqual, createHash } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';

export interface TlsFiles {
  /** PEM file paths. */
  ca: string;
  cert: string;
  key: string;
}

export const ROLE_AGENT = 'bridle-agent';
export const ROLE_QUERY = 'bridle-query';
export const ROLE_COLLECTOR = 'bridle-collector';

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export function serverCredentials(tls: TlsFiles | undefined, insecure: boolean | undefined): grpc.ServerCredentials {
  if (tls) {
    // checkClientCertificate: every connection must present a certificate signed by our CA (mutual TLS).
    return grpc.ServerCredentials.createSsl(readPem(tls.ca, 'CA certificate'), [
      { cert_chain: readPem(tls.cert, 'certificate'), private_key: readPem(tls.key, 'private key') },
    ], true);
  }
  if (insecure) return grpc.ServerCredentials.createInsecure();
  throw new Error('TLS is required: give the CA, certificate and key (bridle certs makes them), or --insecure to run without TLS');
}

export function channelCredentials(tls: TlsFiles | undefined, insecure: boolean | undefined): grpc.ChannelCredentials {
  if (tls) return grpc.credentials.createSsl(readPem(tls.ca, 'CA certificate'), readPem(tls.key, 'private key'), readPem(tls.cert, 'certificate'));
  if (insecure) return grpc.credentials.createInsecure();
  throw new Error('TLS is required: give the CA, certificate and key (bridle certs makes them), or --insecure to run without TLS');
}

export interface PeerIdentity {
  tls: boolean;
  /** CN followed by DNS SANs. */
  names: string[];
  role?: string;
}

function asList(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

export function peerIdentity(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate; transportSecurityType?: string } }): PeerIdentity {
  const ctx = call.getAuthContext();
  const cert = ctx.sslPeerCertificate;
  if (!cert) return { tls: ctx.transportSecurityType === 'ssl', names: [] };
  const names = [...asList(cert.subject?.CN as string | string[] | undefined)];
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*DNS:(.+)$/.exec(part);
    if (m && !names.includes(m[1]!)) names.push(m[1]!);
  }
  const ou = asList(cert.subject?.OU as string | string[] | undefined);
  const role = [ROLE_AGENT, ROLE_QUERY, ROLE_COLLECTOR].find((r) => ou.includes(r));
  return role ? { tls: true, names, role } : { tls: true, names };
}

/** Constant-time membership test for bearer tokens (compares SHA-256 digests, so lengths do not leak). */
export class TokenSet {
  private digests: Buffer[];
  constructor(tokens: Iterable<string>) {
    this.digests = [...tokens].filter((t) => t.length > 0).map((t) => createHash('sha256').update(t).digest());
  }
  get size(): number {
    return this.digests.length;
  }
  has(token: string): boolean {
    const d = createHash('sha256').update(token).digest();
    let ok = false;
    for (const x of this.digests) ok = timingSafeEqual(x, d) || ok;
    return ok;
  }
}

/** Reads tokens from a file: one per line, blank lines and `#` comments ignored. */
export function readTokenFile(path: string): string[] {
  return readPem(path, 'token file')
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}
