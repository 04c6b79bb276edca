-- Schema v3: `instances_ended` skips its statements when there is nothing but the
-- announcement to do. The function is replaced with the same arguments, result, effects and
-- locks (0.1.0 engines, which call it too, see no difference): only the common case, ended
-- instances with no live child, no inbox and no parent, is found by one read of three index
-- probes per id instead of running the cascade's recursive UPDATE, the inbox DELETE and the
-- parents' UPDATE (each of which opens every index of its table) to find nothing. Measured
-- on w2: see docs/performance.md. One transaction; repeatable (CREATE OR REPLACE).

-- What 0001_initial.sql says of this function holds, in the same order:
--   1. live descendants are cancelled with their ancestor (their late commits are stale);
--   2. the inboxes of every ended instance are purged;
--   3. each ended child counts its live parent down once; a waiting parent whose count
--      reaches zero becomes due at `t` and its queue is announced;
--   4. every ended instance is announced ('t:<id>') for result() waiters.
-- Lock order and the cascade's rounds: as there (the fast path locks nothing).
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
    -- Nothing but the announcement to do (no live child, no inbox, no parent: a job, a
    -- workflow that spawned nothing), found by one read. The statements below, each in a
    -- later snapshot, would find the same: children are inserted by a spawn, which updates
    -- their parent (a row the caller holds locked) before it commits; a delivery locks the
    -- instance it stores a signal for; an instance's parent never changes.
    IF NOT EXISTS (SELECT 1 FROM __schema__.instances c
                   WHERE c.parent_id = ANY (ended)
                     AND c.status IN ('available', 'executing', 'awaiting', 'waiting'))
       AND NOT EXISTS (SELECT 1 FROM __schema__.signals s WHERE s.instance_id = ANY (ended))
       AND NOT EXISTS (SELECT 1 FROM __schema__.instances e
                       WHERE e.id = ANY (ended) AND e.parent_id IS NOT NULL) THEN
        PERFORM pg_notify(channel, 't:' || e) FROM unnest(ended) AS e;
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
