-- Signals: delivery, the inbox, await deadlines.

-- name: signal_deliver
-- One statement. The target row is locked first (FOR UPDATE re-reads the latest version), so
-- delivery serialises with the park transaction: either the park's recheck sees this signal,
-- or this statement sees the row already `awaiting` and flips it. Only a live instance gets
-- the signal; otherwise nothing is stored (the caller raises NoTarget).
-- Addressed by :id (:key NULL) or by :key (:id NULL).
-- With :locked_by (a scheduler of this process with a free slot on queue :queue), a woken
-- instance of that queue is claimed by it at once for :lease, and comes back with its
-- inbox, instead of being announced and claimed: unless it needs the claim's checks (a
-- concurrency key, a rate limit) or its children (a spawn's `then` step), or its queue is
-- paused (`queue_paused`, asked only for such a wake).
-- With an :idempotency_key, a signal this key already stored for the same instance (the
-- live one addressed, else the latest the address names) is returned instead (`duplicate`,
-- with `same`: whether it had this name and payload), and nothing is stored or woken: the
-- key outlives the signal in `signal_keys`. Two sends of one key to a live instance queue
-- on its row lock; the second one's snapshot is older than the first's commit, so it may
-- miss that key and insert again: the primary key of `signal_keys` then refuses it (a
-- unique violation, nothing stored) and the store runs it again, to find the key.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
target AS (
    SELECT id, status, await_names, queue, concurrency_key, rate_limit, children_from
    FROM __schema__.instances
    WHERE workflow = :workflow
      AND ((:id::bigint IS NOT NULL AND id = :id)
           OR (:id::bigint IS NULL AND key = :key AND key IS NOT NULL))
      AND status IN __live__
    FOR UPDATE
),
prior AS (
    SELECT k.signal_id, k.instance_id,
           (k.name = :name
            AND k.payload_md5 = md5(coalesce(:payload::jsonb::text, ''))::uuid) AS same
    FROM __schema__.signal_keys k
    JOIN __schema__.instances i ON i.id = k.instance_id
    WHERE :idempotency_key::text IS NOT NULL AND k.idempotency_key = :idempotency_key
      AND i.workflow = :workflow
      AND ((:id::bigint IS NOT NULL AND i.id = :id)
           OR (:id::bigint IS NULL AND i.key = :key AND i.key IS NOT NULL))
      AND (i.id IN (SELECT id FROM target) OR NOT EXISTS (SELECT 1 FROM target))
    ORDER BY i.id DESC
    LIMIT 1
),
ins AS (
    INSERT INTO __schema__.signals (instance_id, name, payload, received_at, trace_context)
    SELECT target.id, :name, :payload::jsonb, now.t, :trace_context::text FROM target, now
    WHERE NOT EXISTS (SELECT 1 FROM prior)
    RETURNING id, instance_id, received_at
),
keyed AS (
    INSERT INTO __schema__.signal_keys (instance_id, idempotency_key, signal_id, name,
                                        payload_md5)
    SELECT ins.instance_id, :idempotency_key, ins.id, :name,
           md5(coalesce(:payload::jsonb::text, ''))::uuid
    FROM ins
    WHERE :idempotency_key::text IS NOT NULL
),
mode AS (
    SELECT CASE WHEN :locked_by::text IS NOT NULL AND target.queue = :queue
                     AND target.concurrency_key IS NULL AND target.rate_limit IS NULL
                     AND target.children_from IS NULL AND target.status = 'awaiting'
                     AND :name = ANY (target.await_names) AND EXISTS (SELECT 1 FROM ins)
                THEN NOT __schema__.queue_paused(target.queue)
                ELSE false END AS local
    FROM target
),
flip AS (
    UPDATE __schema__.instances i
    SET status = CASE WHEN mode.local THEN 'executing'::__schema__.status
                      ELSE 'available'::__schema__.status END,
        locked_by = CASE WHEN mode.local THEN :locked_by::text END,
        locked_until = CASE WHEN mode.local THEN now.t + :lease::interval END,
        run_at = now.t, timed_out = false, updated_at = now.t
    FROM target, now, mode, ins
    WHERE i.id = target.id AND target.status = 'awaiting' AND :name = ANY (target.await_names)
    RETURNING i.id, i.workflow, i.step, i.state, i.attempt, i.priority, i.key, i.queue,
              i.timed_out, i.await_seen, i.children_from, i.rate_limit, i.rate_partition,
              i.weight, i.trace_context, 0.0::float8 AS waited, mode.local AS claimed,
              i.state_version
),
inbox AS (
    SELECT s.id, s.name, s.payload, s.received_at, s.trace_context
    FROM __schema__.signals s, flip
    WHERE flip.claimed AND s.instance_id = flip.id
    UNION ALL
    SELECT ins.id, :name, :payload::jsonb, ins.received_at, :trace_context::text
    FROM ins, flip WHERE flip.claimed
)
-- The woken instance's columns come last (`rows.Delivery` builds them into its `woken`).
SELECT coalesce(ins.id, prior.signal_id) AS signal_id,
       coalesce(ins.instance_id, prior.instance_id) AS instance_id,
       prior.signal_id IS NOT NULL AS duplicate, coalesce(prior.same, true) AS same,
       (SELECT count(*) FROM flip) > 0 AS woke,
       coalesce((SELECT claimed FROM flip), false) AS claimed,
       (SELECT pg_notify(__channel__, 'q:' || flip.queue) FROM flip WHERE NOT flip.claimed)
           AS notified,
       (SELECT array_agg(id ORDER BY id) FROM inbox) AS inbox_ids,
       (SELECT array_agg(name ORDER BY id) FROM inbox) AS inbox_names,
       (SELECT array_agg(payload ORDER BY id) FROM inbox) AS inbox_payloads,
       (SELECT array_agg(received_at ORDER BY id) FROM inbox) AS inbox_received,
       (SELECT array_agg(trace_context ORDER BY id) FROM inbox) AS inbox_traces,
       flip.id, flip.workflow, flip.step, flip.state, flip.attempt, flip.priority, flip.key,
       flip.queue, flip.timed_out, flip.await_seen, flip.children_from, flip.rate_limit,
       flip.rate_partition, flip.weight, flip.trace_context, flip.waited, flip.state_version
FROM (SELECT 1) one
LEFT JOIN ins ON true
LEFT JOIN prior ON true
LEFT JOIN flip ON true
WHERE ins.id IS NOT NULL OR prior.signal_id IS NOT NULL;

-- name: inbox_load
-- The pending signals of a claimed batch, in arrival order (one round trip per batch).
SELECT id, instance_id, name, payload, received_at, trace_context
FROM __schema__.signals
WHERE instance_id = ANY (:ids::bigint[])
ORDER BY instance_id, id;

-- name: await_expire
-- Wake awaiting instances whose deadline passed: a wake, not a failure (attempt untouched).
-- Bounded, ordered and SKIP LOCKED so reapers on many nodes never block one another.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
due AS (
    SELECT id FROM __schema__.instances, now
    WHERE status = 'awaiting' AND await_deadline <= now.t
    ORDER BY await_deadline, id
    LIMIT :limit
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
    SELECT pg_notify(__channel__, 'q:' || q.queue) FROM (SELECT DISTINCT queue FROM woke) q
)
SELECT woke.*, (SELECT count(*) FROM notified) AS notified FROM woke;
