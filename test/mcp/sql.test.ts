// sql: read-only with PostgreSQL's own parser: tricky statements that hide writes are caught, reads pass.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { checkReadOnly, loadSqlParser } from '../../src/mcp/sql.js';

before(() => loadSqlParser());

const READS = [
  'SELECT 1',
  'select * from users where id = 1',
  'SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 10',
  'WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN u USING (id)',
  'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r',
  'SELECT * FROM t WHERE name = \'; DROP TABLE users; --\'',
  'SELECT 1 -- ; DELETE FROM t',
  'SELECT /* DELETE FROM t; */ 1',
  'select 1; select 2',
  'EXPLAIN SELECT * FROM t',
  'EXPLAIN ANALYZE SELECT * FROM t',
  'SHOW search_path',
  'SELECT $$ DELETE FROM t $$',
  'SELECT lower(name), now(), coalesce(a, b) FROM t',
  'VALUES (1), (2)',
  '(SELECT 1) UNION (SELECT 2)',
];

const WRITES: [string, RegExp][] = [
  ['DELETE FROM t', /DELETE/],
  ['insert into t values (1)', /INSERT/],
  ['UPDATE t SET a = 1', /UPDATE/],
  ['WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', /contains a DELETE/],
  ['WITH a AS (SELECT 1), b AS (UPDATE t SET x = 1 RETURNING x) SELECT * FROM a, b', /contains an UPDATE/],
  ['WITH i AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1', /contains an INSERT/],
  ['SELECT 1; DROP TABLE users', /statement 2 of 2 is a DROP/],
  ['SELECT 1; DELETE FROM t -- just a comment', /statement 2 of 2 is a DELETE/],
  ['/* harmless */ DELETE /* really */ FROM t', /DELETE/],
  ['COMMIT; DROP TABLE users', /transaction control/],
  ['SELECT * INTO backup FROM users', /SELECT … INTO/],
  ['CREATE TABLE x AS SELECT 1', /CREATE TABLE AS/],
  ['EXPLAIN ANALYZE DELETE FROM t', /DELETE/],
  ['EXPLAIN (ANALYZE true) UPDATE t SET a = 1', /UPDATE/],
  ['SELECT * FROM t FOR UPDATE', /locks rows/],
  ["SELECT nextval('seq')", /nextval/],
  ["SELECT pg_catalog.set_config('role', 'admin', false)", /set_config/],
  ['SELECT pg_terminate_backend(1234)', /pg_terminate_backend/],
  ["SELECT query_to_xml('delete from t returning 1', true, true, '')", /query_to_xml/],
  ["SELECT * FROM dblink('dbname=x', 'delete from t') AS r(a int)", /dblink/],
  ["SELECT (SELECT lo_unlink(1))", /lo_unlink/],
  ["SELECT * FROM t WHERE id IN (SELECT pg_advisory_lock(1))", /pg_advisory_lock/],
  ["DO $$ BEGIN DELETE FROM t; END $$", /DO block/],
  ['CALL cleanup()', /CALL/],
  ["COPY t TO PROGRAM 'curl evil'", /COPY/],
  ['SET role admin', /SET/],
  ['TRUNCATE t', /TRUNCATE/],
  ['GRANT ALL ON t TO public', /GRANT/],
  ['LOCK TABLE t', /LOCK/],
  ["PREPARE p AS DELETE FROM t", /PREPARE/],
  ['EXECUTE p', /EXECUTE/],
  ['MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE', /MERGE/],
  ["NOTIFY ch, 'x'", /NOTIFY/],
  ['VACUUM t', /VACUUM/],
  ['REFRESH MATERIALIZED VIEW v', /REFRESH/],
  ['CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql', /CREATE FUNCTION/],
  ['', /no SQL statement/],
  ['-- only a comment', /no SQL statement/],
  ['SELEC 1', /does not parse/],
  ['SELECT `x` FROM t', /does not parse/],
  ["SELECT 1; DELETE FROM t WHERE name = 'a''; b'", /DELETE/],
];

test('sql: reads are read-only', () => {
  for (const q of READS) {
    const v = checkReadOnly(q);
    assert.ok(v.ok, `${q}: ${!v.ok ? v.reason : ''}`);
  }
});

test('sql: writes, hidden writes, side effects and unparsable input are not', () => {
  for (const [q, re] of WRITES) {
    const v = checkReadOnly(q);
    assert.equal(v.ok, false, `${q} was judged read-only`);
    if (!v.ok) assert.match(v.reason, re, q);
  }
});
