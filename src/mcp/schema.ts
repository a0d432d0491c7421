// Validates tool-call arguments against the server's own inputSchema (JSON Schema) before forwarding, so a
// server never sees arguments its own contract rejects (and policy conditions can rely on the types).
// Validators are compiled once per distinct schema. The JSON Schema dialect follows `$schema`: draft-07
// (what zod-to-json-schema emits) or 2019-09, else 2020-12 (MCP's default). `format` is not enforced.
import { createHash } from 'node:crypto';
import { Ajv, type ValidateFunction } from 'ajv';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { Ajv2020 } from 'ajv/dist/2020.js';

const opts = { strict: false, allErrors: false, validateFormats: false, logger: false as const, validateSchema: false };
let ajv07: Ajv | undefined;
let ajv2019: Ajv2019 | undefined;
let ajv2020: Ajv2020 | undefined;

function instanceFor(schema: Record<string, unknown>): Ajv | Ajv2019 | Ajv2020 {
  const dialect = typeof schema.$schema === 'string' ? schema.$schema : '';
  if (/draft-0[467]/.test(dialect)) return (ajv07 ??= new Ajv(opts));
  if (/2019-09/.test(dialect)) return (ajv2019 ??= new Ajv2019(opts));
  return (ajv2020 ??= new Ajv2020(opts));
}

type Compiled = { validate: ValidateFunction } | { error: string };
const cache = new Map<string, Compiled>();
const MAX_CACHE = 1000;

export type SchemaVerdict = { ok: true } | { ok: false; reason: string };

/** Checks `args` against `inputSchema`. A schema that is missing or does not compile fails closed. */
export function validateArgs(inputSchema: unknown, args: unknown): SchemaVerdict {
  if (inputSchema === null || typeof inputSchema !== 'object' || Array.isArray(inputSchema)) {
    return { ok: false, reason: 'the tool has no inputSchema object to check the arguments against' };
  }
  const text = JSON.stringify(inputSchema);
  const key = text.length > 256 ? createHash('sha256').update(text).digest('base64') : text;
  let c = cache.get(key);
  if (!c) {
    try {
      const schema = { ...(inputSchema as Record<string, unknown>) };
      const ajv = instanceFor(schema);
      delete schema.$schema; // the instance already speaks that dialect; avoids meta-schema look-ups
      delete schema.$id; // two servers may reuse one $id for different schemas
      c = { validate: ajv.compile(schema) };
    } catch (err) {
      c = { error: `the tool's inputSchema does not compile: ${(err as Error).message}` };
    }
    if (cache.size >= MAX_CACHE) cache.delete(cache.keys().next().value!);
    cache.set(key, c);
  }
  if ('error' in c) return { ok: false, reason: c.error };
  if (c.validate(args)) return { ok: true };
  const e = c.validate.errors?.[0];
  const at = e?.instancePath ? `arguments${e.instancePath.replace(/\//g, '.')}` : 'arguments';
  const extra = e?.keyword === 'additionalProperties' ? ` ('${(e.params as { additionalProperty?: string }).additionalProperty}')` : '';
  const enumv = e?.keyword === 'enum' ? ` (${JSON.stringify((e.params as { allowedValues?: unknown }).allowedValues)})` : '';
  return { ok: false, reason: `${at} ${e?.message ?? 'do not match the schema'}${extra}${enumv}` };
}
