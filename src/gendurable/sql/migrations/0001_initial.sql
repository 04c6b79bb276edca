-- Schema v1 of gendurable, as released in 0.1.0. FROZEN: never edit this file (a test pins
-- its checksum, and databases record it); every later change is a new numbered migration
-- that follows the rules in README.md beside it. It is idempotent, so that applying it twice
-- changes nothing. `__schema__` is replaced by the validated, quoted schema name before it
-- runs, under an advisory lock keyed by the schema (see db/migrator.py).

CREATE SCHEMA IF NOT EXISTS __schema__;

DO $$
BEGIN
    CREATE TYPE __schema__.status AS ENUM (
        'available', 'executing', 'awaiting', 'waiting', 'done', 'failed', 'cancelled'
    );
EXCEPTION WHEN duplicate_object THEN NULL;
END
$$;

CREATE TABLE IF NOT EXISTS __schema__.meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version int NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);

-- Every migration applied to this schema, written by the migrator in the transaction that
-- applied it: the checksum (sha256 of the file's text, before the schema is substituted) is
-- what a later migrator or engine compares with the file it packages, refusing a database
-- whose applied migration differs from it.
CREATE TABLE IF NOT EXISTS __schema__.migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- `gendurable <version>` of the migrator that applied it.
    applied_by text NOT NULL
);

CREATE TABLE IF NOT EXISTS __schema__.instances (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow text NOT NULL,
    queue text NOT NULL,
    step text NOT NULL,
    state jsonb,
    status __schema__.status NOT NULL DEFAULT 'available',
    attempt int NOT NULL DEFAULT 0,
    -- The attempts the current step may use (its own max_attempts, else the workflow's),
    -- written with every move to a step: the reaper's limit, and what `show` displays.
    max_attempts int NOT NULL DEFAULT 5,
    priority smallint NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL,
    key text,
    -- The statuses in which this row keeps its key reserved (uniqueness scope).
    scope __schema__.status[] NOT NULL
        DEFAULT '{available,executing,awaiting,waiting}'::text[]::__schema__.status[],
    concurrency_key text,
    rate_limit text,
    rate_partition text,
    weight int NOT NULL DEFAULT 1,
    locked_by text,
    locked_until timestamptz,
    -- Crash count: claims that expired without an outcome (the reaper counts them).
    rescued int NOT NULL DEFAULT 0,
    await_names text[],
    await_deadline timestamptz,
    -- Highest signal id a re-await already saw; only newer matching signals wake it.
    await_seen bigint NOT NULL DEFAULT 0,
    timed_out boolean NOT NULL DEFAULT false,
    parent_id bigint,
    -- Position of this child in its parent's spawn (ctx.children comes back in this order).
    spawn_index int,
    pending_children int NOT NULL DEFAULT 0,
    -- Id of the first child of this instance's latest spawn: ctx.children are its children
    -- from this id on. Cleared when the instance moves to another step.
    children_from bigint,
    -- True while the rate limiter holds the row back: run_at is then when its tokens come.
    throttled boolean NOT NULL DEFAULT false,
    result jsonb,
    error jsonb,
    inserted_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    -- W3C traceparent of the span that started this instance (OpenTelemetry), or NULL.
    trace_context text,
    -- The `@gd.workflow(version=)` of the code that wrote `state`: a deploy of a newer
    -- version runs the workflow's `@gd.upgrade` chain on it before a step sees it.
    state_version int NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS __schema__.signals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id bigint NOT NULL REFERENCES __schema__.instances (id) ON DELETE CASCADE,
    name text NOT NULL,
    payload jsonb,
    received_at timestamptz NOT NULL,
    -- W3C traceparent of the span that sent this signal (OpenTelemetry), or NULL.
    trace_context text
);

-- Idempotency keys of signals: the signal a key stored for an instance, kept after the
-- signal itself was consumed (its inbox row deleted) and until the instance is deleted, so
-- that a resend with the same key stores nothing and gets the first send's signal id. A
-- table of its own: signals without a key, and every consumption, never touch it. The
-- primary key is the guarantee that two concurrent sends of one key store one signal.
-- `name` and `payload_md5` (of the payload's jsonb text) tell a true resend from another
-- signal reusing the key, which is refused. No foreign key: `terminal_sweep` deletes the
-- keys of the instances it deletes (a cascade would cost every deleted instance a trigger
-- run, keyed or not: a third more per GC batch, measured); a key left by an instance
-- deleted otherwise is never read (lookups join the instance).
CREATE TABLE IF NOT EXISTS __schema__.signal_keys (
    instance_id bigint NOT NULL,
    idempotency_key text NOT NULL,
    signal_id bigint NOT NULL,
    name text NOT NULL,
    payload_md5 uuid NOT NULL,
    PRIMARY KEY (instance_id, idempotency_key)
);

-- Paused queues: no engine starts a new step of a queue listed here (see `queues_paused`).
-- A row per paused queue; resuming deletes it.
CREATE TABLE IF NOT EXISTS __schema__.paused_queues (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL,
    -- Who paused it: an engine (`<name>@<host>-<pid>`), `gendurable pause`, the dashboard.
    paused_by text NOT NULL
);

CREATE TABLE IF NOT EXISTS __schema__.rate_configs (
    name text PRIMARY KEY,
    allowed int NOT NULL CHECK (allowed > 0),
    per_ms bigint NOT NULL CHECK (per_ms > 0),
    burst int NOT NULL CHECK (burst > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS __schema__.rate_buckets (
    name text NOT NULL,
    partition text NOT NULL DEFAULT '',
    tokens double precision NOT NULL,
    refreshed_at timestamptz NOT NULL,
    -- Tokens the last claim took from this bucket (the claim reads it back in one statement).
    granted double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (name, partition)
);

-- The pick index: the claim reads it in this exact order (most urgent first).
CREATE INDEX IF NOT EXISTS instances_pick
    ON __schema__.instances (queue, priority DESC, run_at, id)
    WHERE status = 'available';

-- One instance per (workflow, key) among the statuses of each row's scope.
CREATE UNIQUE INDEX IF NOT EXISTS instances_key
    ON __schema__.instances (workflow, key)
    WHERE key IS NOT NULL AND status = ANY (scope);

-- Lookups by key (get, result, signal, cancel), live or ended: the unique index above only
-- covers rows inside their scope.
CREATE INDEX IF NOT EXISTS instances_lookup
    ON __schema__.instances (workflow, key, id)
    WHERE key IS NOT NULL;

-- Which concurrency keys are busy right now. Unique: two instances sharing a key can never
-- be executing at once, whatever a claim's snapshot saw (guarantee 6 held by PostgreSQL).
CREATE UNIQUE INDEX IF NOT EXISTS instances_concurrency_active
    ON __schema__.instances (concurrency_key)
    WHERE status = 'executing' AND concurrency_key IS NOT NULL;

-- The most urgent due row of each concurrency key in a queue: only that row is eligible in a
-- claim's scan, so a key with a long backlog never fills a batch with rows it cannot run.
CREATE INDEX IF NOT EXISTS instances_concurrency_head
    ON __schema__.instances (concurrency_key, queue, priority DESC, run_at, id)
    WHERE status = 'available' AND concurrency_key IS NOT NULL;

CREATE INDEX IF NOT EXISTS instances_await_deadline
    ON __schema__.instances (await_deadline)
    WHERE status = 'awaiting' AND await_deadline IS NOT NULL;

CREATE INDEX IF NOT EXISTS instances_lease
    ON __schema__.instances (locked_until)
    WHERE status = 'executing';

CREATE INDEX IF NOT EXISTS instances_terminal
    ON __schema__.instances (finished_at, id)
    WHERE status IN ('done', 'failed', 'cancelled');

CREATE INDEX IF NOT EXISTS instances_parent
    ON __schema__.instances (parent_id, id)
    WHERE parent_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS signals_inbox
    ON __schema__.signals (instance_id, id);

-- The terminal effects, written once: every statement that ends instances (group commit,
-- reaper, cancel) calls this with the ids it has just set done, failed or cancelled, so a
-- new terminal path cannot forget one and none runs twice (the caller's guarded UPDATE
-- returns each id once). In order:
--   1. live descendants are cancelled with their ancestor (their late commits are stale);
--   2. the inboxes of every ended instance are purged;
--   3. each ended child counts its live parent down once; a waiting parent whose count
--      reaches zero becomes due at `t` and its queue is announced;
--   4. every ended instance is announced ('t:<id>') for result() waiters.
-- Lock order: callers lock what they end, and the parents of it, in ascending id order
-- first; a child's id is always above its parent's, so the descendants locked here (in id
-- order) come after everything the caller holds. Being VOLATILE, each statement below runs
-- in a fresh snapshot: children that a spawn committed while the caller waited for a row
-- lock are seen and cancelled too, and so are those a spawn committed while the cascade
-- itself waited (a further round). A later round locks children of rows this call already
-- holds; every other writer of such a child locks its parent first, so no cycle closes.
-- Returns the ids cancelled by cascade.
CREATE OR REPLACE FUNCTION __schema__.instances_ended(
    ended bigint[], t timestamptz, channel text
) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    cascaded bigint[] := '{}';
    more bigint[];
    everything bigint[];
    announced bigint;
BEGIN
    IF ended IS NULL OR cardinality(ended) = 0 THEN
        RETURN '{}';
    END IF;
    -- Rounds until one finds nothing live: a round that waits for a descendant's lock (a
    -- spawn holding it until its commit) cannot see the children that spawn inserts, so
    -- the next round, in a fresh snapshot, starts again from everything ended so far.
    LOOP
        WITH RECURSIVE tree AS (
            SELECT c.id FROM __schema__.instances c
            WHERE c.parent_id = ANY (ended || cascaded)
              AND c.status IN ('available', 'executing', 'awaiting', 'waiting')
            UNION
            SELECT c.id FROM __schema__.instances c JOIN tree ON c.parent_id = tree.id
            WHERE c.status IN ('available', 'executing', 'awaiting', 'waiting')
        ),
        locked AS (
            SELECT i.id FROM __schema__.instances i JOIN tree ON tree.id = i.id
            WHERE i.status IN ('available', 'executing', 'awaiting', 'waiting')
            ORDER BY i.id
            FOR UPDATE OF i
        ),
        cancelled AS (
            UPDATE __schema__.instances i
            SET status = 'cancelled', locked_by = NULL, locked_until = NULL,
                await_names = NULL, await_deadline = NULL, throttled = false,
                finished_at = t, updated_at = t
            FROM locked
            WHERE i.id = locked.id
            RETURNING i.id
        )
        SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO more FROM cancelled;
        EXIT WHEN cardinality(more) = 0;
        cascaded := cascaded || more;
    END LOOP;
    everything := ended || cascaded;

    DELETE FROM __schema__.signals WHERE instance_id = ANY (everything);

    WITH counted AS (
        SELECT parent_id, count(*)::int AS n FROM __schema__.instances
        WHERE id = ANY (everything) AND parent_id IS NOT NULL
        GROUP BY parent_id
    ),
    parents AS (
        SELECT p.id, counted.n FROM __schema__.instances p JOIN counted ON counted.parent_id = p.id
        WHERE p.status IN ('available', 'executing', 'awaiting', 'waiting')
        ORDER BY p.id
        FOR UPDATE OF p
    ),
    woke AS (
        UPDATE __schema__.instances p
        SET pending_children = p.pending_children - parents.n,
            status = CASE WHEN p.status = 'waiting' AND p.pending_children <= parents.n
                          THEN 'available'::__schema__.status ELSE p.status END,
            run_at = CASE WHEN p.status = 'waiting' AND p.pending_children <= parents.n
                          THEN t ELSE p.run_at END,
            updated_at = t
        FROM parents
        WHERE p.id = parents.id
        RETURNING p.queue, p.status, p.pending_children
    )
    SELECT count(pg_notify(channel, 'q:' || q.queue)) INTO announced
    FROM (SELECT DISTINCT queue FROM woke
          WHERE status = 'available' AND pending_children <= 0) q;

    PERFORM pg_notify(channel, 't:' || e) FROM unnest(everything) AS e;
    RETURN cascaded;
END
$fn$;

-- The second half of a park, run by the group commit right after it set rows `awaiting`:
-- wake at once each parked row whose inbox already holds a matching signal newer than the
-- ones it saw, or whose deadline has passed (as a timeout), and announce the wake like a
-- delivery. The caller's statement holds the rows' locks, which signal delivery also takes,
-- and this function's statement runs in a fresh snapshot (VOLATILE): a signal committed
-- before the park took the lock is seen here, and one committed after it finds the row
-- already `awaiting` and flips it itself. So no wake-up is lost between the two.
-- Returns the rows it woke, and whether the deadline (not a signal) woke each.
CREATE OR REPLACE FUNCTION __schema__.instances_parked(
    parked bigint[], t timestamptz, channel text
) RETURNS TABLE (woken_id bigint, woken_by_deadline boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF parked IS NULL OR cardinality(parked) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH woke AS (
        UPDATE __schema__.instances i
        SET status = 'available', run_at = t, updated_at = t,
            timed_out = NOT EXISTS (
                SELECT 1 FROM __schema__.signals s
                WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)
                  AND s.id > i.await_seen)
        WHERE i.id = ANY (parked) AND i.status = 'awaiting'
          AND (EXISTS (SELECT 1 FROM __schema__.signals s
                       WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)
                         AND s.id > i.await_seen)
               OR i.await_deadline <= t)
        RETURNING i.id, i.queue, i.timed_out
    ),
    announced AS (
        SELECT count(pg_notify(channel, 'q:' || q.queue)) AS n
        FROM (SELECT DISTINCT queue FROM woke) q
    )
    SELECT woke.id, woke.timed_out FROM woke, announced;
END
$fn$;

-- Whether queue `q` is paused, as committed by the time this returns: asked by every
-- statement that starts steps of a queue (the claim, a start or a signal's wake claimed by
-- a local scheduler, a kept-claim move), inside that statement. It first takes a shared
-- transaction-level advisory lock on the queue, which `queue_pause` takes exclusively; then,
-- being VOLATILE, it reads `paused_queues` in a snapshot taken after the lock, not in the
-- caller's (older) one. So a pause either committed before the read, which sees it, or waits
-- for the caller's transaction to commit what it started: once `queue_pause` has returned,
-- no statement that missed the pause is still in flight. The lock is only tried: while a
-- pause holds or waits for it, the queue counts as paused (it is about to be), so a caller
-- never waits here and no lock cycle can form through it.
CREATE OR REPLACE FUNCTION __schema__.queue_paused(q text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(
            hashtextextended('gendurable:pause:__schema__:' || q, 0)) THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM __schema__.paused_queues p WHERE p.queue = q);
END
$fn$;

-- Running engines ("nodes"). Each engine records what it serves at start, refreshes
-- `last_seen`/`expires_at` with its heartbeat and deletes its row at stop. A row past
-- `expires_at` is a node that died without stopping: ignored by blocked_by, pruned by any
-- live node's heartbeat.
CREATE TABLE IF NOT EXISTS __schema__.nodes (
    id text PRIMARY KEY,
    name text NOT NULL,
    host text NOT NULL,
    pid int NOT NULL,
    schema text NOT NULL,
    -- {"queue": concurrency, ...}; empty for a client-only engine.
    queues jsonb NOT NULL,
    -- {"Workflow": {"queue": "q", "steps": {"step": ["awaited signal", ...], ...}}, ...}
    workflows jsonb NOT NULL,
    version text NOT NULL,
    heartbeat interval NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    -- last_seen plus a few heartbeats: past it the node counts as dead.
    expires_at timestamptz NOT NULL
);

-- Schedules (`gd.Schedule`): one row per schedule name, written by the engines that declare
-- it. `next_at` is the earliest instant whose tick has not been handled: an engine holding
-- the row lock starts the due ticks' instances and moves it past now in one transaction.
-- `spec` is the definition as the engine that declared it last wrote it; an engine advances
-- the row only while its own definition is that one (a deploy that changes a schedule takes
-- it over at once). Engines that declare a schedule refresh `refreshed_at`; one no running
-- engine refreshed for a grace period is marked disabled (`disabled_at`), never deleted.
-- No index beyond the key: one row per schedule in the code, read by name.
CREATE TABLE IF NOT EXISTS __schema__.schedules (
    name text PRIMARY KEY,
    workflow text NOT NULL,
    -- {"cron": "0 3 * * *", "tz": "Europe/Paris"} or {"every": seconds}, with "missed",
    -- "catch_up" and "description" (the schedule in words, for readers without the code).
    spec jsonb NOT NULL,
    next_at timestamptz NOT NULL,
    last_at timestamptz,
    last_instance_id bigint,
    paused boolean NOT NULL DEFAULT false,
    declared_by text NOT NULL,
    refreshed_at timestamptz NOT NULL,
    disabled_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Why an instance that is not executing waits, evaluated at `as_of`: one row (reason, until,
-- detail), none for an executing or terminal instance. The candidates are ranked and the
-- first one that holds wins; for a due row they follow the claim's own order of obstacles
-- (who could run it, then its concurrency key, then its rate bucket, then a free slot).
CREATE OR REPLACE FUNCTION __schema__.blocked_by(i __schema__.instances, as_of timestamptz)
RETURNS TABLE (reason text, until timestamptz, detail text)
LANGUAGE sql STABLE
AS $fn$
WITH live AS (
    SELECT n.queues, n.workflows FROM __schema__.nodes n WHERE n.expires_at >= as_of
)
SELECT c.reason, c.until, c.detail
FROM (
    SELECT 1 AS rank, 'awaiting' AS reason, i.await_deadline AS until,
           array_to_string(i.await_names, ' or ') AS detail
    WHERE i.status = 'awaiting'
    UNION ALL
    SELECT 2, 'children', NULL,
           format('%s of %s pending', i.pending_children,
                  (SELECT count(*) FROM __schema__.instances k
                   WHERE k.parent_id = i.id AND k.id >= coalesce(i.children_from, 0)))
    WHERE i.status = 'waiting'
    UNION ALL
    -- An operator paused its queue: nothing of it starts, due or not, until it is resumed.
    SELECT 2, 'paused', NULL,
           format('queue %L since %s by %s', p.queue,
                  to_char(p.paused_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                  p.paused_by)
    FROM __schema__.paused_queues p
    WHERE i.status = 'available' AND p.queue = i.queue
    UNION ALL
    -- Not yet due: the rate limiter deferred it, a retry's backoff, or a plain schedule.
    SELECT 3,
           CASE WHEN i.throttled THEN 'rate_limit'
                WHEN i.attempt > 0 AND i.error IS NOT NULL THEN 'backoff'
                ELSE 'scheduled' END,
           i.run_at,
           CASE WHEN i.throttled
                THEN format('bucket %L', i.rate_limit)
                     || CASE WHEN i.rate_partition IS NULL THEN ''
                          ELSE format(' partition %L', i.rate_partition) END
                WHEN i.attempt > 0 AND i.error IS NOT NULL
                THEN format('attempt %s of %s failed: %s', i.attempt, i.max_attempts,
                            concat_ws(': ', regexp_replace(i.error->>'type', '^.*\.', ''),
                                      split_part(i.error->>'message', E'\n', 1)))
                ELSE '' END
    WHERE i.status = 'available' AND i.run_at > as_of
    UNION ALL
    -- Due from here on. No live node knows the (workflow, step) at all.
    SELECT 10, 'unknown', NULL,
           CASE WHEN EXISTS (SELECT 1 FROM live n WHERE n.workflows ? i.workflow)
                THEN format('no live engine knows step %L of workflow %L', i.step, i.workflow)
                ELSE format('no live engine knows workflow %L', i.workflow) END
    WHERE i.status = 'available' AND i.run_at <= as_of
      AND NOT EXISTS (SELECT 1 FROM live n WHERE n.workflows -> i.workflow -> 'steps' ? i.step)
    UNION ALL
    SELECT 11, 'queue', NULL, format('no live engine serves queue %L', i.queue)
    WHERE i.status = 'available' AND i.run_at <= as_of
      AND NOT EXISTS (SELECT 1 FROM live n WHERE n.queues ? i.queue)
    UNION ALL
    -- Engines run the queue and others know the step, but none does both (a rolling deploy).
    SELECT 12, 'unknown', NULL,
           format('no live engine serving queue %L knows step %L of workflow %L',
                  i.queue, i.step, i.workflow)
    WHERE i.status = 'available' AND i.run_at <= as_of
      AND NOT EXISTS (SELECT 1 FROM live n
                      WHERE n.queues ? i.queue AND n.workflows -> i.workflow -> 'steps' ? i.step)
    UNION ALL
    SELECT 20, 'concurrency', NULL,
           format('concurrency key %L is held by instance %s', i.concurrency_key, h.id)
    FROM (SELECT j.id FROM __schema__.instances j
          WHERE j.concurrency_key = i.concurrency_key AND j.status = 'executing'
            AND j.id <> i.id
          LIMIT 1) h
    WHERE i.status = 'available' AND i.run_at <= as_of AND i.concurrency_key IS NOT NULL
    UNION ALL
    -- The bucket as the claim would see it: refilled from refreshed_at to `as_of`, capped at
    -- the burst. A missing bucket is full. A limit no engine configured never grants.
    SELECT 30, 'rate_limit',
           CASE WHEN cfg.name IS NOT NULL AND i.weight <= cfg.burst
                THEN as_of + (i.weight - b.tokens_now) * cfg.per_ms / cfg.allowed
                          * interval '1 millisecond' END,
           CASE WHEN cfg.name IS NULL
                THEN format('unknown limit %L: no engine configured it', i.rate_limit)
                ELSE format('bucket %L', i.rate_limit)
                     || CASE WHEN i.rate_partition IS NULL THEN ''
                          ELSE format(' partition %L', i.rate_partition) END
                     || CASE WHEN i.weight > cfg.burst
                             THEN format(': weight %s exceeds its burst of %s, so it never fills',
                                         i.weight, cfg.burst)
                             ELSE '' END END
    FROM (SELECT 1) one
    LEFT JOIN __schema__.rate_configs cfg ON cfg.name = i.rate_limit
    LEFT JOIN LATERAL (
        SELECT least(cfg.burst::double precision,
                     rb.tokens + greatest(0, extract(epoch FROM as_of - rb.refreshed_at)) * 1000
                                 * cfg.allowed / cfg.per_ms) AS tokens_now
        FROM __schema__.rate_buckets rb
        WHERE rb.name = i.rate_limit AND rb.partition = coalesce(i.rate_partition, '')
    ) b ON true
    WHERE i.status = 'available' AND i.run_at <= as_of AND i.rate_limit IS NOT NULL
      AND (cfg.name IS NULL OR i.weight > cfg.burst OR b.tokens_now < i.weight)
    UNION ALL
    SELECT 40, 'queue', NULL, format('due; waiting for a free slot on queue %L', i.queue)
    WHERE i.status = 'available' AND i.run_at <= as_of
) c
ORDER BY c.rank
LIMIT 1
$fn$;

-- Every instance with why it waits, at the database's now (plain SQL's `blocked_by`).
CREATE OR REPLACE VIEW __schema__.instances_explained AS
SELECT i.*, b.reason AS blocked_reason, b.until AS blocked_until, b.detail AS blocked_detail
FROM __schema__.instances i
LEFT JOIN LATERAL __schema__.blocked_by(i, now()) b ON true;

INSERT INTO __schema__.meta (version) VALUES (1)
ON CONFLICT (singleton) DO NOTHING;
