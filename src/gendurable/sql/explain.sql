-- blocked_by: why an instance waits (the function `blocked_by` and the view
-- `instances_explained` are in the migration).

-- name: instance_explain
-- One instance with everything `get()` and `gendurable show` report, and why it waits,
-- evaluated at :now (the engine clock's now; NULL: the database's).
SELECT i.id, i.workflow, i.key, i.status::text, i.step, i.attempt, i.max_attempts, i.state,
       i.result, i.error, i.queue, i.priority, i.run_at, i.locked_by, i.locked_until,
       i.await_names, i.await_deadline, i.pending_children, i.parent_id, i.concurrency_key,
       i.rate_limit, i.rate_partition, i.weight, i.rescued, i.inserted_at, i.updated_at,
       i.finished_at,
       b.reason AS blocked_reason, b.until AS blocked_until, b.detail AS blocked_detail,
       i.state_version
FROM __schema__.instances i
LEFT JOIN LATERAL __schema__.blocked_by(i, coalesce(:now::timestamptz, now())) b ON true
WHERE i.id = :id;
