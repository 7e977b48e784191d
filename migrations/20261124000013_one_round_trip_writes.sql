-- The hot writes of a job's life, each one statement run outside an explicit transaction: one
-- round trip and one commit instead of BEGIN, four or five statements and COMMIT. Measured on
-- the 2-core box, the worker spent most of its CPU time in the kernel sending and receiving
-- those round trips (docs/benchmarks.md, figure 2). The rules are the ones of the Rust code they
-- replace (otter_core::db::jobs), and each takes the job's event lock before its first write. Each
-- reads the job row once and hands its workspace and project to otter_insert_events.

-- Submits a job: the row and its `job_queued` event. Returns its `created_at` (which is also
-- its `run_after`): the caller knows every other column.
CREATE FUNCTION otter_insert_job(
    p_id uuid,
    p_workspace_id uuid,
    p_project_id uuid,
    p_prompt text,
    p_priority integer,
    p_max_attempts integer
) RETURNS timestamptz AS $$
DECLARE
    v_created timestamptz;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    INSERT INTO jobs (id, workspace_id, project_id, prompt, priority, max_attempts)
    VALUES (p_id, p_workspace_id, p_project_id, p_prompt, p_priority, p_max_attempts)
    RETURNING created_at INTO v_created;
    PERFORM otter_insert_events(p_id, p_workspace_id, p_project_id, ARRAY['job_queued'],
        ARRAY[jsonb_build_object('priority', p_priority, 'max_attempts', p_max_attempts)]);
    RETURN v_created;
END;
$$ LANGUAGE plpgsql;

-- Claims a queued, claimable job: `running` with a new lease, and its `job_started` event.
-- Returns the attempt number; NULL when there was nothing to claim; -1 when another job of the
-- workspace runs (checked first, so that the usual case costs no failed update; two claims
-- racing for one workspace still meet the unique index `jobs_one_running_per_workspace`).
CREATE FUNCTION otter_claim_job(
    p_id uuid,
    p_worker_id text,
    p_lease_token uuid,
    p_ttl_ms double precision,
    p_job_token uuid
) RETURNS integer AS $$
DECLARE
    v_attempt integer;
    v_workspace uuid;
    v_project uuid;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT workspace_id, project_id INTO v_workspace, v_project FROM jobs WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE workspace_id = v_workspace AND status = 'running') THEN
        RETURN -1;
    END IF;
    UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = p_worker_id,
            lease_token = p_lease_token,
            lease_expires_at = now() + p_ttl_ms * interval '1 millisecond', started_at = now(),
            exit_code = NULL, error = NULL, job_token = p_job_token
    WHERE id = p_id AND status = 'queued' AND NOT paused AND NOT cancel_requested AND run_after <= now()
    RETURNING attempts INTO v_attempt;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM otter_insert_events(p_id, v_workspace, v_project, ARRAY['job_started'],
        ARRAY[jsonb_build_object('attempt', v_attempt, 'worker_id', p_worker_id)]);
    RETURN v_attempt;
END;
$$ LANGUAGE plpgsql;

-- Appends a run's events while `p_lease_token` still holds the job; false (nothing written)
-- when the lease is gone. The lease check also reads what the events need of the job row. No
-- row lock is needed: every change of a job's status or lease takes the job's event lock first,
-- so none can slip between the check and the commit.
CREATE FUNCTION otter_append_run_events(
    p_id uuid,
    p_lease_token uuid,
    p_kinds text[],
    p_payloads jsonb[]
) RETURNS boolean AS $$
DECLARE
    v_workspace uuid;
    v_project uuid;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT workspace_id, project_id INTO v_workspace, v_project FROM jobs
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM otter_insert_events(p_id, v_workspace, v_project, p_kinds, p_payloads);
    RETURN true;
END;
$$ LANGUAGE plpgsql;

-- Ends a run, fenced by the lease: the job's new state, its output (when `p_has_output`) and
-- the closing event. `p_end` is how the worker saw it end: succeeded, failed (retried when
-- `p_retryable` and attempts remain), cancelled, or released (queued again at once, the attempt
-- not counted). Returns the new status, or NULL when the lease was gone.
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
    p_export jsonb
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
    PERFORM otter_insert_events(p_id, v_workspace, v_project, ARRAY[v_kind], ARRAY[v_payload]);
    RETURN v_status;
END;
$$ LANGUAGE plpgsql;

-- Output lines are stored as text and as the parsed entry, so many payloads pass the 2 kB at
-- which PostgreSQL compresses a value; lz4 does that several times faster than the default
-- pglz (pglz_compress was the largest single function in PostgreSQL's profile of figure 2).
-- Only new values; a PostgreSQL built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE job_outputs ALTER COLUMN export SET COMPRESSION lz4;
    ALTER TABLE job_outputs ALTER COLUMN final_text SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL; payloads stay compressed with pglz';
END;
$$;
