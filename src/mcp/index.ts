// Public API of the MCP governance proxy. The CLI (src/cli/commands/mcp.ts) and the agent use only this.
export { decide, visible, redactArgs, compileServer, REDACTED, type CompiledServer, type Decision, type CallInput, type ToolDef } from './engine.js';
export { Governor, McpSession, deniedResult, silentLogger, type ClientOutcome, type GovernorOptions, type Identity, type Logger } from './session.js';
export { startStdioProxy, type StdioProxy, type StdioProxyOptions } from './stdio.js';
export { startHttpProxy, type HttpProxy, type HttpProxyOptions } from './http.js';
export { PinStore, defaultPinPath, pinOf, canonicalJson, type Pin, type PinChange } from './pins.js';
export { checkReadOnly, loadSqlParser } from './sql.js';
export { validateArgs } from './schema.js';
export { NdjsonFileSink, LogSink, MemorySink } from './sinks.js';
export { LineSplitter } from './jsonrpc.js';

import type { Policy } from '../policy/types.js';

/** True when any server's rules use `sql:`; call loadSqlParser() before proxying such a server. */
export function needsSqlParser(policy: Policy, server?: string): boolean {
  return Object.values(policy.mcp.servers).some((s) => (server === undefined || s.name === server) && s.rules.some((r) => r.sql));
}
