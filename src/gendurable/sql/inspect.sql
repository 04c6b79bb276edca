-- Read-only views of the instances for the command line (`gendurable status`, `ls`, `show`).

-- name: status_counts
-- Instances by workflow x status x queue, with the oldest due row of each available group
-- (how far that queue is behind). One pass over the table: meant for an operator, not a loop.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
SELECT i.workflow, i.status::text AS status, i.queue, count(*) AS count,
       min(i.run_at) FILTER (WHERE i.status = 'available' AND i.run_at <= now.t) AS oldest_due,
       now.t AS now
FROM __schema__.instances i, now
GROUP BY i.workflow, i.status, i.queue, now.t
ORDER BY i.workflow, i.queue, i.status;

-- name: instances_list
-- Newest first, keyset-paginated on id (:before_id: only ids below it), read backwards
-- through the primary key so a page costs the rows it skips, never a sort of the table. Each
-- filter is optional (NULL: any): workflow, statuses, queue, key prefix.
SELECT id, workflow, key, status::text, step, attempt, queue, priority, run_at, updated_at
FROM __schema__.instances
WHERE (:workflow::text IS NULL OR workflow = :workflow)
  AND (:statuses::text[] IS NULL OR status::text = ANY (:statuses::text[]))
  AND (:queue::text IS NULL OR queue = :queue)
  AND (:key_prefix::text IS NULL OR starts_with(key, :key_prefix))
  AND (:before_id::bigint IS NULL OR id < :before_id)
ORDER BY id DESC
LIMIT :limit;

-- name: instances_with_key
-- For each workflow with an instance holding `key`: its live instance, else its latest one
-- (the CLI addressing a key without --workflow).
SELECT DISTINCT ON (workflow) id, workflow, status::text
FROM __schema__.instances
WHERE key = :key
ORDER BY workflow, (status IN __live__) DESC, id DESC;

-- name: children_list
-- The children of an instance in spawn order, at most :limit of them, with their total count.
SELECT id, workflow, key, status::text, step, spawn_index, count(*) OVER () AS total
FROM __schema__.instances
WHERE parent_id = :parent_id
ORDER BY id
LIMIT :limit;

-- name: instance_workflows
-- Every workflow name some row has, to say which are known when a name matches none (the
-- CLI's error paths only: one pass over the table, as no index covers every row by workflow).
SELECT DISTINCT workflow FROM __schema__.instances ORDER BY workflow;
