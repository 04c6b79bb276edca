-- Schema v1 of gendurable. Pre-1.0 this file is edited in place; it is idempotent so that
-- applying it twice changes nothing. `__schema__` is replaced by the validated, quoted schema
-- name before it runs, under an advisory lock keyed by the schema (see db/migrator.py).

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

CREATE TABLE IF NOT EXISTS __schema__.instances (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow text NOT NULL,
    queue text NOT NULL,
    step text NOT NULL,
    state jsonb,
    status __schema__.status NOT NULL DEFAULT 'available',
    attempt int NOT NULL DEFAULT 0,
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
    finished_at timestamptz
);

CREATE TABLE IF NOT EXISTS __schema__.signals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id bigint NOT NULL REFERENCES __schema__.instances (id) ON DELETE CASCADE,
    name text NOT NULL,
    payload jsonb,
    received_at timestamptz NOT NULL
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
-- lock are seen and cancelled too. Returns the ids cancelled by cascade.
CREATE OR REPLACE FUNCTION __schema__.instances_ended(
    ended bigint[], t timestamptz, channel text
) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    cascaded bigint[];
    everything bigint[];
    announced bigint;
BEGIN
    IF ended IS NULL OR cardinality(ended) = 0 THEN
        RETURN '{}';
    END IF;
    WITH RECURSIVE tree AS (
        SELECT c.id FROM __schema__.instances c
        WHERE c.parent_id = ANY (ended)
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
        SET status = 'cancelled', locked_by = NULL, locked_until = NULL, await_names = NULL,
            await_deadline = NULL, throttled = false, finished_at = t, updated_at = t
        FROM locked
        WHERE i.id = locked.id
        RETURNING i.id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO cascaded FROM cancelled;
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

INSERT INTO __schema__.meta (version) VALUES (1)
ON CONFLICT (singleton) DO NOTHING;
