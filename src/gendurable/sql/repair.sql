-- Operator repairs (`gendurable retry`).

-- name: instance_retry
-- A failed instance back to its failing step with attempt 0, due now. Always one row:
-- `retried` is set when it went back; otherwise `status` (NULL: no such row) and `holder`
-- say why not. `holder` is the live instance that took its key since it failed: the row is
-- then left alone (the unique key index would refuse it anyway; this names the holder).
-- A child goes back only while its parent still waits for that spawn, and the parent's
-- pending count rises in the same statement. Locks: the parent and the instance, in id order
-- (a parent's id is below its children's), the order of every writer that ends an instance
-- or counts its parent (cancel, group commit, cascade, reaper): a retry holding the child
-- while it waited for the parent would deadlock with a cancel of that child, which holds
-- the parent and waits for the child. As in `instance_cancel`, the ids are computed first
-- and the rows locked by a scan of `instances` alone; what the statement reads of both rows
-- comes from the versions it locked.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
locked AS (
    SELECT i.id, i.workflow, i.key, i.parent_id, i.status, i.children_from
    FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT ARRAY[t.id, t.parent_id] FROM __schema__.instances t
                       WHERE t.id = :id)::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i
),
target AS (
    SELECT l.id, l.workflow, l.key, l.parent_id, l.status FROM locked l WHERE l.id = :id
),
holder AS (
    SELECT j.id FROM __schema__.instances j, target t
    WHERE t.status = 'failed' AND t.key IS NOT NULL AND j.workflow = t.workflow
      AND j.key = t.key AND j.id <> t.id AND j.status = ANY (j.scope)
    ORDER BY j.id
    LIMIT 1
),
parent AS (
    SELECT p.id, p.status = 'waiting' AND t.id >= coalesce(p.children_from, 0) AS waits
    FROM locked p JOIN target t ON p.id = t.parent_id
    WHERE t.status = 'failed'
),
upd AS (
    UPDATE __schema__.instances i
    SET status = 'available', attempt = 0, run_at = now.t, error = NULL, finished_at = NULL,
        locked_by = NULL, locked_until = NULL, timed_out = false, throttled = false,
        updated_at = now.t
    FROM target t, now
    WHERE i.id = t.id AND t.status = 'failed'
      AND NOT EXISTS (SELECT 1 FROM holder)
      AND (t.parent_id IS NULL OR EXISTS (SELECT 1 FROM parent WHERE parent.waits))
    RETURNING i.id, i.step, i.queue
),
reparent AS (
    UPDATE __schema__.instances p
    SET pending_children = p.pending_children + 1, updated_at = now.t
    FROM upd, target t, now
    WHERE p.id = t.parent_id
)
SELECT (SELECT status::text FROM target) AS status,
       (SELECT id FROM holder) AS holder,
       (SELECT parent_id FROM target) AS parent_id,
       (SELECT id FROM upd) AS retried,
       (SELECT step FROM upd) AS step,
       (SELECT pg_notify(__channel__, 'q:' || queue) FROM upd) AS notified;
