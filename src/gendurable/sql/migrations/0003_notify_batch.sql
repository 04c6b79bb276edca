-- Ends announced in batches: `instances_ended_batched`, the terminal effects of
-- `instances_ended` (0001) with one notification per batch of ended ids instead of one per
-- id. Expand only: `instances_ended` stays as released, for the engines of 0.1.0.
CREATE OR REPLACE FUNCTION __schema__.instances_ended_batched(
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

    PERFORM pg_notify(channel, 't:' || string_agg(e::text, ',' ORDER BY e))
    FROM (SELECT e, (row_number() OVER () - 1) / 256 AS chunk FROM unnest(everything) AS e) c
    GROUP BY c.chunk;
    RETURN cascaded;
END
$fn$;
