-- Signals: delivery, the inbox, await deadlines.

-- name: signal_deliver
-- One statement. The target row is locked first (FOR UPDATE re-reads the latest version), so
-- delivery serialises with the park transaction: either the park's recheck sees this signal,
-- or this statement sees the row already `awaiting` and flips it. Only a live instance gets
-- the signal; otherwise nothing is stored (the caller raises NoTarget).
-- $2/$3: address by id (key NULL) or by key (id NULL).
WITH now AS (SELECT coalesce($6::timestamptz, now()) AS t),
target AS (
    SELECT id, status, await_names, queue
    FROM __schema__.instances
    WHERE workflow = $1
      AND (($2::bigint IS NOT NULL AND id = $2)
           OR ($2::bigint IS NULL AND key = $3 AND key IS NOT NULL))
      AND status IN ('available', 'executing', 'awaiting', 'waiting')
    FOR UPDATE
),
ins AS (
    INSERT INTO __schema__.signals (instance_id, name, payload, received_at, trace_context)
    SELECT target.id, $4, $5::jsonb, now.t, $8::text FROM target, now
    RETURNING id, instance_id
),
flip AS (
    UPDATE __schema__.instances i
    SET status = 'available', run_at = now.t, timed_out = false, updated_at = now.t
    FROM target, now
    WHERE i.id = target.id AND target.status = 'awaiting' AND $4 = ANY (target.await_names)
    RETURNING i.id, i.queue
)
SELECT ins.id AS signal_id, ins.instance_id,
       (SELECT count(*) FROM flip) > 0 AS woke,
       (SELECT pg_notify($7, 'q:' || flip.queue) FROM flip) AS notified
FROM ins;

-- name: inbox_load
-- The pending signals of a claimed batch, in arrival order (one round trip per batch).
SELECT id, instance_id, name, payload, received_at, trace_context
FROM __schema__.signals
WHERE instance_id = ANY ($1::bigint[])
ORDER BY instance_id, id;

-- name: await_expire
-- Wake awaiting instances whose deadline passed: a wake, not a failure (attempt untouched).
-- Bounded, ordered and SKIP LOCKED so reapers on many nodes never block one another.
WITH now AS (SELECT coalesce($1::timestamptz, now()) AS t),
due AS (
    SELECT id FROM __schema__.instances, now
    WHERE status = 'awaiting' AND await_deadline <= now.t
    ORDER BY await_deadline, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
woke AS (
    UPDATE __schema__.instances i
    SET status = 'available', timed_out = true, run_at = now.t, updated_at = now.t
    FROM due, now
    WHERE i.id = due.id
    RETURNING i.id, i.workflow, i.step, i.queue, i.key
),
notified AS (
    SELECT pg_notify($3, 'q:' || q.queue) FROM (SELECT DISTINCT queue FROM woke) q
)
SELECT woke.*, (SELECT count(*) FROM notified) AS notified FROM woke;
