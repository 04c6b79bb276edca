-- Settings of the engine's own connections, made once when each opens.

-- name: engine_plans
SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
       set_config('enable_seqscan', 'off', false);
