-- Garbage collection: terminal instances past their retention, idle rate buckets, configs no
-- engine refreshes. Each statement reads at most one bounded batch of keys through an index,
-- in index order from a cursor the collector passes on (`after_*`), and deletes with ordered
-- FOR UPDATE SKIP LOCKED: collectors on many nodes never wait on one another (nor on a claim
-- or a signal holding a row) and a row is deleted once.

-- name: terminal_sweep
-- Delete terminal instances that finished more than :retention ago, among the next :limit
-- of the instances_terminal index after the cursor (:after_finished_at, :after_id). Their
-- inbox rows go with them (ON DELETE CASCADE), and their idempotency keys (below). A child
-- whose parent is still live stays: the parent's next step reads its children's results.
-- Returns the counts and the last key read (the next cursor). The cutoff is an expression
-- of the parameters, not a CTE, so that it bounds the index scan.
WITH scanned AS (
    SELECT i.id, i.finished_at
    FROM __schema__.instances i
    WHERE i.status IN __terminal__
      AND i.finished_at < coalesce(:now::timestamptz, now()) - :retention::interval
      AND (i.finished_at, i.id)
          > (coalesce(:after_finished_at::timestamptz, '-infinity'::timestamptz),
             coalesce(:after_id::bigint, 0))
    ORDER BY i.finished_at, i.id
    LIMIT :limit
),
doomed AS (
    -- The conditions are repeated here so that they are checked again on the row version
    -- the lock returns (an instance revived since the scan is not deleted).
    SELECT i.id
    FROM __schema__.instances i
    WHERE i.id IN (SELECT s.id FROM scanned s)
      AND i.status IN __terminal__
      AND i.finished_at < coalesce(:now::timestamptz, now()) - :retention::interval
      AND NOT EXISTS (
          SELECT 1 FROM __schema__.instances p
          WHERE p.id = i.parent_id
            AND p.status IN __live__
      )
    ORDER BY i.id
    FOR UPDATE OF i SKIP LOCKED
),
deleted AS (
    DELETE FROM __schema__.instances i
    USING doomed d
    WHERE i.id = d.id
    RETURNING i.id
),
-- Their signals' idempotency keys go too (`signal_keys` has no foreign key, see the
-- migration): nothing to do, and nothing read but an empty probe, when none had keys.
keys AS (
    DELETE FROM __schema__.signal_keys k
    USING deleted d
    WHERE k.instance_id = d.id
    RETURNING k.instance_id
),
last AS (
    SELECT s.finished_at, s.id FROM scanned s ORDER BY s.finished_at DESC, s.id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM deleted)::int AS deleted,
       (SELECT count(*) FROM scanned)::int AS scanned,
       last.finished_at AS last_finished_at,
       last.id AS last_id
FROM (VALUES (1)) AS one (x)
LEFT JOIN last ON true;

-- name: bucket_sweep
-- Delete, among the next :limit buckets after the cursor (:after_name, :after_partition),
-- those that hold no information: full again by now (tokens + elapsed x allowed / per >=
-- burst; the claim recreates a missing bucket full) or of a limit no longer configured. A
-- bucket a claim changed after the scan is checked again on the version the lock returns.
WITH scanned AS (
    SELECT b.name, b.partition
    FROM __schema__.rate_buckets b
    WHERE (b.name, b.partition)
          > (coalesce(:after_name::text, ''), coalesce(:after_partition::text, ''))
    ORDER BY b.name, b.partition
    LIMIT :limit
),
doomed AS (
    SELECT b.name, b.partition
    FROM __schema__.rate_buckets b
    JOIN scanned s ON s.name = b.name AND s.partition = b.partition
    LEFT JOIN __schema__.rate_configs c ON c.name = b.name
    WHERE c.name IS NULL
       OR b.tokens
          + extract(epoch FROM coalesce(:now::timestamptz, now()) - b.refreshed_at)::float8
            * 1000.0::float8 * c.allowed / c.per_ms
          >= c.burst
    ORDER BY b.name, b.partition
    FOR UPDATE OF b SKIP LOCKED
),
deleted AS (
    DELETE FROM __schema__.rate_buckets b
    USING doomed d
    WHERE b.name = d.name AND b.partition = d.partition
    RETURNING b.name
),
last AS (
    SELECT s.name, s.partition FROM scanned s ORDER BY s.name DESC, s.partition DESC LIMIT 1
)
SELECT (SELECT count(*) FROM deleted)::int AS deleted,
       (SELECT count(*) FROM scanned)::int AS scanned,
       last.name AS last_name,
       last.partition AS last_partition
FROM (VALUES (1)) AS one (x)
LEFT JOIN last ON true;

-- name: rate_config_sweep
-- Delete up to :limit configs that no engine refreshed for :ttl: no running engine configures
-- them. Their buckets go with the next bucket_sweep. A refresh racing this recreates the row.
WITH stale AS (
    SELECT c.name
    FROM __schema__.rate_configs c
    WHERE c.updated_at < coalesce(:now::timestamptz, now()) - :ttl::interval
    ORDER BY c.name
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
DELETE FROM __schema__.rate_configs c
USING stale s
WHERE c.name = s.name
RETURNING c.name;
