-- Schedules (`gd.Schedule`): declared by engines, advanced by their tickers, listed, paused.
-- Every statement takes `now` as a nullable parameter: NULL lets PostgreSQL own time
-- (production); the manual clock passes its own time (tests).

-- name: schedule_declare
-- An engine's schedules, at its start (:names, :workflows, :specs parallel: name, workflow,
-- definition; :node the node). A new name starts from now: `next_at` just after the
-- declaration, so no tick from before it existed runs. A changed definition (or workflow)
-- starts from now as well: the old definition's missed ticks are not caught up under the new
-- one. Declaring revives a disabled schedule and keeps its `next_at`, so the ticks it missed
-- while no engine ran it follow its `missed` policy. Rows go in ordered by name: engines
-- declaring at once, and tickers (which lock in name order too), take the row locks in one
-- order. `previous` is the definition the row held before (NULL for a new one); `fresh` says
-- the row starts from now, and `now` is the declaration's time: the engine then sets the first
-- tick (`schedule_first`), which only it can compute.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
declared AS (
    SELECT d.name, d.workflow, d.spec
    FROM unnest(:names::text[], :workflows::text[], :specs::jsonb[]) AS d(name, workflow, spec)
),
old AS (
    SELECT s.name, s.workflow, s.spec, s.disabled_at FROM __schema__.schedules s
    WHERE s.name = ANY (:names::text[])
),
upserted AS (
    INSERT INTO __schema__.schedules AS s (
        name, workflow, spec, next_at, declared_by, refreshed_at, created_at, updated_at)
    SELECT d.name, d.workflow, d.spec, now.t + interval '1 microsecond', :node::text, now.t,
           now.t, now.t
    FROM declared d, now
    ORDER BY d.name COLLATE "C"
    ON CONFLICT (name) DO UPDATE
    SET next_at = CASE WHEN s.spec = excluded.spec AND s.workflow = excluded.workflow
                       THEN s.next_at ELSE excluded.next_at END,
        workflow = excluded.workflow,
        spec = excluded.spec,
        declared_by = excluded.declared_by,
        refreshed_at = excluded.refreshed_at,
        disabled_at = NULL,
        updated_at = excluded.updated_at
    RETURNING s.name, s.next_at
)
SELECT u.name, u.next_at, o.spec AS previous, o.workflow AS previous_workflow,
       o.disabled_at AS was_disabled_at, u.next_at = now.t + interval '1 microsecond' AS fresh,
       now.t AS now
FROM upserted u LEFT JOIN old o ON o.name = u.name, now
ORDER BY u.name;

-- name: schedule_first
-- The first tick of schedules a declaration started from now (:names, :declared the `next_at`
-- the declaration wrote, :first_ats their first tick, parallel). Only a row still as declared
-- changes: one another engine declared or advanced since is left as that engine made it.
UPDATE __schema__.schedules s
SET next_at = f.first_at
FROM unnest(:names::text[], :declared::timestamptz[], :first_ats::timestamptz[])
     AS f(name, declared, first_at)
WHERE s.name = f.name AND s.next_at = f.declared;

-- name: schedule_refresh
-- The declaring engines' heartbeat on their schedules (:names): mark them still declared, at
-- most once per :every (a no-op otherwise, so the frequent call writes nothing), reviving one
-- that was disabled. A row a ticker holds is skipped: the next refresh comes long before the
-- grace period ends. Ordered SKIP LOCKED, as every maintenance writer.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
stale AS (
    SELECT s.name FROM __schema__.schedules s, now
    WHERE s.name = ANY (:names::text[])
      AND (s.refreshed_at <= now.t - :every::interval OR s.disabled_at IS NOT NULL)
    ORDER BY s.name
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE __schema__.schedules s
SET refreshed_at = now.t, declared_by = :node::text, disabled_at = NULL, updated_at = now.t
FROM stale, now
WHERE s.name = stale.name
RETURNING s.name;

-- name: schedule_claim_due
-- The ticker's pick: the due schedules among the engine's own (:names, :specs its definitions,
-- parallel), locked until the transaction that starts their ticks and advances them ends. Only
-- a row whose stored definition is the engine's own: during a deploy that changes a schedule,
-- engines of the old code leave it to the new. SKIP LOCKED: a schedule another engine is
-- advancing is skipped, and when that engine commits first, the recheck of the row's new
-- version (READ COMMITTED) finds it no longer due, so a tick never starts twice. Paused rows
-- never tick. `now` comes back: the ticks are computed against the database's.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
mine AS (SELECT * FROM unnest(:names::text[], :specs::jsonb[]) AS m(name, spec))
SELECT s.name, s.next_at, now.t AS now
FROM __schema__.schedules s
JOIN mine m ON m.name = s.name AND m.spec = s.spec, now
WHERE s.next_at <= now.t AND NOT s.paused
ORDER BY s.name
LIMIT :limit
FOR UPDATE OF s SKIP LOCKED;

-- name: schedule_advance
-- Move schedules the same transaction claimed past the ticks it started (:names,
-- :next_ats, :last_ats, :instance_ids parallel: name, next tick, the last tick started or
-- NULL, its instance or NULL).
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
UPDATE __schema__.schedules s
SET next_at = a.next_at,
    last_at = coalesce(a.last_at, s.last_at),
    last_instance_id = CASE WHEN a.last_at IS NULL THEN s.last_instance_id
                            ELSE a.instance_id END,
    updated_at = now.t
FROM unnest(:names::text[], :next_ats::timestamptz[], :last_ats::timestamptz[],
            :instance_ids::bigint[])
         AS a(name, next_at, last_at, instance_id), now
WHERE s.name = a.name;

-- name: schedule_disable
-- Mark disabled the schedules no running engine refreshed for the grace period (:grace): no
-- engine declares them any more. They stay (with their history) until one declares them
-- again. A schedule some engine declares is refreshed many times within the grace period,
-- so it is never disabled. Ordered SKIP LOCKED, in batches of :limit.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
gone AS (
    SELECT s.name FROM __schema__.schedules s, now
    WHERE s.disabled_at IS NULL AND s.refreshed_at < now.t - :grace::interval
    ORDER BY s.name
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE __schema__.schedules s
SET disabled_at = now.t, updated_at = now.t
FROM gone, now
WHERE s.name = gone.name
RETURNING s.name, s.workflow, s.refreshed_at;

-- name: schedule_pause
-- Pause (:paused true) or resume (:paused false) one schedule; NULL when there is none by
-- that name.
-- A resumed schedule starts from now: the ticks that came due while it was paused do not
-- run (`next_at` moves up to now; the next ticker run finds the next tick).
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
UPDATE __schema__.schedules s
SET paused = :paused::boolean,
    next_at = CASE WHEN NOT :paused::boolean AND s.paused THEN greatest(s.next_at, now.t)
                   ELSE s.next_at END,
    updated_at = now.t
FROM now
WHERE s.name = :name
RETURNING s.name, s.workflow, s.paused;

-- name: schedules_list
-- Every schedule (of :workflow, or all when NULL), with its last tick's instance: key and
-- status, NULL once garbage collection removed it.
SELECT s.name, s.workflow, s.spec, s.next_at, s.last_at, s.last_instance_id,
       i.key AS last_key, i.status::text AS last_status, s.paused, s.disabled_at,
       s.declared_by, s.refreshed_at, s.created_at
FROM __schema__.schedules s
LEFT JOIN __schema__.instances i ON i.id = s.last_instance_id
WHERE :workflow::text IS NULL OR s.workflow = :workflow
ORDER BY s.name;
