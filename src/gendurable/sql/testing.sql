-- Schema administration for test fixtures and tooling (db/schema_admin.py).

-- name: schema_drop
-- Drops a test schema and everything in it. lock_timeout turns a connection that a test left
-- open inside the schema into an error instead of a hang; SET LOCAL needs the transaction
-- schema_admin opens around it.
SET LOCAL lock_timeout = '10s';
DROP SCHEMA IF EXISTS __schema__ CASCADE;
