-- Maintenance: heartbeat, reaper, startup reclaim. Every multi-row statement claims its rows
-- with ordered FOR UPDATE SKIP LOCKED in bounded batches, so maintenance on many nodes never
-- deadlocks with itself or with the claim.

-- name: lease_extend
-- Heartbeat: extend the claims one scheduler runs in one statement, each named by its pair
-- (id, claim name) (:ids and :names, parallel arrays), each by its workflow's lease
-- (:workflows and :leases, parallel). The rows are locked in id order first, like every
-- multi-row writer, skipping the ones another transaction holds: a heartbeat never waits,
-- so it deadlocks with nothing, and a row someone keeps locked (a long transaction, an
-- operator's FOR UPDATE) does not starve the others of their extension; it is extended by
-- the first heartbeat that finds it free (or, past its lease, rescued by the reaper). A pair
-- extends only the claim it names: a row the scheduler took again under another claim name,
-- whose answer was lost (the connection dropped after it committed), is claimed by this
-- scheduler but run by nobody, and must expire so that the reaper hands it out, even while
-- an earlier run of the same row under its old name still goes on here.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
mine AS (
    SELECT i.id FROM __schema__.instances i
    WHERE i.id = ANY (:ids::bigint[]) AND i.locked_by = ANY (:names::text[])
      AND i.status = 'executing'
    ORDER BY i.id
    FOR UPDATE SKIP LOCKED
)
UPDATE __schema__.instances i
SET locked_until = now.t + l.lease
FROM now, mine, unnest(:ids::bigint[], :names::text[]) AS c(id, locked_by),
     unnest(:workflows::text[], :leases::interval[]) AS l(workflow, lease)
WHERE i.id = mine.id AND c.id = i.id AND i.locked_by = c.locked_by AND i.status = 'executing'
  AND i.workflow = l.workflow;

-- name: lease_rescue
-- Return expired claims to `available`, counting the attempt the crash used. An instance that
-- has crashed its worker on every allowed attempt ends `failed` (with the terminal effects of
-- `instances_ended`) instead of cycling through the reaper forever. Everything is taken
-- with SKIP LOCKED, the rows and then the parents such a failure counts down: a reaper never
-- waits, so it can close no cycle, and a row whose parent is busy waits for the next round.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
expired AS (
    SELECT id, parent_id, attempt + 1 >= max_attempts AS dying
    FROM __schema__.instances, now
    WHERE status = 'executing' AND locked_until < now.t
    ORDER BY locked_until, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
),
parents AS (
    SELECT p.id FROM __schema__.instances p
    WHERE p.id IN (SELECT parent_id FROM expired WHERE dying AND parent_id IS NOT NULL)
    ORDER BY p.id
    FOR UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE __schema__.instances i
    SET status = CASE WHEN i.attempt + 1 >= i.max_attempts
                      THEN 'failed'::__schema__.status
                      ELSE 'available'::__schema__.status END,
        error = CASE WHEN i.attempt + 1 >= i.max_attempts
                     THEN jsonb_build_object(
                         'type', 'crashed',
                         'message', format('step %s lost its worker on every one of %s attempts '
                                           '(last claim %s expired)', i.step, i.max_attempts,
                                           i.locked_by),
                         'step', i.step, 'attempt', i.attempt,
                         'max_attempts', i.max_attempts)
                     ELSE i.error END,
        finished_at = CASE WHEN i.attempt + 1 >= i.max_attempts THEN now.t END,
        attempt = i.attempt + 1, rescued = i.rescued + 1, run_at = now.t,
        locked_by = NULL, locked_until = NULL, updated_at = now.t
    FROM expired, now
    WHERE i.id = expired.id
      AND (NOT expired.dying OR expired.parent_id IS NULL
           OR expired.parent_id IN (SELECT id FROM parents))
    RETURNING i.id, i.workflow, i.step, i.queue, i.status::text AS status, i.parent_id,
              i.attempt
),
ended AS (
    SELECT __schema__.instances_ended(array_agg(r.id), min(now.t), __channel__) AS cascaded
    FROM rescued r, now
    WHERE r.status = 'failed'
    HAVING count(*) > 0
),
notified AS (
    SELECT pg_notify(__channel__, 'q:' || q.queue)
    FROM (SELECT DISTINCT queue FROM rescued WHERE status <> 'failed') q
)
SELECT r.*, (SELECT count(*) FROM notified) AS notified,
       (SELECT cardinality(cascaded) FROM ended) AS cascaded
FROM rescued r;

-- name: claims_reclaim
-- Startup reclaim: release, at once, the claims a dead predecessor of this scheduler left
-- (same engine, queue and host: `locked_by` prefix :prefix). The lease must have expired,
-- so a live process that happens to share the prefix (same hostname and pid in two
-- containers) never loses its work.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
stale AS (
    SELECT id FROM __schema__.instances, now
    WHERE status = 'executing' AND locked_until < now.t
      -- exactly "<prefix><pid>-<unique>": host "vm" must not match the claims of "vm-2"
      AND starts_with(locked_by, :prefix)
      AND substr(locked_by, length(:prefix) + 1) ~ '^[0-9]+-[^-]+$'
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
UPDATE __schema__.instances i
SET status = 'available', attempt = i.attempt + 1, rescued = i.rescued + 1,
    locked_by = NULL, locked_until = NULL, run_at = now.t, updated_at = now.t
FROM stale, now
WHERE i.id = stale.id AND i.attempt + 1 < i.max_attempts
RETURNING i.id, i.workflow, i.step;
