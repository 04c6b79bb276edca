-- Settings of the engine's own connections, made once when each opens (db/pool.py,
-- init_engine_connection, says why; docs/performance.md, "Plans", has the measurements).

-- name: engine_plans
-- For the life of the connection (is_local false); never behind a transaction pooler.
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false);
