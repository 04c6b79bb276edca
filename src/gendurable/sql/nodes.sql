-- Nodes: the running engines of a schema (maintenance/nodes.py).

-- name: node_register
-- A starting engine records what it serves; also run again by a node whose row was pruned
-- (its heartbeats failed for longer than its expiry). `started_at` survives a re-register.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
INSERT INTO __schema__.nodes AS n (
    id, name, host, pid, schema, queues, workflows, version, heartbeat, started_at,
    last_seen, expires_at)
SELECT :id, :name, :host, :pid, :schema, :queues::jsonb, :workflows::jsonb, :version,
       :heartbeat::interval, now.t, now.t, now.t + :ttl::interval
FROM now
ON CONFLICT (id) DO UPDATE
SET queues = excluded.queues, workflows = excluded.workflows, version = excluded.version,
    heartbeat = excluded.heartbeat, last_seen = excluded.last_seen,
    expires_at = excluded.expires_at
RETURNING n.id;

-- name: node_beat
-- Heartbeat of one node: no row means it was pruned, and the caller registers it again.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t)
UPDATE __schema__.nodes n
SET last_seen = now.t, expires_at = now.t + :ttl::interval
FROM now
WHERE n.id = :id
RETURNING n.id;

-- name: node_prune
-- Delete nodes past their expiry (engines that died without stopping). A separate statement
-- from the heartbeat, and SKIP LOCKED in id order: two nodes pruning each other while each
-- refreshes its own row would otherwise deadlock.
WITH now AS (SELECT coalesce(:now::timestamptz, now()) AS t),
dead AS (
    SELECT n.id FROM __schema__.nodes n, now
    WHERE n.expires_at < now.t
    ORDER BY n.id
    FOR UPDATE SKIP LOCKED
)
DELETE FROM __schema__.nodes n USING dead
WHERE n.id = dead.id
RETURNING n.id, n.name, n.host, n.pid, n.last_seen;

-- name: node_remove
-- A stopping engine deletes its own row.
DELETE FROM __schema__.nodes WHERE id = :id RETURNING id;

-- name: nodes_live
-- The nodes alive at :now (NULL: the database's now), for `gendurable status` and `signal`.
SELECT id, name, host, pid, schema, queues, workflows, version, heartbeat, started_at,
       last_seen, expires_at, coalesce(:now::timestamptz, now()) - last_seen AS silent_for
FROM __schema__.nodes
WHERE expires_at >= coalesce(:now::timestamptz, now())
ORDER BY name, host, pid, id;
