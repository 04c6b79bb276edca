-- The web dashboard's reads (gendurable.web): each list is a keyset page read through an
-- index, each aggregate is bounded by a time window or by the number of queues. The
-- dashboard also runs `status_counts`, `instances_list` (inspect.sql) and
-- `instance_explain` (explain.sql).

-- name: throughput_by_minute
-- Instances that ended per minute and terminal status over the last :minutes minutes up to
-- :now (NULL: the database's now). Reads the terminal-rows index on finished_at, so the cost is
-- the rows that ended in the window, never the table. Minutes with nothing have no row.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
SELECT date_bin('1 minute', i.finished_at, now.t - make_interval(mins => :minutes)) AS minute,
       i.status::text AS status, count(*) AS count, now.t AS now
FROM __schema__.instances i, now
WHERE i.status IN __terminal__
  AND i.finished_at > now.t - make_interval(mins => :minutes)
  AND i.finished_at <= now.t
GROUP BY 1, 2, now.t
ORDER BY 1, 2;

-- name: queue_oldest_due
-- For each queue of :queues, the due available row that has waited longest (run_at, then
-- id), as of :now. The pick index leads with (queue, priority DESC), so run_at is ordered only
-- within one priority: the recursive part walks the distinct priorities of the queue (one
-- index probe each, a loose index scan) and each priority gives its oldest due row from
-- the index. Cost: queues x distinct priorities probes, whatever the backlog.
WITH RECURSIVE now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
priorities AS (
    SELECT q.queue,
           (SELECT i.priority FROM __schema__.instances i
            WHERE i.status = 'available' AND i.queue = q.queue
            ORDER BY i.priority DESC LIMIT 1) AS priority
    FROM unnest(:queues::text[]) AS q(queue)
    UNION ALL
    SELECT p.queue,
           (SELECT i.priority FROM __schema__.instances i
            WHERE i.status = 'available' AND i.queue = p.queue AND i.priority < p.priority
            ORDER BY i.priority DESC LIMIT 1)
    FROM priorities p
    WHERE p.priority IS NOT NULL
)
SELECT DISTINCT ON (p.queue) p.queue, o.id, o.workflow, o.key, o.priority, o.run_at,
       now.t - o.run_at AS behind
FROM priorities p
CROSS JOIN now
JOIN LATERAL (
    SELECT i.id, i.workflow, i.key, i.priority, i.run_at
    FROM __schema__.instances i
    WHERE i.status = 'available' AND i.queue = p.queue AND i.priority = p.priority
      AND i.run_at <= now.t
    ORDER BY i.run_at, i.id
    LIMIT 1
) o ON true
ORDER BY p.queue, o.run_at, o.id;

-- name: children_page
-- A page of an instance's children in spawn order: ids above :after_id (NULL: from the
-- first), at most :limit, through the (parent_id, id) index.
SELECT id, workflow, key, status::text, step, spawn_index
FROM __schema__.instances
WHERE parent_id = :parent_id
  AND (:after_id::bigint IS NULL OR id > :after_id)
ORDER BY id
LIMIT :limit;

-- name: inbox_page
-- A page of an instance's pending signals in arrival order: ids above :after_id (NULL: from
-- the first), at most :limit, through the (instance_id, id) inbox index.
SELECT id, name, payload, received_at
FROM __schema__.signals
WHERE instance_id = :instance_id
  AND (:after_id::bigint IS NULL OR id > :after_id)
ORDER BY id
LIMIT :limit;

-- name: nodes_page
-- A page of the nodes alive at :now (NULL: the database's now) in id order, ids above
-- :after_id (NULL: from the first), at most :limit, through the primary key.
SELECT id, name, host, pid, queues, workflows, version, started_at, last_seen,
       coalesce(:now::timestamptz, now()) - last_seen AS silent_for
FROM __schema__.nodes
WHERE expires_at >= coalesce(:now::timestamptz, now())
  AND (:after_id::text IS NULL OR id > :after_id)
ORDER BY id
LIMIT :limit;
