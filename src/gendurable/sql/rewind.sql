-- Rewind (`gendurable retry KEY --step S [--state JSON]`, the dashboard's instance page).

-- name: instance_rewind
-- A failed or cancelled instance restarted at :step, due now, with attempt 0: with its
-- stored state, or :state written by workflow version :state_version. :max_attempts,
-- :rate_limit, :rate_partition and :weight are what an entry into the step takes, as a goto
-- would write them. Always one row, as `instance_retry`'s: `rewound` is set when it went back;
-- otherwise `status` (NULL: no such row) and `holder` say why not. Refused while another
-- live instance holds its key, and for a child unless its parent still waits for that
-- spawn (the parent's pending count then rises, as for a retry). Its cancelled
-- descendants stay cancelled: back at the step it stopped at it keeps that step's
-- children (ctx.children), moved to another step it has none, as after a goto. Locks: the
-- parent and the instance, in id order, exactly as `instance_retry` takes them.
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
    WHERE t.status IN ('failed', 'cancelled') AND t.key IS NOT NULL
      AND j.workflow = t.workflow AND j.key = t.key AND j.id <> t.id
      AND j.status = ANY (j.scope)
    ORDER BY j.id
    LIMIT 1
),
parent AS (
    SELECT p.id, p.status = 'waiting' AND t.id >= coalesce(p.children_from, 0) AS waits
    FROM locked p JOIN target t ON p.id = t.parent_id
    WHERE t.status IN ('failed', 'cancelled')
),
upd AS (
    UPDATE __schema__.instances i
    SET status = 'available', step = :step, state = coalesce(:state::jsonb, i.state),
        state_version = CASE WHEN :state::jsonb IS NULL THEN i.state_version
                             ELSE :state_version::int END,
        attempt = 0, max_attempts = :max_attempts, run_at = now.t, result = NULL, error = NULL,
        finished_at = NULL, locked_by = NULL, locked_until = NULL, timed_out = false,
        throttled = false, await_names = NULL, await_deadline = NULL, await_seen = 0,
        pending_children = 0,
        children_from = CASE WHEN i.step = :step THEN i.children_from END,
        rate_limit = :rate_limit, rate_partition = :rate_partition, weight = :weight,
        updated_at = now.t
    FROM target t, now
    WHERE i.id = t.id AND t.status IN ('failed', 'cancelled')
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
       (SELECT id FROM upd) AS rewound,
       (SELECT step FROM upd) AS step,
       (SELECT pg_notify(__channel__, 'q:' || queue) FROM upd) AS notified;
