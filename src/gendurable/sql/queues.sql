-- Queues: durable pause and resume (the table `paused_queues`, the function `queue_paused`).

-- name: queue_pause
-- Pause :queue for every engine (:by says who): once this statement has committed, no
-- statement starts a new step of it. The exclusive advisory lock is the one `queue_paused`
-- tries shared: taking it waits for every statement still starting steps of the queue to
-- commit, and while it is held they start none; so when this returns, nothing that missed the
-- pause is in flight. The lock comes before the insert (a CTE the insert reads). Pausing a
-- paused queue keeps its first `paused_at` and `paused_by` (`paused` is then false): ON
-- CONFLICT DO UPDATE (a no-op) returns that row even when it committed while this statement
-- waited for the lock. Announced ('p:<queue>') so that every listening engine stops trying at
-- once.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
locked AS (
    SELECT pg_advisory_xact_lock(hashtextextended('gendurable:pause:__schema__:' || :queue, 0))
),
ins AS (
    INSERT INTO __schema__.paused_queues AS p (queue, paused_at, paused_by)
    SELECT :queue, now.t, :by FROM now, locked
    ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue
    RETURNING p.queue, p.paused_at, p.paused_by, (p.xmax = 0) AS paused
)
SELECT ins.*, pg_notify(__channel__, 'p:' || ins.queue) AS notified FROM ins;

-- name: queue_resume
-- Resume :queue: its due rows are claimed again at once by the engines that listen
-- ('r:<queue>' wakes them), by the others at their next poll. No row: it was not paused.
WITH gone AS (
    DELETE FROM __schema__.paused_queues WHERE queue = :queue
    RETURNING queue, paused_at, paused_by
)
SELECT gone.*, pg_notify(__channel__, 'r:' || gone.queue) AS notified FROM gone;

-- name: queue_pauses
-- Every paused queue, in name order: what an engine loads at start, `status` and the
-- dashboard show.
SELECT queue, paused_at, paused_by FROM __schema__.paused_queues ORDER BY queue;
