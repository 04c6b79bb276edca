-- Schema bookkeeping used by db/migrator.py.

-- name: migrate_try_lock_session
-- Serialises migrations of one schema across processes; the key space is namespaced so it
-- never meets the concurrency-key or id spaces. Held by the migrator's session (its own
-- connection) across the transaction or the statements of a migration, released by
-- `migrate_unlock_session`. Tried, never waited for: a statement waiting for it would hold
-- a snapshot, and a concurrent index build of the migrator holding the lock waits for every
-- older snapshot to end, so the two would deadlock. A migrator that misses it tries again
-- after a pause, outside any transaction.
SELECT pg_try_advisory_lock(hashtextextended('gendurable:migrate:' || :schema::text, 0));

-- name: migrate_unlock_session
SELECT pg_advisory_unlock(hashtextextended('gendurable:migrate:' || :schema::text, 0));

-- name: bookkeeping_tables
-- Whether `meta` and `migrations` exist (a schema made by a pre-release build has no
-- `migrations`), scanning the catalog in this statement's snapshot: `to_regclass` answers
-- from caches that may not yet know what another migrator committed while this one waited
-- for the migration lock.
SELECT coalesce(bool_or(c.relname = 'meta'), false) AS meta,
       coalesce(bool_or(c.relname = 'migrations'), false) AS migrations
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema::text AND c.relname IN ('meta', 'migrations');

-- name: meta_version
SELECT version FROM __schema__.meta;

-- name: migrations_applied
SELECT version, name, checksum FROM __schema__.migrations ORDER BY version;

-- name: migration_record
-- Run in the transaction that applied the migration (or right after the last statement of
-- one that runs outside a transaction, which is why every such statement is repeatable).
WITH recorded AS (
    INSERT INTO __schema__.migrations (version, name, checksum, applied_by)
    VALUES (:version, :name, :checksum, :applied_by)
)
UPDATE __schema__.meta SET version = greatest(version, :version), migrated_at = now();

-- name: lock_timeout_local
-- For the rest of the migration's transaction: a lock it waits for longer gives up (and the
-- migrator tries again later) instead of queueing every worker behind its wait.
SELECT set_config('lock_timeout', :timeout::text, true);

-- name: lock_timeout_session
-- The same for the next statements of a migration that runs outside a transaction.
SELECT set_config('lock_timeout', :timeout::text, false);

-- name: lock_timeout_reset
RESET lock_timeout;

-- name: index_invalid
-- True for an index left INVALID by a `CREATE INDEX CONCURRENTLY` cut short; NULL for none.
SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:index::text);

-- name: index_drop_concurrently
-- `__index__` is the quoted name of an index `index_invalid` found INVALID.
DROP INDEX CONCURRENTLY IF EXISTS __schema__.__index__;
