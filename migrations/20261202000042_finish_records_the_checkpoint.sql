-- The checkpoint taken after a run is recorded by the finish itself (issue 16): one commit a
-- job fewer, measured by the throughput benchmark (docs/benchmarks-notes.md, fifth round).
-- `otter_finish_run` takes `p_checkpoint`, `{"after_id", "error", "files_changed", "additions",
-- "deletions"}` (NULL: no checkpoint to record, the job has none from before its run), written
-- to `job_checkpoints` under the same lease check as the rest of the finish. Otherwise it is
-- migration 40's. Its 17-argument form and `otter_record_checkpoint_after` are dropped.

DROP FUNCTION otter_finish_run(uuid, uuid, text, boolean, text, integer, double precision, jsonb,
    boolean, text, jsonb, double precision, text, text, jsonb, text[], jsonb[]);
DROP FUNCTION otter_record_checkpoint_after(uuid, uuid, uuid, text, bigint, bigint, bigint);

CREATE FUNCTION otter_finish_run(
    p_id uuid,
    p_lease_token uuid,
    p_end text,
    p_retryable boolean,
    p_error text,
    p_exit_code integer,
    p_retry_delay_ms double precision,
    p_details jsonb,
    p_has_output boolean,
    p_final_text text,
    p_usage jsonb,
    p_cost double precision,
    p_outcome text,
    p_stop_reason text,
    p_export jsonb,
    p_kinds text[],
    p_payloads jsonb[],
    p_checkpoint jsonb
) RETURNS text AS $$
DECLARE
    v jobs;
BEGIN
    IF p_end IS NULL OR p_end NOT IN ('succeeded', 'failed', 'cancelled', 'released') THEN
        RAISE EXCEPTION 'otter_finish_run: unknown end %', p_end USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM otter_lock_job_events(p_id);
    SELECT * INTO v FROM jobs
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_checkpoint IS NOT NULL THEN
        UPDATE job_checkpoints SET after_id = (p_checkpoint->>'after_id')::uuid,
               error = coalesce(p_checkpoint->>'error', CASE WHEN before_id IS NULL THEN error END),
               files_changed = (p_checkpoint->>'files_changed')::bigint,
               additions = (p_checkpoint->>'additions')::bigint,
               deletions = (p_checkpoint->>'deletions')::bigint
        WHERE job_id = p_id;
    END IF;
    IF coalesce(array_length(p_kinds, 1), 0) > 0 THEN
        PERFORM otter_insert_events(p_id, v.workspace_id, v.project_id, p_kinds, p_payloads);
    END IF;
    IF p_has_output THEN
        INSERT INTO job_outputs (job_id, final_text, usage, cost, outcome, stop_reason, export)
        VALUES (p_id, p_final_text, p_usage, p_cost, p_outcome, p_stop_reason, p_export)
        ON CONFLICT (job_id) DO UPDATE SET final_text = EXCLUDED.final_text, usage = EXCLUDED.usage,
            cost = EXCLUDED.cost, outcome = EXCLUDED.outcome, stop_reason = EXCLUDED.stop_reason,
            export = EXCLUDED.export;
    END IF;
    IF jsonb_typeof(p_export->'session_id') = 'string' THEN
        UPDATE jobs SET session_id = p_export->>'session_id' WHERE id = p_id;
    END IF;
    RETURN otter_end_run(v, p_end, p_retryable, p_error, p_exit_code, p_retry_delay_ms,
        CASE WHEN jsonb_typeof(p_details) = 'object' THEN p_details->'setup' END);
END;
$$ LANGUAGE plpgsql;
