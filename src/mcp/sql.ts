// The `sql: read-only` check: parses with PostgreSQL's own parser (libpg-query, compiled to WebAssembly)
// and walks the whole tree, so writes hidden in data-modifying CTEs, in a second statement, behind
// comments, in EXPLAIN ANALYZE or in SELECT … INTO are found. No regexes over SQL text.
//
// What it cannot see: side effects of user-defined functions (a SELECT may call a function that writes).
// Known side-effecting built-ins are denied by name; for more, pair this check with a read-only database
// role (docs/mcp.md says so).
import { loadModule, parseSync } from 'libpg-query';

let loaded: Promise<void> | undefined;
let ready = false;

/** Loads the parser (about 100 ms, once per process). checkReadOnly fails closed until this resolves. */
export function loadSqlParser(): Promise<void> {
  loaded ??= loadModule().then(() => {
    ready = true;
  });
  return loaded;
}

export function sqlParserReady(): boolean {
  return ready;
}

/** Statement kinds that read only. EXPLAIN [ANALYZE] passes only when what it explains passes too. */
const READ_STATEMENTS = new Set(['SelectStmt', 'ExplainStmt', 'VariableShowStmt']);

/**
 * Built-in functions with side effects (writes, locks, signals, configuration, external access) or that run
 * SQL given as a string (which this check could not see). Compared on the unqualified, lower-cased name.
 */
const SIDE_EFFECT_FUNCTIONS = new Set([
  'nextval', 'setval', 'set_config', 'txid_current', 'pg_current_xact_id',
  'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared',
  'pg_try_advisory_lock', 'pg_try_advisory_lock_shared', 'pg_try_advisory_xact_lock', 'pg_try_advisory_xact_lock_shared',
  'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_log_backend_memory_contexts',
  'pg_create_restore_point', 'pg_switch_wal', 'pg_promote', 'pg_backup_start', 'pg_backup_stop', 'pg_start_backup', 'pg_stop_backup',
  'pg_wal_replay_pause', 'pg_wal_replay_resume', 'pg_logical_emit_message', 'pg_notify',
  'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
  'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot', 'pg_replication_slot_advance',
  'pg_replication_origin_create', 'pg_replication_origin_drop', 'pg_replication_origin_advance',
  'pg_stat_reset', 'pg_stat_reset_shared', 'pg_stat_reset_single_table_counters', 'pg_stat_reset_single_function_counters',
  'pg_stat_reset_slru', 'pg_stat_reset_replication_slot', 'pg_stat_reset_subscription_stats', 'pg_stat_statements_reset',
  'pg_import_system_collations', 'pg_sequence_last_value',
  'lo_create', 'lo_creat', 'lo_import', 'lo_export', 'lo_unlink', 'lo_put', 'lo_from_bytea', 'lo_truncate', 'lo_truncate64',
  'lowrite', 'lo_open', 'lo_close',
  'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync', 'pg_read_file', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file',
  'dblink', 'dblink_exec', 'dblink_open', 'dblink_fetch', 'dblink_send_query', 'dblink_connect', 'dblink_connect_u',
  'query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'cursor_to_xml', 'cursor_to_xmlschema',
  'pg_sleep', 'pg_sleep_for', 'pg_sleep_until',
]);

export type SqlVerdict = { ok: true; statements: number } | { ok: false; reason: string };

/** Decides whether `sql` only reads. Parse errors, empty input and an unloaded parser are not read-only. */
export function checkReadOnly(sql: string): SqlVerdict {
  if (!ready) return { ok: false, reason: 'the SQL parser is not loaded' };
  if (sql.trim() === '') return { ok: false, reason: 'no SQL statement' };
  let tree: { stmts?: { stmt?: Record<string, unknown> }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch (err) {
    return { ok: false, reason: `SQL does not parse as PostgreSQL: ${String((err as Error).message).split('\n')[0]}` };
  }
  const stmts = tree.stmts ?? [];
  if (stmts.length === 0) return { ok: false, reason: 'no SQL statement' };
  for (let i = 0; i < stmts.length; i++) {
    const stmt = stmts[i]!.stmt ?? {};
    const kind = Object.keys(stmt)[0] ?? '?';
    const where = stmts.length > 1 ? `statement ${i + 1} of ${stmts.length}` : 'the statement';
    if (!READ_STATEMENTS.has(kind)) return { ok: false, reason: `${where} is ${describe(kind)}, not a read` };
    const found = findWrite(stmt[kind], 0);
    if (found) return { ok: false, reason: `${where}: ${found}` };
  }
  return { ok: true, statements: stmts.length };
}

/** Walks the subtree: any nested statement other than a SELECT, SELECT INTO, row locks, side-effect functions. */
function findWrite(node: unknown, depth: number): string | undefined {
  if (depth > 2000) return 'the statement is nested too deeply to check';
  if (Array.isArray(node)) {
    for (const x of node) {
      const r = findWrite(x, depth + 1);
      if (r) return r;
    }
    return undefined;
  }
  if (node === null || typeof node !== 'object') return undefined;
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k.endsWith('Stmt') && k !== 'SelectStmt') return `contains ${describe(k)}`;
    if (k === 'intoClause') return 'SELECT … INTO creates a table';
    if (k === 'lockingClause') return 'FOR UPDATE/SHARE locks rows';
    if (k === 'FuncCall') {
      const fc = v as { funcname?: { String?: { sval?: string } }[] };
      const names = (fc.funcname ?? []).map((n) => n.String?.sval ?? '');
      const base = (names[names.length - 1] ?? '').toLowerCase();
      if (SIDE_EFFECT_FUNCTIONS.has(base)) return `calls ${names.join('.')}(), which has side effects or runs SQL this check cannot see`;
    }
    const r = findWrite(v, depth + 1);
    if (r) return r;
  }
  return undefined;
}

function describe(kind: string): string {
  const names: Record<string, string> = {
    InsertStmt: 'an INSERT', UpdateStmt: 'an UPDATE', DeleteStmt: 'a DELETE', MergeStmt: 'a MERGE',
    CreateStmt: 'a CREATE TABLE', CreateTableAsStmt: 'a CREATE TABLE AS', DropStmt: 'a DROP', TruncateStmt: 'a TRUNCATE',
    AlterTableStmt: 'an ALTER TABLE', CopyStmt: 'a COPY', DoStmt: 'a DO block', CallStmt: 'a CALL',
    TransactionStmt: 'a transaction control statement (BEGIN/COMMIT/ROLLBACK)', VariableSetStmt: 'a SET',
    LockStmt: 'a LOCK', GrantStmt: 'a GRANT/REVOKE', VacuumStmt: 'a VACUUM/ANALYZE', PrepareStmt: 'a PREPARE',
    ExecuteStmt: 'an EXECUTE', NotifyStmt: 'a NOTIFY', ListenStmt: 'a LISTEN', DeclareCursorStmt: 'a DECLARE CURSOR',
    RefreshMatViewStmt: 'a REFRESH MATERIALIZED VIEW', CreateFunctionStmt: 'a CREATE FUNCTION', RuleStmt: 'a CREATE RULE',
    IndexStmt: 'a CREATE INDEX', ViewStmt: 'a CREATE VIEW', ReindexStmt: 'a REINDEX', ClusterStmt: 'a CLUSTER',
  };
  return names[kind] ?? `a ${kind.replace(/Stmt$/, '')} statement`;
}
