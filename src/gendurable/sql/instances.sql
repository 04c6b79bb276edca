-- Instances: start, claim, outcome commits, lookups.
-- Every statement takes `now` as a nullable parameter: NULL lets PostgreSQL own time
-- (production); the manual clock passes its own time (tests).

-- name: instance_insert
-- One start. ON CONFLICT DO UPDATE (a no-op assignment) rather than DO NOTHING so that the
-- existing row is returned even when it committed after this statement's snapshot; `created`
-- tells a fresh insert (xmax = 0) from the live instance that already held the key.
WITH now AS (SELECT coalesce($12::timestamptz, now()) AS t),
ins AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, key, scope,
        concurrency_key, parent_id, inserted_at, updated_at, trace_context)
    SELECT $1, $2, $3, $4::jsonb, $5, $6,
           coalesce($7::timestamptz, now.t + coalesce($8::interval, interval '0')),
           $9, $10::text[]::__schema__.status[], $11, NULL, now.t, now.t, $14::text
    FROM now
    ON CONFLICT (workflow, key) WHERE key IS NOT NULL AND status = ANY (scope)
    DO UPDATE SET key = excluded.key
    RETURNING i.id, i.key, i.queue, i.run_at, (i.xmax = 0) AS created
)
SELECT ins.id, ins.key, ins.created,
       CASE WHEN ins.created AND ins.run_at <= now.t
            THEN pg_notify($13, 'q:' || ins.queue) END AS notified
FROM ins, now;

-- name: instance_insert_many
-- A batch of starts as parallel arrays. Rows go in ordered by (workflow, key) in the C
-- collation: two nodes racing over the same new keys take the unique-index locks in the same
-- order, so they cannot deadlock. Keys must be unique within the batch (the caller dedupes).
WITH now AS (SELECT coalesce($11::timestamptz, now()) AS t),
rows AS (
    SELECT u.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::int[], $6::int[],
                $7::timestamptz[], $8::interval[], $9::text[], $10::text[])
         WITH ORDINALITY AS u(workflow, queue, step, state, max_attempts, priority,
                              run_at, delay, key, concurrency_key, ord)
),
ins AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, key,
        concurrency_key, inserted_at, updated_at, trace_context)
    SELECT r.workflow, r.queue, r.step, r.state, r.max_attempts, r.priority,
           coalesce(r.run_at, now.t + coalesce(r.delay, interval '0')),
           r.key, r.concurrency_key, now.t, now.t, $13::text
    FROM rows r, now
    ORDER BY r.workflow COLLATE "C", r.key COLLATE "C", r.ord
    ON CONFLICT (workflow, key) WHERE key IS NOT NULL AND status = ANY (scope)
    DO UPDATE SET key = excluded.key
    RETURNING i.id, i.workflow, i.key, i.queue, i.run_at, (i.xmax = 0) AS created
),
woken AS (
    SELECT pg_notify($12, 'q:' || q.queue)
    FROM (SELECT DISTINCT ins.queue FROM ins, now
          WHERE ins.created AND ins.run_at <= now.t) q
)
SELECT ins.id, ins.workflow, ins.key, ins.created, (SELECT count(*) FROM woken) AS notified
FROM ins
ORDER BY ins.id;

-- name: instance_claim
-- The pick: the most urgent due rows of a queue, skipping rows other claims hold. Only
-- (workflow, step) pairs this deploy knows are taken: rows of other deploys stay untouched.
-- Each claim lasts its workflow's lease ($4 lists them, parallel to the known pairs).
WITH now AS (SELECT coalesce($5::timestamptz, now()) AS t),
known AS (
    SELECT * FROM unnest($6::text[], $7::text[], $4::interval[]) AS k(workflow, step, lease)
),
picked AS (
    SELECT i.id, k.lease
    FROM __schema__.instances i
    JOIN known k ON k.workflow = i.workflow AND k.step = i.step, now
    WHERE i.status = 'available' AND i.queue = $1 AND i.run_at <= now.t
    ORDER BY i.priority DESC, i.run_at, i.id
    LIMIT $2
    FOR UPDATE OF i SKIP LOCKED
)
UPDATE __schema__.instances i
SET status = 'executing', locked_by = $3, locked_until = now.t + picked.lease,
    updated_at = now.t
FROM picked, now
WHERE i.id = picked.id
RETURNING i.id, i.workflow, i.step, i.state, i.attempt, i.priority, i.key, i.queue,
          i.timed_out, i.await_seen, i.trace_context,
          extract(epoch FROM now.t - i.run_at)::float8 AS waited;

-- name: outcome_park
-- First statement of the park transaction: enter (or re-enter) an awaiting step. Takes the
-- row lock that signal delivery also takes; `park_recheck` then looks at the inbox again in
-- a fresh snapshot under that lock, so a signal racing the park is never stranded.
-- $6 is the await timeout (NULL: none); $9 true keeps the current deadline (reawait).
WITH now AS (SELECT coalesce($10::timestamptz, now()) AS t),
upd AS (
    UPDATE __schema__.instances i
    SET step = $3, state = $4::jsonb, status = 'awaiting', attempt = 0,
        await_names = $5::text[],
        await_deadline = CASE WHEN $9::boolean THEN i.await_deadline
                              ELSE now.t + $6::interval END,
        await_seen = $7, timed_out = false,
        locked_by = NULL, locked_until = NULL, updated_at = now.t
    FROM now
    WHERE i.id = $1 AND i.locked_by = $2 AND i.status = 'executing'
    RETURNING i.id
),
consumed AS (
    DELETE FROM __schema__.signals s USING upd
    WHERE s.instance_id = upd.id AND s.id = ANY ($8::bigint[])
)
SELECT id FROM upd;

-- name: park_recheck
-- Second statement of the park transaction (fresh snapshot, row lock held): wake at once
-- when a matching signal newer than the ones already seen is in the inbox, or when the
-- deadline has already passed. The wake is announced like a delivery's.
WITH now AS (SELECT coalesce($2::timestamptz, now()) AS t),
woke AS (
UPDATE __schema__.instances i
SET status = 'available', run_at = now.t, updated_at = now.t,
    timed_out = NOT EXISTS (
        SELECT 1 FROM __schema__.signals s
        WHERE s.instance_id = i.id AND s.name = ANY (i.await_names) AND s.id > i.await_seen)
FROM now
WHERE i.id = $1 AND i.status = 'awaiting'
  AND (EXISTS (SELECT 1 FROM __schema__.signals s
               WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)
                 AND s.id > i.await_seen)
       OR i.await_deadline <= now.t)
RETURNING i.id, i.queue, i.timed_out
)
SELECT id, queue, timed_out, pg_notify($3, 'q:' || queue) AS notified FROM woke;

-- name: instance_release
-- Give a claim back untouched (drain, long chains): available again at once, and announced
-- so that another node takes it now rather than at its next poll.
WITH now AS (SELECT coalesce($3::timestamptz, now()) AS t),
released AS (
    UPDATE __schema__.instances i
    SET status = 'available', locked_by = NULL, locked_until = NULL, run_at = now.t,
        updated_at = now.t
    FROM now
    WHERE i.id = $1 AND i.locked_by = $2 AND i.status = 'executing'
    RETURNING i.id, i.queue
)
SELECT id, pg_notify($4, 'q:' || queue) AS notified FROM released;

-- name: instance_cancel
-- Cancel a live instance (an executing one too: its worker's late commit is then stale).
-- The UPDATE rechecks the status on the row's latest version once it holds the lock, so an
-- instance that ended meanwhile is left alone.
WITH now AS (SELECT coalesce($2::timestamptz, now()) AS t),
fin AS (
    UPDATE __schema__.instances i
    SET status = 'cancelled', locked_by = NULL, locked_until = NULL,
        await_names = NULL, await_deadline = NULL, finished_at = now.t, updated_at = now.t
    FROM now
    WHERE i.id = $1 AND i.status IN ('available', 'executing', 'awaiting', 'waiting')
    RETURNING i.id, i.parent_id
),
purged AS (
    DELETE FROM __schema__.signals s USING fin WHERE s.instance_id = fin.id
),
parent AS (
    UPDATE __schema__.instances p
    SET pending_children = p.pending_children - 1,
        status = CASE WHEN p.status = 'waiting' AND p.pending_children = 1
                      THEN 'available'::__schema__.status ELSE p.status END,
        updated_at = now.t
    FROM fin, now
    WHERE p.id = fin.parent_id
)
SELECT fin.id, pg_notify($3, 't:' || fin.id) AS notified FROM fin;

-- name: instance_by_id
SELECT id, workflow, key, status::text, step, attempt, state, result, error, queue,
       priority, run_at, locked_by, locked_until, await_names, await_deadline,
       pending_children, inserted_at, updated_at, finished_at
FROM __schema__.instances
WHERE id = $1;

-- name: instance_by_key
-- The live instance holding the key, else the most recent one that had it.
SELECT id, workflow, key, status::text, step, attempt, state, result, error, queue,
       priority, run_at, locked_by, locked_until, await_names, await_deadline,
       pending_children, inserted_at, updated_at, finished_at
FROM __schema__.instances
WHERE workflow = $1 AND key = $2 AND key IS NOT NULL
ORDER BY (status IN ('available', 'executing', 'awaiting', 'waiting')) DESC, id DESC
LIMIT 1;

-- name: instance_status
SELECT status::text, result, error FROM __schema__.instances WHERE id = $1;

-- name: instances_unknown
-- Due rows of a queue whose (workflow, step) this deploy does not know: left untouched by
-- the claim, and counted here so the engine can report them.
SELECT workflow, step, count(*) AS n, min(id) AS first_id
FROM __schema__.instances
WHERE status = 'available' AND queue = $1 AND run_at <= coalesce($4::timestamptz, now())
  AND (workflow, step) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))
GROUP BY workflow, step
ORDER BY workflow, step;

-- name: outcome_batch
-- Group commit: the goto / continue / retry / finish outcomes of many steps in one statement,
-- each row guarded by ownership exactly as in its single-row statement. Rows are locked in id
-- order first, so concurrent batches (and any other multi-row writer) cannot deadlock.
-- kind: 'goto' | 'continue' | 'retry' | 'finish'. Consumed signals ride in as the parallel
-- arrays $13 (instance ids) and $14 (signal ids).
WITH now AS (SELECT coalesce($1::timestamptz, now()) AS t),
b AS (
    SELECT *
    FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[],
                $7::interval[], $8::text[], $9::jsonb[], $10::jsonb[], $11::interval[])
         AS b(id, locked_by, kind, step, state, delay, status, result, error, lease)
),
locked AS (
    SELECT i.id
    FROM __schema__.instances i JOIN b ON b.id = i.id
    WHERE i.locked_by = b.locked_by AND i.status = 'executing'
    ORDER BY i.id
    FOR UPDATE OF i
),
upd AS (
    UPDATE __schema__.instances i
    SET step = CASE WHEN b.kind IN ('goto', 'continue') THEN b.step ELSE i.step END,
        state = coalesce(b.state, i.state),
        status = CASE b.kind WHEN 'continue' THEN 'executing'::__schema__.status
                             WHEN 'finish' THEN b.status::__schema__.status
                             ELSE 'available'::__schema__.status END,
        attempt = CASE b.kind WHEN 'retry' THEN i.attempt + 1
                              WHEN 'finish' THEN i.attempt ELSE 0 END,
        run_at = CASE WHEN b.kind IN ('goto', 'retry')
                      THEN now.t + coalesce(b.delay, interval '0') ELSE i.run_at END,
        locked_by = CASE WHEN b.kind = 'continue' THEN i.locked_by END,
        locked_until = CASE WHEN b.kind = 'continue' THEN now.t + b.lease END,
        timed_out = CASE WHEN b.kind IN ('goto', 'continue') THEN false ELSE i.timed_out END,
        await_seen = CASE WHEN b.kind IN ('goto', 'continue') THEN 0 ELSE i.await_seen END,
        await_names = CASE WHEN b.kind = 'retry' THEN i.await_names END,
        await_deadline = CASE WHEN b.kind = 'retry' THEN i.await_deadline END,
        result = CASE WHEN b.kind = 'finish' THEN b.result ELSE i.result END,
        error = CASE WHEN b.kind IN ('finish', 'retry') THEN b.error ELSE i.error END,
        finished_at = CASE WHEN b.kind = 'finish' THEN now.t END,
        updated_at = now.t
    FROM b, now, locked
    WHERE i.id = b.id AND locked.id = i.id
      AND i.locked_by = b.locked_by AND i.status = 'executing'
    RETURNING i.id, i.parent_id, b.kind
),
consumed AS (
    DELETE FROM __schema__.signals s
    USING upd, unnest($13::bigint[], $14::bigint[]) AS c(instance_id, signal_id)
    WHERE upd.kind IN ('goto', 'continue') AND c.instance_id = upd.id
      AND s.id = c.signal_id AND s.instance_id = upd.id
),
purged AS (
    DELETE FROM __schema__.signals s USING upd
    WHERE upd.kind = 'finish' AND s.instance_id = upd.id
),
parent AS (
    UPDATE __schema__.instances p
    SET pending_children = p.pending_children - f.n,
        status = CASE WHEN p.status = 'waiting' AND p.pending_children = f.n
                      THEN 'available'::__schema__.status ELSE p.status END,
        run_at = CASE WHEN p.status = 'waiting' AND p.pending_children = f.n
                      THEN now.t ELSE p.run_at END,
        updated_at = now.t
    FROM (SELECT parent_id, count(*)::int AS n FROM upd
          WHERE kind = 'finish' AND parent_id IS NOT NULL
          GROUP BY parent_id ORDER BY parent_id) f, now
    WHERE p.id = f.parent_id
),
notified AS (
    SELECT pg_notify($12, 't:' || upd.id) FROM upd WHERE upd.kind = 'finish'
)
SELECT upd.id, (SELECT count(*) FROM notified) AS notified FROM upd;
