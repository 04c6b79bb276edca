-- Deploy check: read-only questions about the live rows, asked before a deploy to find what
-- the new code would strand. Nothing here writes or locks rows.

-- name: check_live_steps
-- Live rows by (workflow, step): the compiled workflows must still know every pair.
SELECT workflow, step, count(*) AS n, min(id) AS example_id
FROM __schema__.instances
WHERE status IN __live__
GROUP BY workflow, step
ORDER BY workflow, step;

-- name: check_awaited_names
-- The signal names parked rows wait for, by (workflow, step, name).
SELECT i.workflow, i.step, a.name, count(*) AS n, min(i.id) AS example_id
FROM __schema__.instances i, unnest(i.await_names) AS a(name)
WHERE i.status = 'awaiting'
GROUP BY i.workflow, i.step, a.name
ORDER BY i.workflow, i.step, a.name;

-- name: check_states_oldest
-- A sample: the live states of one workflow written longest ago, the likeliest to have been
-- written by older code.
SELECT id, state, state_version
FROM __schema__.instances
WHERE workflow = :workflow AND status IN __live__
  AND state IS NOT NULL
ORDER BY updated_at, id
LIMIT :limit;

-- name: check_states_page
-- Every live state of one workflow, one page at a time (keyset on id: O(page) per call).
SELECT id, state, state_version
FROM __schema__.instances
WHERE workflow = :workflow AND status IN __live__
  AND state IS NOT NULL AND id > :after_id
ORDER BY id
LIMIT :limit;

-- name: check_state_versions
-- Live rows by (workflow, state version): the compiled upgrades must lead every stored
-- version to the workflow's current one.
SELECT workflow, state_version, count(*) AS n, min(id) AS example_id
FROM __schema__.instances
WHERE status IN __live__
GROUP BY workflow, state_version
ORDER BY workflow, state_version;

-- name: check_live_queues
-- Live rows by (workflow, queue): each queue needs an engine that runs it.
SELECT workflow, queue, count(*) AS n, min(id) AS example_id
FROM __schema__.instances
WHERE status IN __live__
GROUP BY workflow, queue
ORDER BY workflow, queue;
