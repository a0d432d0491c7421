// Defaults and help text shared by the collector-side commands. No heavy imports here: `bridle --help`
// loads every command module, and gRPC should not load for that.
import { homedir } from 'node:os';
import { join } from 'node:path';

/** $BRIDLE_HOME, else /var/lib/bridle for root, else ~/.bridle. */
export function bridleHome(): string {
  if (process.env.BRIDLE_HOME) return process.env.BRIDLE_HOME;
  return process.getuid?.() === 0 ? '/var/lib/bridle' : join(homedir(), '.bridle');
}
export const defaultCertsDir = (): string => join(bridleHome(), 'certs');
export const DEFAULT_PORT = 7443;

export const CONNECT_HELP = `Connection (query commands):
  --collector HOST:PORT  the collector (default: env BRIDLE_COLLECTOR, else 127.0.0.1:${DEFAULT_PORT})
  --certs DIR            certificates made by \`bridle certs\` (default $BRIDLE_HOME/certs; BRIDLE_HOME is
                         /var/lib/bridle for root, ~/.bridle otherwise): uses ca.crt, query-admin.crt/.key
  --ca/--cert/--key F    PEM files instead (the client certificate must be signed by the collector's CA)
  --token T              bearer token for the query API (default: env BRIDLE_TOKEN, else the first line of
  --token-file F         F, else DIR/query.token). A client certificate with the query role
                         (\`bridle certs client NAME\`) is a credential by itself.
  --server-name NAME     name to check in the collector's certificate, if not the host dialled
  --insecure             plain text, no certificates (only against a collector started with --insecure)`;

