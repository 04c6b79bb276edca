-- Rate-limit configuration: written by every engine at start, refreshed by the collector of
-- every engine that runs queues. Both writers take rows in name order (server-side, from
-- unnest), so engines starting together never deadlock on the config rows.

-- name: rate_config_write
-- Store the limits of one engine (:names, :allowed, :per_ms, :burst, parallel arrays); the
-- last start wins. Returns each name with the values stored before (NULL when it was new),
-- read from the statement's snapshot: a config another engine wrote in the same instant may
-- be replaced without a warning, and the last writer still wins.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
given AS (
    SELECT g.name, g.allowed, g.per_ms, g.burst
    FROM unnest(:names::text[], :allowed::int[], :per_ms::bigint[], :burst::int[])
         AS g(name, allowed, per_ms, burst)
),
before AS (
    SELECT c.name, c.allowed, c.per_ms, c.burst
    FROM __schema__.rate_configs c
    WHERE c.name = ANY (:names::text[])
),
written AS (
    INSERT INTO __schema__.rate_configs AS c (name, allowed, per_ms, burst, updated_at)
    SELECT g.name, g.allowed, g.per_ms, g.burst, now.t
    FROM given g, now
    ORDER BY g.name
    ON CONFLICT (name) DO UPDATE
    SET allowed = excluded.allowed, per_ms = excluded.per_ms, burst = excluded.burst,
        updated_at = excluded.updated_at
    RETURNING c.name
)
SELECT w.name, b.allowed AS old_allowed, b.per_ms AS old_per_ms, b.burst AS old_burst
FROM written w
LEFT JOIN before b ON b.name = w.name
ORDER BY w.name;

-- name: rate_config_refresh
-- Mark the limits of a running engine as still configured (updated_at), without changing the
-- stored values (the last start keeps winning); a config the collector removed meanwhile is
-- written again with this engine's values.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
INSERT INTO __schema__.rate_configs AS c (name, allowed, per_ms, burst, updated_at)
SELECT g.name, g.allowed, g.per_ms, g.burst, now.t
FROM unnest(:names::text[], :allowed::int[], :per_ms::bigint[], :burst::int[])
     AS g(name, allowed, per_ms, burst), now
ORDER BY g.name
ON CONFLICT (name) DO UPDATE
SET updated_at = greatest(c.updated_at, excluded.updated_at);
