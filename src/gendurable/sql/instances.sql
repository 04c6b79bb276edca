-- Instances: start, claim, outcome commits, lookups.
-- Every statement takes `now` as a nullable parameter: NULL lets PostgreSQL own time
-- (production); the manual clock passes its own time (tests).

-- name: instance_insert
-- One start with a key (`instance_insert_unkeyed` makes one without). ON CONFLICT DO UPDATE (a no-op assignment) rather than DO NOTHING so that the
-- existing row is returned even when it committed after this statement's snapshot; `created`
-- tells a fresh insert (xmax = 0) from the live instance that already held the key. A single
-- start holds no other lock, so waiting for that row's lock can close no cycle.
-- :rate_limit, :rate_partition and :weight are the start step's; :state_version the
-- workflow's version. With :locked_by (a scheduler of this process that has a free slot),
-- the new row is inserted already claimed by it for :lease and run at once: no claim
-- statement and no notification for it. Unless :queue is paused (`queue_paused`, asked only
-- then): the row then goes in available, unclaimed (`locked_by` NULL tells the caller).
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
local AS (
    SELECT CASE WHEN :locked_by::text IS NULL THEN false
                ELSE NOT __schema__.queue_paused(:queue) END AS claimed
),
ins AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, key, scope,
        concurrency_key, rate_limit, rate_partition, weight, inserted_at, updated_at,
        trace_context, state_version, status, locked_by, locked_until)
    SELECT :workflow, :queue, :step, :state::jsonb, :max_attempts, :priority,
           coalesce(:run_at::timestamptz, now.t + coalesce(:delay::interval, interval '0')),
           :key, :scope::text[]::__schema__.status[], :concurrency_key, :rate_limit,
           :rate_partition, :weight, now.t, now.t, :trace_context::text, :state_version::int,
           CASE WHEN local.claimed THEN 'executing'::__schema__.status
                ELSE 'available'::__schema__.status END,
           CASE WHEN local.claimed THEN :locked_by::text END,
           CASE WHEN local.claimed THEN now.t + :lease::interval END
    FROM now, local
    ON CONFLICT (workflow, key) WHERE key IS NOT NULL AND status = ANY (scope)
    DO UPDATE SET key = excluded.key
    RETURNING i.id, i.key, i.queue, i.run_at, (i.xmax = 0) AS created, i.workflow, i.step,
              i.state, i.attempt, i.priority, i.timed_out, i.await_seen, i.children_from,
              i.rate_limit, i.rate_partition, i.weight, i.trace_context, i.locked_by,
              i.state_version
)
SELECT ins.*, 0.0::float8 AS waited,
       CASE WHEN ins.created AND ins.run_at <= now.t AND ins.locked_by IS NULL
            THEN pg_notify(__channel__, 'q:' || ins.queue) END AS notified
FROM ins, now;

-- name: instance_insert_unkeyed
-- One start without a key, as `instance_insert` makes it (the same columns, the same local
-- claim, the same notification), by a plain insert: no row can conflict with it (the arbiter
-- index holds keyed rows only), and under ON CONFLICT each insert is a speculative one (a
-- lock taken and released, one more WAL record). Always a fresh row: `created` is true.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
local AS (
    SELECT CASE WHEN :locked_by::text IS NULL THEN false
                ELSE NOT __schema__.queue_paused(:queue) END AS claimed
),
ins AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, scope,
        concurrency_key, rate_limit, rate_partition, weight, inserted_at, updated_at,
        trace_context, state_version, status, locked_by, locked_until)
    SELECT :workflow, :queue, :step, :state::jsonb, :max_attempts, :priority,
           coalesce(:run_at::timestamptz, now.t + coalesce(:delay::interval, interval '0')),
           :scope::text[]::__schema__.status[], :concurrency_key, :rate_limit,
           :rate_partition, :weight, now.t, now.t, :trace_context::text, :state_version::int,
           CASE WHEN local.claimed THEN 'executing'::__schema__.status
                ELSE 'available'::__schema__.status END,
           CASE WHEN local.claimed THEN :locked_by::text END,
           CASE WHEN local.claimed THEN now.t + :lease::interval END
    FROM now, local
    RETURNING i.id, i.key, i.queue, i.run_at, true AS created, i.workflow, i.step,
              i.state, i.attempt, i.priority, i.timed_out, i.await_seen, i.children_from,
              i.rate_limit, i.rate_partition, i.weight, i.trace_context, i.locked_by,
              i.state_version
)
SELECT ins.*, 0.0::float8 AS waited,
       CASE WHEN ins.run_at <= now.t AND ins.locked_by IS NULL
            THEN pg_notify(__channel__, 'q:' || ins.queue) END AS notified
FROM ins, now;

-- name: instance_insert_many
-- A batch of starts, or the children of one spawn (:parent_id, NULL for start_many). Each
-- column comes once for the whole batch (:workflow, :queue, ...) unless the rows differ in
-- it: then its array holds a value per row (:workflow_rows, ...; NULL when not sent). A
-- batch of one workflow's starts sends the states and little else per row: every array
-- element costs the client its encoding, and a value sent once is cast once. Every array
-- is text[] (the states JSON text, the numbers, times and intervals in their text form,
-- cast here): asyncpg has a codec of its own for text[] only, and looks up any other array
-- type with a catalog query on each connection's first use. Rows go in ordered by
-- (workflow, key) in the C collation: two writers racing over the same new keys take the
-- unique-index locks in the same order, so they cannot deadlock. ON CONFLICT DO NOTHING
-- takes no row lock on an instance that holds a key already (it is returned by
-- `instances_holding_keys` afterwards): a batch waits only on key locks, never on rows, so
-- it closes no cycle with writers that lock rows (cancel, commits). Keys must be unique
-- within the batch (the caller dedupes). Rows without a key go in by a plain insert:
-- none can conflict (the arbiter covers keyed rows only), and ON CONFLICT would make
-- each a speculative insertion (a lock taken and released, one more WAL record). Unkeyed
-- rows go in in entry order, so their ids ascend in it. `rows` is read by both inserts,
-- each taking only its own rows (NOT MATERIALIZED: each row's state is cast once). A
-- child's `spawn_index` is its position in the spawn. :state_version is the workflow
-- version of each row's state.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
rows AS NOT MATERIALIZED (
    SELECT u.ord, u.state::jsonb AS state,
           CASE WHEN :workflow_rows::text[] IS NULL THEN :workflow::text
                ELSE u.workflow END AS workflow,
           CASE WHEN :queue_rows::text[] IS NULL THEN :queue::text ELSE u.queue END AS queue,
           CASE WHEN :step_rows::text[] IS NULL THEN :step::text ELSE u.step END AS step,
           CASE WHEN :max_attempts_rows::text[] IS NULL THEN :max_attempts::int
                ELSE u.max_attempts::int END AS max_attempts,
           CASE WHEN :priority_rows::text[] IS NULL THEN :priority::int
                ELSE u.priority::int END AS priority,
           CASE WHEN :run_at_rows::text[] IS NULL THEN :run_at::timestamptz
                ELSE u.run_at::timestamptz END AS run_at,
           CASE WHEN :delay_rows::text[] IS NULL THEN :delay::interval
                ELSE u.delay::interval END AS delay,
           CASE WHEN :key_rows::text[] IS NULL THEN :key::text ELSE u.key END AS key,
           CASE WHEN :scope_rows::text[] IS NULL THEN :scope::text[]::__schema__.status[]
                ELSE u.scope::__schema__.status[] END AS scope,
           CASE WHEN :concurrency_key_rows::text[] IS NULL THEN :concurrency_key::text
                ELSE u.concurrency_key END AS concurrency_key,
           CASE WHEN :rate_limit_rows::text[] IS NULL THEN :rate_limit::text
                ELSE u.rate_limit END AS rate_limit,
           CASE WHEN :rate_partition_rows::text[] IS NULL THEN :rate_partition::text
                ELSE u.rate_partition END AS rate_partition,
           CASE WHEN :weight_rows::text[] IS NULL THEN :weight::int
                ELSE u.weight::int END AS weight,
           CASE WHEN :state_version_rows::text[] IS NULL THEN :state_version::int
                ELSE u.state_version::int END AS state_version
    FROM ROWS FROM (unnest(:states::text[]), unnest(:workflow_rows::text[]),
                    unnest(:queue_rows::text[]), unnest(:step_rows::text[]),
                    unnest(:max_attempts_rows::text[]), unnest(:priority_rows::text[]),
                    unnest(:run_at_rows::text[]), unnest(:delay_rows::text[]),
                    unnest(:key_rows::text[]), unnest(:scope_rows::text[]),
                    unnest(:concurrency_key_rows::text[]), unnest(:rate_limit_rows::text[]),
                    unnest(:rate_partition_rows::text[]), unnest(:weight_rows::text[]),
                    unnest(:state_version_rows::text[]))
         WITH ORDINALITY AS u(state, workflow, queue, step, max_attempts, priority, run_at,
                              delay, key, scope, concurrency_key, rate_limit,
                              rate_partition, weight, state_version, ord)
),
keyed AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, key, scope,
        concurrency_key, rate_limit, rate_partition, weight, parent_id, spawn_index,
        inserted_at, updated_at, trace_context, state_version)
    SELECT r.workflow, r.queue, r.step, r.state, r.max_attempts, r.priority,
           coalesce(r.run_at, now.t + coalesce(r.delay, interval '0')),
           r.key, r.scope, r.concurrency_key, r.rate_limit,
           r.rate_partition, r.weight, :parent_id::bigint,
           CASE WHEN :parent_id::bigint IS NOT NULL THEN r.ord::int - 1 END, now.t, now.t,
           :trace_context::text, r.state_version
    FROM rows r, now
    WHERE r.key IS NOT NULL
    ORDER BY r.workflow COLLATE "C", r.key COLLATE "C", r.ord
    ON CONFLICT (workflow, key) WHERE key IS NOT NULL AND status = ANY (scope)
    DO NOTHING
    RETURNING i.id, i.workflow, i.key, i.queue, i.run_at
),
unkeyed AS (
    INSERT INTO __schema__.instances AS i (
        workflow, queue, step, state, max_attempts, priority, run_at, key, scope,
        concurrency_key, rate_limit, rate_partition, weight, parent_id, spawn_index,
        inserted_at, updated_at, trace_context, state_version)
    SELECT r.workflow, r.queue, r.step, r.state, r.max_attempts, r.priority,
           coalesce(r.run_at, now.t + coalesce(r.delay, interval '0')),
           NULL, r.scope, r.concurrency_key, r.rate_limit,
           r.rate_partition, r.weight, :parent_id::bigint,
           CASE WHEN :parent_id::bigint IS NOT NULL THEN r.ord::int - 1 END, now.t, now.t,
           :trace_context::text, r.state_version
    FROM rows r, now
    WHERE r.key IS NULL
    ORDER BY r.ord
    RETURNING i.id, i.workflow, i.key, i.queue, i.run_at
),
ins AS (
    SELECT * FROM keyed
    UNION ALL
    SELECT * FROM unkeyed
),
woken AS (
    SELECT pg_notify(__channel__, 'q:' || q.queue)
    FROM (SELECT DISTINCT ins.queue FROM ins, now WHERE ins.run_at <= now.t) q
)
SELECT ins.id, ins.workflow, ins.key, (SELECT count(*) FROM woken) AS notified
FROM ins
ORDER BY ins.id;

-- name: instances_holding_keys
-- Who holds each of these keys after a batch insert skipped them: the instance in its scope
-- (a fresh snapshot sees one that committed while the insert waited), else the latest one.
SELECT DISTINCT ON (k.workflow, k.key) k.workflow, k.key, i.id
FROM unnest(:workflows::text[], :keys::text[]) AS k(workflow, key)
JOIN __schema__.instances i ON i.workflow = k.workflow AND i.key = k.key
ORDER BY k.workflow, k.key, (i.status = ANY (i.scope)) DESC, i.id DESC;

-- name: instance_claim
-- The pick: the most urgent due rows of a queue, skipping rows other claims hold. Only
-- (workflow, step) pairs this deploy knows are taken: rows of other deploys stay untouched.
-- Each claim lasts its workflow's lease (:leases, parallel to the known pairs :workflows
-- and :steps).
--
-- Concurrency keys: only the most urgent due row of each key in the queue is eligible
-- (found through `instances_concurrency_head`), so a batch takes at most one row per key
-- and a key's backlog never fills the LIMIT ahead of other rows (no head-of-line
-- blocking); a row whose key is executing elsewhere is passed over in the scan, and an
-- advisory lock per key (namespaced by schema) makes two claims running at once pass
-- over each other's keys. The unique index `instances_concurrency_active` is the guarantee
-- itself: a claim whose snapshot predates another's commit fails with a unique violation
-- rather than run a second row of the key (the store retries it). `contended` counts the
-- keys this claim took that have more due rows waiting.
--
-- Rate limits: rows with a `rate_limit` take `weight` tokens from the bucket (limit,
-- partition). Buckets are created (a swept one recreated) and locked in key order by one
-- INSERT ... ON CONFLICT DO UPDATE, which refills them from `now` up to burst and grants the
-- urgency-ordered prefix of their rows whose cumulative weight fits. A row left out is
-- deferred (`throttled`) to the moment its tokens will be there, so it stops occupying the
-- front of the queue; a row whose limit no engine configured waits :unknown_limit_wait and
-- is reported.
-- A batch without rate-limited rows leaves the bucket CTEs with no input.
--
-- Paused queues: a claim of a paused queue takes nothing, and a pause waits for the claims
-- in flight (`queue_paused`).
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
known AS (
    SELECT *
    FROM unnest(:workflows::text[], :steps::text[], :leases::interval[])
         AS k(workflow, step, lease)
),
picked AS (
    SELECT i.id, k.lease, i.concurrency_key, i.rate_limit, i.rate_partition, i.weight,
           i.priority, i.run_at
    FROM __schema__.instances i
    JOIN known k ON k.workflow = i.workflow AND k.step = i.step, now
    WHERE i.status = 'available' AND i.queue = :queue AND i.run_at <= now.t
      -- A paused queue starts nothing (see `queue_paused`): asked once per claim, before
      -- the scan (an InitPlan the planner makes a one-time filter).
      AND NOT (SELECT __schema__.queue_paused(:queue))
      AND (i.concurrency_key IS NULL
           OR (NOT EXISTS (SELECT 1 FROM __schema__.instances e
                           WHERE e.concurrency_key = i.concurrency_key
                             AND e.status = 'executing')
               -- only the most urgent due row of its key in this queue: the LIMIT below
               -- then never fills with rows of one key (no head-of-line blocking)
               AND i.id = (SELECT h.id FROM __schema__.instances h
                           JOIN known kh ON kh.workflow = h.workflow AND kh.step = h.step
                           WHERE h.concurrency_key = i.concurrency_key AND h.queue = i.queue
                             AND h.status = 'available' AND h.run_at <= now.t
                           ORDER BY h.priority DESC, h.run_at, h.id
                           LIMIT 1)
               AND pg_try_advisory_xact_lock(
                   hashtextextended(__key_lock_prefix__ || i.concurrency_key, 0))))
    ORDER BY i.priority DESC, i.run_at, i.id
    LIMIT :limit
    FOR UPDATE OF i SKIP LOCKED
),
-- Keys this claim took that have more due rows waiting behind them
-- (`concurrency.contended`): one probe of `instances_concurrency_head` per key (a scalar
-- subquery, which the planner keeps per row instead of hashing the whole queue).
held_back AS (
    SELECT count(*) AS n
    FROM picked p
    CROSS JOIN now
    WHERE p.concurrency_key IS NOT NULL
      AND (SELECT h.id FROM __schema__.instances h
           WHERE h.concurrency_key = p.concurrency_key AND h.queue = :queue
             AND h.status = 'available' AND h.run_at <= now.t AND h.id <> p.id
           LIMIT 1) IS NOT NULL
),
demand AS (
    SELECT c.id, c.rate_limit AS name, coalesce(c.rate_partition, '') AS part,
           sum(c.weight) OVER (PARTITION BY c.rate_limit, coalesce(c.rate_partition, '')
                               ORDER BY c.priority DESC, c.run_at, c.id) AS cum
    FROM picked c
    WHERE c.rate_limit IS NOT NULL
),
buckets AS (
    INSERT INTO __schema__.rate_buckets AS b (name, partition, tokens, refreshed_at, granted)
    SELECT n.name, n.part, cfg.burst - g.granted, now.t, g.granted
    FROM (SELECT DISTINCT name, part FROM demand) n
    JOIN __schema__.rate_configs cfg ON cfg.name = n.name
    CROSS JOIN now
    CROSS JOIN LATERAL (
        SELECT coalesce(max(d.cum), 0) AS granted FROM demand d
        WHERE d.name = n.name AND d.part = n.part AND d.cum <= cfg.burst) g
    ORDER BY n.name, n.part
    ON CONFLICT (name, partition) DO UPDATE
    SET (tokens, granted, refreshed_at) = (
        SELECT f.avail - g.granted, g.granted, greatest(b.refreshed_at, excluded.refreshed_at)
        FROM (SELECT least(c.burst::float8,
                           b.tokens + greatest(0, extract(epoch FROM excluded.refreshed_at
                                                                 - b.refreshed_at))
                                      * 1000 * c.allowed / c.per_ms) AS avail
              FROM __schema__.rate_configs c WHERE c.name = b.name) f
        CROSS JOIN LATERAL (
            SELECT coalesce(max(d.cum), 0) AS granted FROM demand d
            WHERE d.name = b.name AND d.part = b.partition AND d.cum <= f.avail) g)
    RETURNING b.name, b.partition, b.tokens, b.granted
),
verdict AS (
    SELECT c.id, c.lease, c.run_at AS due_at,
           (c.rate_limit IS NULL OR coalesce(d.cum <= b.granted, false)) AS go,
           (c.rate_limit IS NOT NULL AND b.name IS NULL) AS unknown_limit,
           CASE WHEN b.name IS NULL THEN now.t + :unknown_limit_wait::interval
                ELSE now.t + make_interval(
                    secs => (d.cum - b.granted - b.tokens) * cfg.per_ms / cfg.allowed / 1000.0)
           END AS wake_at
    FROM picked c
    LEFT JOIN demand d ON d.id = c.id
    LEFT JOIN buckets b ON b.name = d.name AND b.partition = d.part
    LEFT JOIN __schema__.rate_configs cfg ON cfg.name = d.name
    CROSS JOIN now
),
claimed AS (
    UPDATE __schema__.instances i
    SET status = CASE WHEN v.go THEN 'executing'::__schema__.status
                      ELSE 'available'::__schema__.status END,
        locked_by = CASE WHEN v.go THEN :locked_by END,
        locked_until = CASE WHEN v.go THEN now.t + v.lease END,
        run_at = CASE WHEN v.go THEN i.run_at ELSE v.wake_at END,
        throttled = NOT v.go,
        updated_at = now.t
    FROM verdict v, now
    WHERE i.id = v.id
    RETURNING i.id, i.workflow, i.step, i.state, i.attempt, i.priority, i.key, i.queue,
              i.timed_out, i.await_seen, i.children_from, v.go, v.unknown_limit,
              i.rate_limit, i.rate_partition, i.weight, i.run_at,
              extract(epoch FROM i.run_at - now.t)::float8 AS wait, i.trace_context,
              extract(epoch FROM now.t - v.due_at)::float8 AS waited, i.state_version
)
SELECT claimed.*, (SELECT n FROM held_back) AS contended
FROM claimed;

-- name: instance_claim_lean
-- `instance_claim` for a front of the queue that holds only plain rows (no concurrency
-- key, no rate limit), without the work those features cost every claim: the same scan
-- (known pairs, pause, order, SKIP LOCKED, limit) and the same claimed rows and columns
-- (`go` true, `contended` 0). A row keeps the key and limit it was written with, whatever
-- the deploy declares, so whether the front is plain is found in the scan itself: when any
-- row the scan took carries a key or a limit, nothing is claimed (its locks end with the
-- statement) and the answer is one row of NULLs, on which the caller runs `instance_claim`
-- at once. Every row is therefore claimed in the order and under the rules of
-- `instance_claim`.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
known AS (
    SELECT *
    FROM unnest(:workflows::text[], :steps::text[], :leases::interval[])
         AS k(workflow, step, lease)
),
picked AS (
    SELECT i.id, k.lease,
           (i.concurrency_key IS NOT NULL OR i.rate_limit IS NOT NULL) AS general
    FROM __schema__.instances i
    JOIN known k ON k.workflow = i.workflow AND k.step = i.step, now
    WHERE i.status = 'available' AND i.queue = :queue AND i.run_at <= now.t
      AND NOT (SELECT __schema__.queue_paused(:queue))
    ORDER BY i.priority DESC, i.run_at, i.id
    LIMIT :limit
    FOR UPDATE OF i SKIP LOCKED
),
general AS (SELECT EXISTS (SELECT 1 FROM picked WHERE general) AS met),
claimed AS (
    UPDATE __schema__.instances i
    SET status = 'executing', locked_by = :locked_by, locked_until = now.t + p.lease,
        throttled = false, updated_at = now.t
    FROM picked p, now, general g
    WHERE i.id = p.id AND NOT g.met
    RETURNING i.id, i.workflow, i.step, i.state, i.attempt, i.priority, i.key, i.queue,
              i.timed_out, i.await_seen, i.children_from, true AS go, false AS unknown_limit,
              i.rate_limit, i.rate_partition, i.weight, i.run_at,
              extract(epoch FROM i.run_at - now.t)::float8 AS wait, i.trace_context,
              extract(epoch FROM now.t - i.run_at)::float8 AS waited, i.state_version,
              0::bigint AS contended
)
SELECT * FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM general WHERE general.met;

-- name: instance_release
-- Give a claim back untouched (drain, long chains): available again at once, and announced
-- so that another node takes it now rather than at its next poll.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
released AS (
    UPDATE __schema__.instances i
    SET status = 'available', locked_by = NULL, locked_until = NULL, run_at = now.t,
        updated_at = now.t
    FROM now
    WHERE i.id = :id AND i.locked_by = :locked_by AND i.status = 'executing'
    RETURNING i.id, i.queue
)
SELECT id, pg_notify(__channel__, 'q:' || queue) AS notified FROM released;

-- name: instance_cancel
-- Cancel a live instance (an executing one too: its worker's late commit is then stale),
-- with its live descendants (see `instances_ended`). The row and its parent are locked in
-- id order first, like every writer that ends instances; the UPDATE rechecks the status on
-- the row's latest version, so an instance that ended meanwhile is left alone.
-- The two ids are computed first, as one array (an InitPlan), and the rows locked by a scan
-- of `instances` alone: when a row was updated and committed while this statement waited
-- for it (a heartbeat), PostgreSQL re-checks the row's newest version against the scan's
-- own condition only, whatever the plan. Matched through a join instead (`IN (... UNION
-- ALL ...)`), that re-check lost the row under a nested-loop plan, and a live instance was
-- reported not live.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
locked AS (
    SELECT i.id FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT ARRAY[t.id, t.parent_id] FROM __schema__.instances t
                       WHERE t.id = :id)::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i
),
fin AS (
    UPDATE __schema__.instances i
    SET status = 'cancelled', locked_by = NULL, locked_until = NULL, throttled = false,
        await_names = NULL, await_deadline = NULL, finished_at = now.t, updated_at = now.t
    FROM now, locked
    WHERE i.id = :id AND locked.id = i.id
      AND i.status IN __live__
    RETURNING i.id
),
ended AS (
    SELECT __schema__.instances_ended(array_agg(fin.id), min(now.t), __channel__) AS cascaded
    FROM fin, now
    HAVING count(*) > 0
)
SELECT fin.id, (SELECT cardinality(cascaded) FROM ended) AS cascaded FROM fin;

-- name: instance_by_id
SELECT id, workflow, key, status::text, step, attempt, state, result, error, queue,
       priority, run_at, locked_by, locked_until, await_names, await_deadline,
       pending_children, inserted_at, updated_at, finished_at, state_version
FROM __schema__.instances
WHERE id = :id;

-- name: instance_by_key
-- The live instance holding the key, else the most recent one that had it.
SELECT id, workflow, key, status::text, step, attempt, state, result, error, queue,
       priority, run_at, locked_by, locked_until, await_names, await_deadline,
       pending_children, inserted_at, updated_at, finished_at, state_version
FROM __schema__.instances
WHERE workflow = :workflow AND key = :key AND key IS NOT NULL
ORDER BY (status IN __live__) DESC, id DESC
LIMIT 1;

-- name: instance_status
SELECT status::text, result, error FROM __schema__.instances WHERE id = :id;

-- name: instances_unknown
-- Due rows of a queue whose (workflow, step) this deploy does not know: left untouched by
-- the claim, and counted here so the engine can report them.
SELECT workflow, step, count(*) AS n, min(id) AS first_id
FROM __schema__.instances
WHERE status = 'available' AND queue = :queue AND run_at <= coalesce(:now::timestamptz, now())
  AND (workflow, step) NOT IN (SELECT * FROM unnest(:workflows::text[], :steps::text[]))
GROUP BY workflow, step
ORDER BY workflow, step;

-- name: outcome_batch
-- Group commit: the goto / continue / retry / park / finish outcomes of many steps in one
-- statement, each row guarded by ownership exactly as in its single-row statement. The rows,
-- and the parents that finishing rows count down, are locked in id order first with SKIP
-- LOCKED: a batch never waits for a lock (so it closes no cycle), and a row someone else
-- holds (a delivery, a cancel, a user's transaction) delays only its own outcome, which comes
-- back `busy` to be sent again, not the whole batch. Their ids are gathered first into one
-- array and the rows locked by a scan of `instances` alone (see `instance_cancel`): a row
-- updated and committed after this statement's snapshot (a heartbeat) is re-checked on its
-- own condition and locked, not lost to the plan and reported busy. Terminal effects are
-- `instances_ended`'s, called once for the rows that finished here; parked rows are
-- rechecked by `instances_parked` under the locks this statement holds.
-- kind: 'goto' | 'continue' | 'retry' | 'park' | 'finish'. The outcomes ride in as one
-- JSON array (:outcomes) of their plain fields (one parameter, however many outcomes:
-- cheaper to send than a dozen parallel arrays), each with its position `n` in the parallel
-- jsonb arrays :states, :results and :errors, which go as they are. Per outcome:
-- `consumed` the signal ids it saw (to delete); `rate_limit`, `rate_partition`, `weight`
-- what the step a goto, continue or park enters takes; `state_version` the version of its
-- state (a row whose state is NULL keeps its stored state and version); `delay_s` (a park's
-- await timeout) and `lease_s` in seconds. A park also has `await_names`, `keep_deadline`
-- (a reawait), `seen` (the highest signal id it already saw) and `keep_children` (not
-- entered by a goto). `max_attempts` are those of the step the row is on after the outcome
-- (NULL keeps the row's): the reaper, `show` and the dashboard read them from the row.
-- A 'continue' (a goto that keeps the claim to run the next step at once) starts a step: in
-- a queue that is paused (`queue_paused`, asked once per queue of such outcomes, each
-- carrying its row's `queue`) it is committed as a plain 'goto' instead, and comes back
-- `released`: the next step waits, available, for the queue to be resumed.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
paused AS (
    SELECT c.queue
    FROM (SELECT DISTINCT r.queue
          FROM jsonb_to_recordset(:outcomes::jsonb) AS r(kind text, queue text)
          WHERE r.kind = 'continue') c
    WHERE __schema__.queue_paused(c.queue)
),
b AS (
    SELECT r.id, r.locked_by,
           CASE WHEN r.kind = 'continue' AND r.queue IN (SELECT queue FROM paused) THEN 'goto'
                ELSE r.kind END AS kind,
           r.kind AS asked, r.step, v.state, make_interval(secs => r.delay_s) AS delay,
           r.status, v.result, v.error, make_interval(secs => r.lease_s) AS lease,
           r.rate_limit, r.rate_partition, r.weight, r.state_version, r.await_names,
           r.keep_deadline, r.seen, r.keep_children, r.consumed, r.max_attempts
    FROM jsonb_to_recordset(:outcomes::jsonb) AS r(
             n bigint, id bigint, locked_by text, kind text, step text, delay_s float8,
             status text, lease_s float8, rate_limit text, rate_partition text, weight int,
             state_version int, await_names text[], keep_deadline boolean, seen bigint,
             keep_children boolean, consumed bigint[], max_attempts int, queue text)
    JOIN unnest(:states::jsonb[], :results::jsonb[], :errors::jsonb[]) WITH ORDINALITY
         AS v(state, result, error, n) ON v.n = r.n
),
locked AS (
    SELECT i.id
    FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT array_agg(x.id) FROM (
                           SELECT b.id FROM b
                           UNION ALL
                           SELECT c.parent_id FROM __schema__.instances c JOIN b ON b.id = c.id
                           WHERE b.kind = 'finish' AND c.parent_id IS NOT NULL) x)::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i SKIP LOCKED
),
ready AS (
    SELECT b.id FROM b
    JOIN locked ON locked.id = b.id
    JOIN __schema__.instances c ON c.id = b.id
    WHERE b.kind <> 'finish' OR c.parent_id IS NULL
       OR c.parent_id IN (SELECT id FROM locked)
),
upd AS (
    UPDATE __schema__.instances i
    SET step = CASE WHEN b.kind IN ('goto', 'continue', 'park') THEN b.step ELSE i.step END,
        state = coalesce(b.state, i.state),
        state_version = CASE WHEN b.state IS NULL THEN i.state_version
                             ELSE b.state_version END,
        status = CASE b.kind WHEN 'continue' THEN 'executing'::__schema__.status
                             WHEN 'finish' THEN b.status::__schema__.status
                             WHEN 'park' THEN 'awaiting'::__schema__.status
                             ELSE 'available'::__schema__.status END,
        attempt = CASE b.kind WHEN 'retry' THEN i.attempt + 1
                              WHEN 'finish' THEN i.attempt ELSE 0 END,
        max_attempts = coalesce(b.max_attempts, i.max_attempts),
        run_at = CASE WHEN b.kind IN ('goto', 'retry')
                      THEN now.t + coalesce(b.delay, interval '0') ELSE i.run_at END,
        locked_by = CASE WHEN b.kind = 'continue' THEN i.locked_by END,
        locked_until = CASE WHEN b.kind = 'continue' THEN now.t + b.lease END,
        timed_out = CASE WHEN b.kind IN ('goto', 'continue', 'park') THEN false
                         ELSE i.timed_out END,
        await_seen = CASE b.kind WHEN 'park' THEN b.seen WHEN 'goto' THEN 0 WHEN 'continue' THEN 0
                                 ELSE i.await_seen END,
        await_names = CASE b.kind WHEN 'retry' THEN i.await_names
                                  WHEN 'park' THEN b.await_names END,
        await_deadline = CASE b.kind
            WHEN 'retry' THEN i.await_deadline
            WHEN 'park' THEN CASE WHEN b.keep_deadline THEN i.await_deadline
                                  ELSE now.t + b.delay END END,
        rate_limit = CASE WHEN b.kind IN ('goto', 'continue', 'park') THEN b.rate_limit
                          ELSE i.rate_limit END,
        rate_partition = CASE WHEN b.kind IN ('goto', 'continue', 'park') THEN b.rate_partition
                              ELSE i.rate_partition END,
        weight = CASE WHEN b.kind IN ('goto', 'continue', 'park') THEN b.weight
                      ELSE i.weight END,
        children_from = CASE WHEN b.kind IN ('goto', 'continue') THEN NULL
                             WHEN b.kind = 'park' AND NOT b.keep_children THEN NULL
                             ELSE i.children_from END,
        result = CASE WHEN b.kind = 'finish' THEN b.result ELSE i.result END,
        error = CASE WHEN b.kind IN ('finish', 'retry') THEN b.error ELSE i.error END,
        finished_at = CASE WHEN b.kind = 'finish' THEN now.t END,
        updated_at = now.t
    FROM b, now, ready
    WHERE i.id = b.id AND ready.id = i.id
      AND i.locked_by = b.locked_by AND i.status = 'executing'
    RETURNING i.id, b.kind, b.kind <> b.asked AS released
),
consumed AS (
    DELETE FROM __schema__.signals s
    USING upd JOIN b ON b.id = upd.id
    WHERE upd.kind IN ('goto', 'continue', 'park') AND s.instance_id = upd.id
      AND s.id = ANY (b.consumed)
    RETURNING s.id
),
-- After `consumed`, which it reads: the cascade purges the inboxes of the descendants it
-- cancels, and a signal this batch consumed for one of them must be gone by then. Deleted
-- the other way round, the DELETE above would meet a row this same statement had deleted,
-- and that fails the whole batch.
ended AS (
    SELECT __schema__.instances_ended(array_agg(upd.id), min(now.t), __channel__) AS cascaded
    FROM upd, now, (SELECT count(*) AS n FROM consumed) AS consumed_first
    WHERE upd.kind = 'finish' AND consumed_first.n >= 0
    HAVING count(*) > 0
),
parked AS (
    SELECT p.* FROM now, __schema__.instances_parked(
        (SELECT array_agg(upd.id) FROM upd WHERE upd.kind = 'park'), now.t, __channel__) p
)
SELECT upd.id, (SELECT cardinality(cascaded) FROM ended) AS cascaded,
       parked.woken_by_deadline, false AS busy, upd.released
FROM upd LEFT JOIN parked ON parked.woken_id = upd.id
UNION ALL
SELECT b.id, NULL, NULL, true, false FROM b WHERE b.id NOT IN (SELECT id FROM ready);

-- name: outcome_plain
-- The group commit of the common case: a batch of plain gotos, continues and finishes (no
-- rate limit entered, no park, no retry), written as `outcome_batch` writes them, with less
-- to parse and plan. The same guards: each row only for the worker holding its claim; rows,
-- and the parents that finishing children count down, locked with SKIP LOCKED (a row or
-- parent someone else holds comes back `busy`, to be sent again; the statement never waits
-- for one, so the order it takes them in closes no cycle), each through an id array (see
-- `instance_cancel`); a continue in a paused queue (`queue_paused`, asked once per queue of
-- continues) committed as a plain goto, `released`. The signals a goto or continue consumed
-- come as pairs, :consumed_instances[k] and :consumed_signals[k] (a woken step's, say), and
-- are deleted as `outcome_batch` deletes them. Terminal effects are `instances_ended`'s.
-- Every column but :ids comes once for the batch (:kind, :step, ...) when its rows share
-- it, else as a text[] of a value per row (:kind_rows, ...; then the scalar is NULL), as
-- `instance_insert_many` takes them: asyncpg checks each array element as it encodes it,
-- and has a codec of its own for text[] only. `ready` carries only what the guards read
-- and the intervals; the other columns are read by position (`ord`) in the UPDATE, which
-- copies the whole row of `ready` for its recheck: a narrow row is cheaper to copy. :delay and :lease are
-- in seconds; the states, results and errors are JSON text.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
b AS (
    SELECT u.id, u.ord, coalesce(u.kind, :kind::text) AS kind,
           coalesce(u.locked_by, :locked_by::text) AS locked_by,
           coalesce(u.queue, :queue::text) AS queue,
           make_interval(secs => coalesce(u.delay::float8, :delay::float8)) AS delay,
           make_interval(secs => coalesce(u.lease::float8, :lease::float8)) AS lease
    FROM ROWS FROM (unnest(:ids::bigint[]), unnest(:kind_rows::text[]),
                    unnest(:locked_by_rows::text[]), unnest(:queue_rows::text[]),
                    unnest(:delay_rows::text[]), unnest(:lease_rows::text[]))
         WITH ORDINALITY AS u(id, kind, locked_by, queue, delay, lease, ord)
),
paused AS (
    SELECT c.queue
    FROM (SELECT DISTINCT b.queue FROM b WHERE b.kind = 'continue') c
    WHERE __schema__.queue_paused(c.queue)
),
locked AS (
    SELECT i.id, i.parent_id
    FROM __schema__.instances i
    WHERE i.id = ANY ((SELECT array_agg(b.id) FROM b)::bigint[])
    ORDER BY i.id
    FOR UPDATE OF i SKIP LOCKED
),
parents AS (
    SELECT p.id
    FROM __schema__.instances p
    WHERE p.id = ANY ((SELECT array_agg(locked.parent_id) FROM locked JOIN b ON b.id = locked.id
                       WHERE b.kind = 'finish' AND locked.parent_id IS NOT NULL)::bigint[])
    ORDER BY p.id
    FOR UPDATE OF p SKIP LOCKED
),
ready AS (
    SELECT b.id, b.ord, b.kind, b.locked_by, b.delay, b.lease,
           b.kind = 'continue' AND NOT coalesce(b.queue IN (SELECT queue FROM paused), false)
               AS kept
    FROM b JOIN locked ON locked.id = b.id
    WHERE b.kind <> 'finish' OR locked.parent_id IS NULL
       OR locked.parent_id IN (SELECT id FROM parents)
),
upd AS (
    UPDATE __schema__.instances i
    SET step = CASE WHEN r.kind = 'finish' THEN i.step
                    ELSE coalesce((:step_rows::text[])[r.ord], :step::text) END,
        state = coalesce(coalesce((:state_rows::text[])[r.ord], :state::text)::jsonb, i.state),
        state_version = CASE WHEN coalesce((:state_rows::text[])[r.ord], :state::text) IS NULL
                             THEN i.state_version
                             ELSE coalesce((:state_version_rows::text[])[r.ord]::int,
                                           :state_version::int) END,
        status = CASE WHEN r.kind = 'finish'
                      THEN coalesce((:status_rows::text[])[r.ord],
                                    :status::text)::__schema__.status
                      WHEN r.kept THEN 'executing'::__schema__.status
                      ELSE 'available'::__schema__.status END,
        attempt = CASE WHEN r.kind = 'finish' THEN i.attempt ELSE 0 END,
        max_attempts = coalesce((:max_attempts_rows::text[])[r.ord]::int, :max_attempts::int,
                                i.max_attempts),
        run_at = CASE WHEN r.kind = 'finish' OR r.kept THEN i.run_at
                      ELSE now.t + coalesce(r.delay, interval '0') END,
        locked_by = CASE WHEN r.kept THEN i.locked_by END,
        locked_until = CASE WHEN r.kept THEN now.t + r.lease END,
        timed_out = r.kind = 'finish' AND i.timed_out,
        await_seen = CASE WHEN r.kind = 'finish' THEN i.await_seen ELSE 0 END,
        await_names = NULL,
        await_deadline = NULL,
        rate_limit = CASE WHEN r.kind = 'finish' THEN i.rate_limit END,
        rate_partition = CASE WHEN r.kind = 'finish' THEN i.rate_partition END,
        weight = CASE WHEN r.kind = 'finish' THEN i.weight ELSE 1 END,
        children_from = CASE WHEN r.kind = 'finish' THEN i.children_from END,
        result = CASE WHEN r.kind = 'finish'
                      THEN coalesce((:result_rows::text[])[r.ord], :result::text)::jsonb
                      ELSE i.result END,
        error = CASE WHEN r.kind = 'finish'
                     THEN coalesce((:error_rows::text[])[r.ord], :error::text)::jsonb
                     ELSE i.error END,
        finished_at = CASE WHEN r.kind = 'finish' THEN now.t END,
        updated_at = now.t
    FROM ready r, now
    WHERE i.id = r.id
      AND i.locked_by = r.locked_by AND i.status = 'executing'
    RETURNING i.id, r.kind, r.kind = 'continue' AND NOT r.kept AS released
),
-- Only for a row this statement moved on (a row it could not take keeps its inbox: its
-- outcome is sent again, or was stale), and only the signals of that row the step saw: one
-- that arrived since is in no pair, and stays for the next step.
consumed AS (
    DELETE FROM __schema__.signals s
    USING upd, unnest(:consumed_instances::bigint[], :consumed_signals::bigint[])
               AS c(instance_id, signal_id)
    WHERE upd.kind IN ('goto', 'continue') AND c.instance_id = upd.id
      AND s.instance_id = c.instance_id AND s.id = c.signal_id
    RETURNING s.id
),
-- After `consumed`, which it reads, as in `outcome_batch`: the cascade purges the inboxes
-- of the descendants it cancels, and a signal this batch consumed for one of them must be
-- gone by then.
ended AS (
    SELECT __schema__.instances_ended(array_agg(upd.id), min(now.t), __channel__) AS cascaded
    FROM upd, now, (SELECT count(*) AS n FROM consumed) AS consumed_first
    WHERE upd.kind = 'finish' AND consumed_first.n >= 0
    HAVING count(*) > 0
)
SELECT upd.id, false AS busy, upd.released
FROM upd LEFT JOIN ended ON true
UNION ALL
SELECT b.id, true, false FROM b WHERE b.id NOT IN (SELECT id FROM ready);

-- name: outcome_spawn
-- Second statement of the spawn transaction, after `instance_insert_many` put the children
-- in (key locks first, then this row lock: the order every writer keeps). The parent waits
-- for :pending children from id :children_from on, or, with none, is due at once at :step
-- (the spawn's `then`). :rate_limit, :rate_partition and :weight are those :step takes,
-- :state_version the version of :state, :max_attempts the attempts :step may use (NULL
-- keeps the row's).
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
upd AS (
    UPDATE __schema__.instances i
    SET step = :step, state = coalesce(:state::jsonb, i.state),
        status = CASE WHEN :pending::int = 0 THEN 'available'::__schema__.status
                      ELSE 'waiting'::__schema__.status END,
        pending_children = :pending, children_from = :children_from, attempt = 0,
        run_at = now.t, max_attempts = coalesce(:max_attempts::int, i.max_attempts),
        locked_by = NULL, locked_until = NULL, timed_out = false, await_seen = 0,
        await_names = NULL, await_deadline = NULL,
        rate_limit = :rate_limit, rate_partition = :rate_partition, weight = :weight,
        updated_at = now.t,
        state_version = CASE WHEN :state::jsonb IS NULL THEN i.state_version
                             ELSE :state_version::int END
    FROM now
    WHERE i.id = :id AND i.locked_by = :locked_by AND i.status = 'executing'
    RETURNING i.id, i.queue, i.status
),
consumed AS (
    DELETE FROM __schema__.signals s USING upd
    WHERE s.instance_id = upd.id AND s.id = ANY (:consumed::bigint[])
)
SELECT upd.id,
       CASE WHEN upd.status = 'available' THEN pg_notify(__channel__, 'q:' || upd.queue) END
           AS notified
FROM upd;

-- name: children_load
-- The children of the latest spawn of each claimed parent (:parent_ids, parallel to
-- :first_ids, the first child id of their spawn), in spawn order: what `ctx.children` shows.
SELECT c.parent_id, c.id, c.key, c.workflow, c.status::text AS status, c.result, c.error
FROM unnest(:parent_ids::bigint[], :first_ids::bigint[]) AS p(id, from_id)
JOIN __schema__.instances c ON c.parent_id = p.id AND c.id >= p.from_id
ORDER BY c.parent_id, c.spawn_index;


-- name: queues_due
-- Which of these queues hold due rows, and which are paused: the poller's one statement
-- (one probe of the pick index per queue, stopping at the first due row, and one of
-- `paused_queues`). A paused queue comes back with `paused`, never as due: the poller keeps
-- its schedulers idle, and learns of a resume it was not told of.
SELECT q.queue, p.queue IS NOT NULL AS paused
FROM unnest(:queues::text[]) AS q(queue)
LEFT JOIN __schema__.paused_queues p ON p.queue = q.queue
WHERE p.queue IS NOT NULL
   OR EXISTS (
       SELECT 1 FROM __schema__.instances i
       WHERE i.status = 'available' AND i.queue = q.queue
         AND i.run_at <= coalesce(:now::timestamptz, now()));
