-- gendurable: no-transaction
-- Schema v2: the updates of a running instance become heap-only (HOT) where they can. A step
-- run back to back on its claim, and a heartbeat, rewrite `locked_until` and no other column
-- an index reads; PostgreSQL updates such a row in place, writing no index entry, when no
-- index reads what changed and the new version fits on the row's page. Measured on w1 (a
-- claim, two such steps and a finish per instance): index entries written per instance
-- 19 -> 13, HOT share of updates 0 -> 0.38, WAL per step -20 % (see docs/performance.md).
-- Each statement is repeatable, and the file runs a statement at a time, outside a
-- transaction (see README.md).

-- Room on every page for the next version of its rows: new rows fill pages to 70 %. A storage
-- parameter (SHARE UPDATE EXCLUSIVE: readers and writers go on), applying to pages filled from
-- now on; existing pages gain room as vacuum frees them.
ALTER TABLE __schema__.instances SET (fillfactor = 70);

-- The executing rows, for the reaper (expired leases) and startup reclaim. By `id`, which no
-- update changes, so that moving a lease on writes no index entry; the reaper reads every
-- executing row and checks its lease (as many rows as claims are running).
CREATE INDEX CONCURRENTLY IF NOT EXISTS instances_executing
    ON __schema__.instances (id)
    WHERE status = 'executing';

-- Replaced by `instances_executing`. The reaper and startup reclaim of 0.1.0 engines, which may
-- run beside this release during a rolling deploy, read the new index instead (their
-- correctness never depended on this one: it is neither unique nor an arbiter).
DROP INDEX CONCURRENTLY IF EXISTS __schema__.instances_lease;
