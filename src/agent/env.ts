// The environment a session gets: only the variables the policy's credentials.env.allow names.
import type { Policy } from '../policy/types.js';

/** Used when a policy names no variables at all: enough for programs to run, no credentials. */
export const BASE_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LC_*', 'TERM', 'TZ', 'TMPDIR'];

export function sessionEnv(policy: Policy, from: NodeJS.ProcessEnv = process.env): { env: Record<string, string>; dropped: string[] } {
  const allow = policy.credentials.env.allow.length ? policy.credentials.env.allow : BASE_ENV;
  const exact = new Set(allow.filter((a) => !a.endsWith('*')));
  const prefixes = allow.filter((a) => a.endsWith('*')).map((a) => a.slice(0, -1));
  const env: Record<string, string> = {};
  const dropped: string[] = [];
  for (const [k, v] of Object.entries(from)) {
    if (v === undefined) continue;
    if (exact.has(k) || prefixes.some((p) => k.startsWith(p))) env[k] = v;
    else dropped.push(k);
  }
  return { env, dropped };
}
