-- Bulk operations: `gendurable retry --workflow ...`, `gendurable cancel --workflow ...` and
-- the dashboard's actions on a filtered list. A run reads the matching ids a page at a time
-- (`instances_matching`, which locks nothing), then acts on each page with one short
-- statement (`instances_retry_many`, `instances_cancel_many`) that judges every row on the
-- version it locked, by the rules of the single-row statement: no page is one long lock, and
-- a run stopped anywhere can be started again (it finds only what still matches).

-- name: instances_matching
-- The next :limit ids above :after_id, ascending, of the instances matching a bulk filter:
-- :statuses (required), and each optional filter (NULL: any): :workflow, :step, a text the
-- error's type or message contains (:error_contains, any case), ended within :since before
-- :now, :key_prefix, :queue. Keyset on the primary key: each page reads on from where the
-- last one stopped.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
SELECT i.id
FROM __schema__.instances i, now
WHERE i.status = ANY (:statuses::text[]::__schema__.status[])
  AND (:workflow::text IS NULL OR i.workflow = :workflow)
  AND (:step::text IS NULL OR i.step = :step)
  AND (:error_contains::text IS NULL
       OR strpos(lower(concat_ws(': ', i.error->>'type', i.error->>'message')),
                 lower(:error_contains)) > 0)
  AND (:since::interval IS NULL OR i.finished_at >= now.t - :since::interval)
  AND (:key_prefix::text IS NULL OR starts_with(i.key, :key_prefix))
  AND (:queue::text IS NULL OR i.queue = :queue)
  AND i.id > :after_id
ORDER BY i.id
LIMIT :limit;

-- name: instances_matching_count
-- How many instances match the filter of `instances_matching` (same parameters, :limit caps
-- the count; NULL: no cap): a dry run's answer and the dashboard's confirmation. One pass over
-- the matching rows; it locks nothing.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
SELECT count(*) AS n
FROM (
    SELECT 1
    FROM __schema__.instances i, now
    WHERE i.status = ANY (:statuses::text[]::__schema__.status[])
      AND (:workflow::text IS NULL OR i.workflow = :workflow)
      AND (:step::text IS NULL OR i.step = :step)
      AND (:error_contains::text IS NULL
           OR strpos(lower(concat_ws(': ', i.error->>'type', i.error->>'message')),
                     lower(:error_contains)) > 0)
      AND (:since::interval IS NULL OR i.finished_at >= now.t - :since::interval)
      AND (:key_prefix::text IS NULL OR starts_with(i.key, :key_prefix))
      AND (:queue::text IS NULL OR i.queue = :queue)
    LIMIT :limit
) m;

-- name: instances_retry_many
-- `instance_retry` for the ids :ids at once: one row per distinct id, its `verdict` one of
-- 'retried', 'not_failed' (its `status` now), 'key_held' (by `holder`), 'parent_not_waiting',
-- 'busy' (another transaction holds the row or its parent: nothing was waited for; retry it
-- on its own) or 'gone'. The rules are the single statement's: a failed row goes back to its
-- failing step with attempt 0, due now, unless a live instance holds its key, and a child
-- only while its parent still waits for that spawn (whose pending count rises by the
-- children that went back). Among rows of one key that could all go back, the lowest id
-- does and holds the key for the others: what retrying them one by one in id order does.
-- Locks: the rows and their parents, in id order, with SKIP LOCKED (their ids computed
-- first, locked by a scan of `instances` alone: see `instance_cancel`): a page never waits
-- for a lock, so it closes no cycle; a row whose lock or whose parent's lock it did not get
-- is left as it was. What it judges comes from the versions it locked.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
asked AS (
    SELECT DISTINCT a.id FROM unnest(:ids::bigint[]) AS a(id)
),
locked AS (
    SELECT i.id, i.workflow, i.key, i.parent_id, i.status, i.children_from
    FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT array_agg(x.id) FROM (
                           SELECT t.id FROM __schema__.instances t
                           WHERE t.id = ANY (:ids::bigint[])
                           UNION
                           SELECT t.parent_id FROM __schema__.instances t
                           WHERE t.id = ANY (:ids::bigint[]) AND t.parent_id IS NOT NULL) x
                      )::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i SKIP LOCKED
),
judged AS (
    SELECT t.id, t.workflow, t.key, t.parent_id, t.status::text AS status, h.holder,
           CASE WHEN t.status <> 'failed' THEN 'not_failed'
                WHEN t.parent_id IS NOT NULL AND p.id IS NULL
                     AND EXISTS (SELECT 1 FROM __schema__.instances x WHERE x.id = t.parent_id)
                THEN 'busy'
                WHEN h.holder IS NOT NULL THEN 'key_held'
                WHEN t.parent_id IS NOT NULL
                     AND NOT coalesce(p.status = 'waiting'
                                      AND t.id >= coalesce(p.children_from, 0), false)
                THEN 'parent_not_waiting'
                ELSE 'retried' END AS verdict
    FROM locked t
    JOIN asked a ON a.id = t.id
    LEFT JOIN locked p ON p.id = t.parent_id
    LEFT JOIN LATERAL (
        SELECT j.id AS holder FROM __schema__.instances j
        WHERE t.key IS NOT NULL AND j.workflow = t.workflow AND j.key = t.key
          AND j.id <> t.id AND j.status = ANY (j.scope)
        ORDER BY j.id
        LIMIT 1
    ) h ON true
),
-- Rows of one key that could all go back: the first takes the key, the others find it held.
ranked AS (
    SELECT j.id, j.workflow, j.key, j.parent_id, j.status,
           CASE WHEN j.verdict = 'retried' AND j.key IS NOT NULL
                THEN min(j.id) OVER (PARTITION BY j.verdict, j.workflow, j.key) END AS first,
           j.holder, j.verdict
    FROM judged j
),
final AS (
    SELECT r.id, r.parent_id, r.status,
           CASE WHEN r.first < r.id THEN 'key_held' ELSE r.verdict END AS verdict,
           CASE WHEN r.first < r.id THEN r.first ELSE r.holder END AS holder
    FROM ranked r
),
upd AS (
    UPDATE __schema__.instances i
    SET status = 'available', attempt = 0, run_at = now.t, error = NULL, finished_at = NULL,
        locked_by = NULL, locked_until = NULL, timed_out = false, throttled = false,
        updated_at = now.t
    FROM final f, now
    WHERE i.id = f.id AND f.verdict = 'retried'
    RETURNING i.id, i.queue, f.parent_id
),
-- A parent is never among the rows going back (it waits; they failed): each row is
-- updated once.
reparent AS (
    UPDATE __schema__.instances p
    SET pending_children = p.pending_children + c.n, updated_at = now.t
    FROM (SELECT upd.parent_id, count(*)::int AS n FROM upd
          WHERE upd.parent_id IS NOT NULL GROUP BY upd.parent_id) c, now
    WHERE p.id = c.parent_id
),
notified AS (
    SELECT count(pg_notify(__channel__, 'q:' || q.queue)) AS n
    FROM (SELECT DISTINCT queue FROM upd) q
)
SELECT a.id,
       CASE WHEN f.id IS NOT NULL THEN f.verdict
            WHEN EXISTS (SELECT 1 FROM __schema__.instances x WHERE x.id = a.id) THEN 'busy'
            ELSE 'gone' END AS verdict,
       f.status, f.holder, f.parent_id, (SELECT n FROM notified) AS notified
FROM asked a
LEFT JOIN final f ON f.id = a.id
ORDER BY a.id;

-- name: instances_cancel_many
-- `instance_cancel` for the ids :ids at once: one row per distinct id, its `verdict` one of
-- 'cancelled', 'not_live' (its `status` now), 'busy' (another transaction holds the row or
-- its parent: nothing was waited for; cancel it on its own) or 'gone'; `cascaded` the live
-- descendants the page cancelled with them (`instances_ended`, called once for the page).
-- Locks: the rows and their parents (which the ending counts down), in id order, with SKIP
-- LOCKED, as in `instances_retry_many`; the cascade then locks descendants in id order, as
-- a single cancel's does. The status is judged on the version locked.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
asked AS (
    SELECT DISTINCT a.id FROM unnest(:ids::bigint[]) AS a(id)
),
locked AS (
    SELECT i.id, i.parent_id, i.status
    FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT array_agg(x.id) FROM (
                           SELECT t.id FROM __schema__.instances t
                           WHERE t.id = ANY (:ids::bigint[])
                           UNION
                           SELECT t.parent_id FROM __schema__.instances t
                           WHERE t.id = ANY (:ids::bigint[]) AND t.parent_id IS NOT NULL) x
                      )::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i SKIP LOCKED
),
judged AS (
    SELECT t.id, t.status::text AS status,
           CASE WHEN t.status NOT IN __live__
                THEN 'not_live'
                WHEN t.parent_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM locked p WHERE p.id = t.parent_id)
                     AND EXISTS (SELECT 1 FROM __schema__.instances x WHERE x.id = t.parent_id)
                THEN 'busy'
                ELSE 'cancelled' END AS verdict
    FROM locked t
    JOIN asked a ON a.id = t.id
),
fin AS (
    UPDATE __schema__.instances i
    SET status = 'cancelled', locked_by = NULL, locked_until = NULL, throttled = false,
        await_names = NULL, await_deadline = NULL, finished_at = now.t, updated_at = now.t
    FROM judged j, now
    WHERE i.id = j.id AND j.verdict = 'cancelled'
    RETURNING i.id
),
ended AS (
    SELECT __schema__.instances_ended(array_agg(fin.id), min(now.t), __channel__) AS cascaded
    FROM fin, now
    HAVING count(*) > 0
)
SELECT a.id,
       CASE WHEN j.id IS NOT NULL THEN j.verdict
            WHEN EXISTS (SELECT 1 FROM __schema__.instances x WHERE x.id = a.id) THEN 'busy'
            ELSE 'gone' END AS verdict,
       j.status, coalesce((SELECT cardinality(cascaded) FROM ended), 0) AS cascaded
FROM asked a
LEFT JOIN judged j ON j.id = a.id
ORDER BY a.id;
