-- Watchdogs (issue 19, parts 1 and 2).
--
-- * A run stopped by the silence watchdog ends `failed`, retried while attempts remain, with the
--   reason `silent`: the worker passes `reason` in the finish's details, and `otter_end_run`
--   names it in `job_retry_scheduled` (`reason`, instead of `run_failed`) and `job_failed`
--   (`reason`, new, null for other failures).
-- * A run Otter ended after vibe answered but did not exit has `forced_exit` in its output
--   (`job_outputs.forced_exit`, the finish's details `forced_exit`), read with the job
--   (`otter_job_rows.forced_exit`, appended).

ALTER TABLE job_outputs ADD COLUMN forced_exit boolean NOT NULL DEFAULT false;

-- Migration 30's, with `p_reason` (NULL: as before).
DROP FUNCTION otter_end_run(jobs, text, boolean, text, integer, double precision, jsonb);
CREATE FUNCTION otter_end_run(
    p_job jobs,
    p_end text,
    p_retryable boolean,
    p_error text,
    p_exit_code integer,
    p_retry_delay_ms double precision,
    p_setup jsonb,
    p_reason text DEFAULT NULL
) RETURNS text AS $$
DECLARE
    v_status text;
    v_kind text;
    v_error text;
    v_counted boolean := p_end <> 'released';
    v_run_after timestamptz;
    v_payload jsonb;
BEGIN
    IF p_end IS NULL OR p_end NOT IN ('succeeded', 'failed', 'cancelled', 'released', 'lost') THEN
        RAISE EXCEPTION 'otter_end_run: unknown end %', p_end USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_status := CASE
        WHEN p_end = 'succeeded' THEN 'succeeded'
        WHEN p_end = 'cancelled' OR p_job.cancel_requested THEN 'cancelled'
        WHEN p_end = 'released' THEN 'queued'
        WHEN p_retryable AND p_job.attempts < p_job.max_attempts THEN 'queued'
        ELSE 'failed'
    END;
    v_kind := CASE v_status
        WHEN 'succeeded' THEN 'job_succeeded'
        WHEN 'cancelled' THEN 'job_cancelled'
        WHEN 'queued' THEN 'job_retry_scheduled'
        ELSE 'job_failed'
    END;
    v_error := CASE v_status WHEN 'succeeded' THEN NULL WHEN 'cancelled' THEN 'cancelled' ELSE p_error END;
    UPDATE jobs SET status = v_status, exit_code = p_exit_code, error = v_error,
            attempts = CASE WHEN v_counted THEN attempts ELSE attempts - 1 END,
            worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
            run_after = CASE WHEN v_status = 'queued'
                             THEN now() + p_retry_delay_ms * interval '1 millisecond'
                             ELSE run_after END,
            finished_at = CASE WHEN v_status = 'queued' THEN NULL ELSE now() END
    WHERE id = p_job.id
    RETURNING run_after INTO v_run_after;
    -- One payload shape per kind (docs/api.md, "Event kinds").
    v_payload := jsonb_build_object('attempt', p_job.attempts, 'exit_code', p_exit_code,
        'error', v_error, 'worker_id', p_job.worker_id);
    CASE v_kind
        WHEN 'job_succeeded' THEN
            v_payload := v_payload || jsonb_build_object('setup', coalesce(p_setup, 'null'::jsonb));
        WHEN 'job_cancelled' THEN
            v_payload := v_payload || jsonb_build_object('while', 'running');
        WHEN 'job_retry_scheduled' THEN
            v_payload := v_payload || jsonb_build_object(
                'next_attempt_at', to_char(v_run_after AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'max_attempts', p_job.max_attempts,
                'attempt_counted', v_counted,
                'reason', CASE p_end WHEN 'failed' THEN coalesce(p_reason, 'run_failed')
                                     WHEN 'lost' THEN 'worker_lost'
                                     ELSE coalesce(p_error, 'worker_shutdown') END);
        ELSE
            v_payload := v_payload || jsonb_build_object('reason', p_reason);
    END CASE;
    PERFORM otter_insert_events(p_job.id, p_job.workspace_id, p_job.project_id, ARRAY[v_kind],
        ARRAY[v_payload]);
    RETURN v_status;
END;
$$ LANGUAGE plpgsql;

-- Migration 42's, storing the output's `forced_exit` and passing the details' `reason`.
CREATE OR REPLACE FUNCTION otter_finish_run(
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
    v_details jsonb := CASE WHEN jsonb_typeof(p_details) = 'object' THEN p_details END;
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
        INSERT INTO job_outputs (job_id, final_text, usage, cost, outcome, stop_reason, export,
                                 forced_exit)
        VALUES (p_id, p_final_text, p_usage, p_cost, p_outcome, p_stop_reason, p_export,
                coalesce((v_details->>'forced_exit')::boolean, false))
        ON CONFLICT (job_id) DO UPDATE SET final_text = EXCLUDED.final_text, usage = EXCLUDED.usage,
            cost = EXCLUDED.cost, outcome = EXCLUDED.outcome, stop_reason = EXCLUDED.stop_reason,
            export = EXCLUDED.export, forced_exit = EXCLUDED.forced_exit;
    END IF;
    IF jsonb_typeof(p_export->'session_id') = 'string' THEN
        UPDATE jobs SET session_id = p_export->>'session_id' WHERE id = p_id;
    END IF;
    RETURN otter_end_run(v, p_end, p_retryable, p_error, p_exit_code, p_retry_delay_ms,
        v_details->'setup', v_details->>'reason');
END;
$$ LANGUAGE plpgsql;

-- The job as the API reads it: migration 90's columns, then whether Otter ended vibe after its
-- answer (false for a job without output).
CREATE OR REPLACE VIEW otter_job_rows AS
SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
       j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after,
       j.cancel_requested, j.worker_id, j.lease_expires_at, j.created_at, j.started_at,
       j.finished_at,
       o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome,
       o.stop_reason, o.export,
       j.parent_job_id, j.session_id, j.limits, j.model,
       coalesce(j.queue_at, j.created_at) AS queue_at,
       coalesce(o.forced_exit, false) AS forced_exit
FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id;

-- The disk guard (issue 19, part 5): a worker whose workspace filesystem has less free space
-- than `OTTER_MIN_FREE_DISK` claims nothing; its heartbeat says so (`claims_paused`, why, and
-- `disk_free_bytes`, the least free of its filesystems), for `/metrics` and `/healthz`.
ALTER TABLE workers ADD COLUMN disk_free_bytes bigint, ADD COLUMN claims_paused text;
