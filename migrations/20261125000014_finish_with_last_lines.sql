-- A run's last batch of output lines is written by its finish, in the same transaction as the
-- closing event: one commit fewer per job (issue 7, figure 2). The lines go before the closing
-- event, so ids and seq keep the order the worker saw. The finish returns only the new status;
-- the worker used to read the whole job back after it, a second round trip for a log line.
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
    p_payloads jsonb[]
) RETURNS text AS $$
DECLARE
    v_attempts integer;
    v_max integer;
    v_status text;
    v_kind text;
    v_error text;
    v_run_after timestamptz;
    v_payload jsonb;
    v_workspace uuid;
    v_project uuid;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT attempts, max_attempts, workspace_id, project_id
    INTO v_attempts, v_max, v_workspace, v_project FROM jobs
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    CASE p_end
        WHEN 'succeeded' THEN
            v_status := 'succeeded'; v_kind := 'job_succeeded'; v_error := NULL;
        WHEN 'cancelled' THEN
            v_status := 'cancelled'; v_kind := 'job_cancelled'; v_error := 'cancelled';
        WHEN 'released' THEN
            v_status := 'queued'; v_kind := 'job_retry_scheduled'; v_error := p_error;
        WHEN 'failed' THEN
            v_error := p_error;
            IF p_retryable AND v_attempts < v_max THEN
                v_status := 'queued'; v_kind := 'job_retry_scheduled';
            ELSE
                v_status := 'failed'; v_kind := 'job_failed';
            END IF;
        ELSE
            RAISE EXCEPTION 'otter_finish_run: unknown end %', p_end USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    UPDATE jobs SET status = v_status, exit_code = p_exit_code, error = v_error,
            attempts = CASE WHEN p_end = 'released' THEN attempts - 1 ELSE attempts END,
            worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
            run_after = CASE WHEN v_status = 'queued' THEN now() + p_retry_delay_ms * interval '1 millisecond' ELSE run_after END,
            finished_at = CASE WHEN v_status = 'queued' THEN NULL ELSE now() END
    WHERE id = p_id
    RETURNING run_after INTO v_run_after;
    IF p_has_output THEN
        INSERT INTO job_outputs (job_id, final_text, usage, cost, outcome, stop_reason, export)
        VALUES (p_id, p_final_text, p_usage, p_cost, p_outcome, p_stop_reason, p_export)
        ON CONFLICT (job_id) DO UPDATE SET final_text = EXCLUDED.final_text, usage = EXCLUDED.usage,
            cost = EXCLUDED.cost, outcome = EXCLUDED.outcome, stop_reason = EXCLUDED.stop_reason,
            export = EXCLUDED.export;
    END IF;
    v_payload := jsonb_build_object('attempt', v_attempts, 'exit_code', p_exit_code, 'error', v_error);
    IF v_status = 'queued' THEN
        v_payload := v_payload || jsonb_build_object(
            'next_attempt_at', to_char(v_run_after AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'max_attempts', v_max,
            'attempt_counted', p_end <> 'released');
    END IF;
    IF jsonb_typeof(p_details) = 'object' THEN
        v_payload := v_payload || p_details;
    END IF;
    -- The last lines, then the closing event, in one insert.
    PERFORM otter_insert_events(p_id, v_workspace, v_project,
        coalesce(p_kinds, '{}') || v_kind, coalesce(p_payloads, '{}') || v_payload);
    RETURN v_status;
END;
$$ LANGUAGE plpgsql;

-- The 15-argument form of migration 13 stays for workers not yet upgraded (a rolling upgrade
-- runs both), as a call of the new one without lines.
CREATE OR REPLACE FUNCTION otter_finish_run(
    p_id uuid, p_lease_token uuid, p_end text, p_retryable boolean, p_error text,
    p_exit_code integer, p_retry_delay_ms double precision, p_details jsonb,
    p_has_output boolean, p_final_text text, p_usage jsonb, p_cost double precision,
    p_outcome text, p_stop_reason text, p_export jsonb
) RETURNS text AS $$
    SELECT otter_finish_run(p_id, p_lease_token, p_end, p_retryable, p_error, p_exit_code,
        p_retry_delay_ms, p_details, p_has_output, p_final_text, p_usage, p_cost, p_outcome,
        p_stop_reason, p_export, '{}'::text[], '{}'::jsonb[]);
$$ LANGUAGE sql;
