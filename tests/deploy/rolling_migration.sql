-- gendurable: no-transaction
-- A migration of "the next release" for the rolling-deploy test, used while gendurable ships
-- no migration after 0.1.0 (the test copies the package and adds this file as the next
-- number). It expands the schema as src/gendurable/sql/migrations/README.md allows: a
-- nullable column (a catalog change under a lock timeout), a new table, and an index on
-- `instances` built concurrently.
ALTER TABLE __schema__.instances ADD COLUMN IF NOT EXISTS deploy_note text;

CREATE TABLE IF NOT EXISTS __schema__.deploy_notes (
    instance_id bigint PRIMARY KEY,
    note text NOT NULL
);

CREATE INDEX CONCURRENTLY IF NOT EXISTS instances_deploy_note
    ON __schema__.instances (workflow, step) WHERE deploy_note IS NOT NULL;
