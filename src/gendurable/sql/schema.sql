-- Schema bookkeeping used by db/migrator.py.

-- name: migrate_lock
-- Serialises migrations of one schema across processes; the key space is namespaced so it
-- never meets the concurrency-key or id spaces.
SELECT pg_advisory_xact_lock(hashtextextended('gendurable:migrate:' || :schema::text, 0));

-- name: meta_exists
SELECT to_regclass('__schema__.meta') IS NOT NULL;

-- name: meta_version
SELECT version FROM __schema__.meta;
