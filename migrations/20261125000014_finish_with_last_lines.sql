-- A run's last batch of output lines is written by its finish, in the same transaction as the
-- closing event: one commit fewer per job (issue 7, figure 2). The lines go before the closing
-- event, so ids and seq keep the order the worker saw. This form takes the lines and hands the
-- rest to the 15-argument `otter_finish_run` of migration 13, which stays the one place that
-- decides how a run ends (and still serves workers not yet upgraded).
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
    v_workspace uuid;
    v_project uuid;
BEGIN
    IF coalesce(array_length(p_kinds, 1), 0) > 0 THEN
        -- Fenced like the finish itself: a stale lease writes nothing.
        PERFORM otter_lock_job_events(p_id);
        SELECT workspace_id, project_id INTO v_workspace, v_project FROM jobs
        WHERE id = p_id AND lease_token = p_lease_token AND status = 'running' FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        PERFORM otter_insert_events(p_id, v_workspace, v_project, p_kinds, p_payloads);
    END IF;
    RETURN otter_finish_run(p_id, p_lease_token, p_end, p_retryable, p_error, p_exit_code,
        p_retry_delay_ms, p_details, p_has_output, p_final_text, p_usage, p_cost, p_outcome,
        p_stop_reason, p_export);
END;
$$ LANGUAGE plpgsql;
