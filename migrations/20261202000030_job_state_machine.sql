-- The job state machine in one place (issue 15). Every change of a job's state is one SQL
-- function here or in migration 13, called with named arguments from `otter_core::db::jobs`:
--
--   submit            otter_insert_job        (migration 13)          -> queued
--   claim             otter_claim_job         (migration 13)   queued -> running
--   renew the lease   otter_renew_lease                        running
--   append run events otter_append_run_events (migration 15)   running
--   finish a run      otter_finish_run                         running -> succeeded | failed |
--                                                                         cancelled | queued
--   recover a lease   otter_recover_lease                      running -> failed | cancelled | queued
--   pause, resume     otter_set_paused                         queued (paused <-> not paused)
--   move              otter_set_priority                       queued
--   cancel            otter_cancel_job                         queued -> cancelled;
--                                                              running -> cancel_requested
--
-- Each is one statement run outside an explicit transaction: one round trip and one commit. Each
-- takes the job's event lock before its first write (migration 12). How a run ends, retried or
-- not, and the closing event's payload are decided in one function, `otter_end_run`, which both
-- the finish and the recovery of a lost lease call. The queue controls answer "not found" and
-- "conflict" with the SQLSTATEs OT404 and OT409, whose message is the client's.

-- A job as the API reads it: the row and its output. The queue controls return it; the reads of
-- otter_core::db::jobs select from it.
CREATE VIEW otter_job_rows AS
SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
       j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after,
       j.cancel_requested, j.worker_id, j.lease_expires_at, j.created_at, j.started_at,
       j.finished_at,
       o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome,
       o.stop_reason, o.export
FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id;

-- How a run ends: the retry rule, the job's new state and the closing event. The caller holds
-- the job's event lock and its row lock, and passes the row as it read it (`p_job`). `p_end` is
-- succeeded, failed (retried when `p_retryable` and attempts remain), cancelled, released (the
-- worker handed the job back: queued again at once, the attempt not counted) or lost (the lease
-- expired: retried while attempts remain). A requested cancel wins over every end but success.
-- Returns the new status.
CREATE FUNCTION otter_end_run(
    p_job jobs,
    p_end text,
    p_retryable boolean,
    p_error text,
    p_exit_code integer,
    p_retry_delay_ms double precision,
    p_setup jsonb
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
                'reason', CASE p_end WHEN 'failed' THEN 'run_failed'
                                     WHEN 'lost' THEN 'worker_lost'
                                     ELSE coalesce(p_error, 'worker_shutdown') END);
        ELSE
            NULL;
    END CASE;
    PERFORM otter_insert_events(p_job.id, p_job.workspace_id, p_job.project_id, ARRAY[v_kind],
        ARRAY[v_payload]);
    RETURN v_status;
END;
$$ LANGUAGE plpgsql;

-- Ends a run, fenced by the lease: the run's last events (`p_kinds`, `p_payloads`, stored before
-- the closing event), its output (when `p_has_output`), then `otter_end_run`. Of `p_details`,
-- only `setup` is kept (in `job_succeeded`). Returns the new status, or NULL when the lease was
-- gone (then nothing was written). Replaces migration 14's form, which called migration 13's
-- (dropped in the next migration); the arguments are the same.
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
    p_payloads jsonb[]
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
    RETURN otter_end_run(v, p_end, p_retryable, p_error, p_exit_code, p_retry_delay_ms,
        CASE WHEN jsonb_typeof(p_details) = 'object' THEN p_details->'setup' END);
END;
$$ LANGUAGE plpgsql;

-- Recovers a running job whose lease expired (its worker died or lost contact), if it still is
-- expired (another reconciler may have been first): the end `lost`. The events written before
-- stay. Returns the new status, or NULL when there was nothing to recover.
CREATE FUNCTION otter_recover_lease(p_id uuid) RETURNS text AS $$
DECLARE
    v jobs;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT * INTO v FROM jobs
    WHERE id = p_id AND status = 'running' AND lease_expires_at < now() FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN otter_end_run(v, 'lost', true, 'worker_lost', NULL, 0, NULL);
END;
$$ LANGUAGE plpgsql;

-- Renews a lease for `p_ttl_ms` from now. Returns whether a cancel was requested, or NULL when
-- the lease is gone (the run must stop and write nothing more). It writes no event, so it takes
-- no event lock; the lease token it checks changes only under that lock.
CREATE FUNCTION otter_renew_lease(
    p_id uuid,
    p_lease_token uuid,
    p_ttl_ms double precision
) RETURNS boolean AS $$
    UPDATE jobs SET lease_expires_at = now() + p_ttl_ms * interval '1 millisecond'
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running'
    RETURNING cancel_requested
$$ LANGUAGE sql;

-- Locks a job for a queue control (its events, then its row) and returns the row; OT404 when
-- there is none.
CREATE FUNCTION otter_lock_job(p_id uuid) RETURNS jobs AS $$
DECLARE
    v jobs;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT * INTO v FROM jobs WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job not found' USING ERRCODE = 'OT404';
    END IF;
    RETURN v;
END;
$$ LANGUAGE plpgsql;

-- The state a queue control found a job in, for its conflict message.
CREATE FUNCTION otter_job_state_name(p_status text, p_paused boolean) RETURNS text AS $$
    SELECT CASE WHEN p_status = 'queued' AND p_paused THEN 'paused' ELSE p_status END
$$ LANGUAGE sql IMMUTABLE;

-- Pauses (`p_paused`) or resumes a queued job. A paused job stays `queued` and is never
-- claimed. Pausing a paused job, or resuming an unpaused one, changes nothing; a job in another
-- state is a conflict.
CREATE FUNCTION otter_set_paused(p_id uuid, p_paused boolean) RETURNS SETOF otter_job_rows AS $$
DECLARE
    v jobs;
BEGIN
    v := otter_lock_job(p_id);
    IF v.status <> 'queued' THEN
        RAISE EXCEPTION 'only a % job can be %; this one is %',
            CASE WHEN p_paused THEN 'queued' ELSE 'paused' END,
            CASE WHEN p_paused THEN 'paused' ELSE 'resumed' END,
            otter_job_state_name(v.status, v.paused)
            USING ERRCODE = 'OT409';
    END IF;
    IF v.paused <> p_paused THEN
        UPDATE jobs SET paused = p_paused WHERE id = p_id;
        PERFORM otter_insert_events(p_id, v.workspace_id, v.project_id,
            ARRAY[CASE WHEN p_paused THEN 'job_paused' ELSE 'job_resumed' END], ARRAY['{}'::jsonb]);
    END IF;
    RETURN QUERY SELECT * FROM otter_job_rows WHERE id = p_id;
END;
$$ LANGUAGE plpgsql;

-- Moves a queued job (paused or not) to `p_priority`; a job in another state is a conflict.
CREATE FUNCTION otter_set_priority(p_id uuid, p_priority integer) RETURNS SETOF otter_job_rows AS $$
DECLARE
    v jobs;
BEGIN
    v := otter_lock_job(p_id);
    IF v.status <> 'queued' THEN
        RAISE EXCEPTION 'only a queued job can be moved; this one is %',
            otter_job_state_name(v.status, v.paused)
            USING ERRCODE = 'OT409';
    END IF;
    IF v.priority <> p_priority THEN
        UPDATE jobs SET priority = p_priority WHERE id = p_id;
        PERFORM otter_insert_events(p_id, v.workspace_id, v.project_id,
            ARRAY['job_priority_changed'],
            ARRAY[jsonb_build_object('from', v.priority, 'to', p_priority)]);
    END IF;
    RETURN QUERY SELECT * FROM otter_job_rows WHERE id = p_id;
END;
$$ LANGUAGE plpgsql;

-- Cancels a job. A queued job (paused or not) ends `cancelled` at once; a running one is marked
-- `cancel_requested` and its worker is told on the channel `otter_cancel` (payload: the job id;
-- otter_core::db::jobs::CANCEL_CHANNEL), its next lease renewal being the backstop. A finished
-- job is a conflict.
CREATE FUNCTION otter_cancel_job(p_id uuid) RETURNS SETOF otter_job_rows AS $$
DECLARE
    v jobs;
BEGIN
    v := otter_lock_job(p_id);
    CASE v.status
        WHEN 'queued' THEN
            UPDATE jobs SET status = 'cancelled', error = 'cancelled', finished_at = now()
            WHERE id = p_id;
            PERFORM otter_insert_events(p_id, v.workspace_id, v.project_id, ARRAY['job_cancelled'],
                ARRAY[jsonb_build_object('attempt', v.attempts, 'exit_code', NULL,
                    'error', 'cancelled', 'worker_id', NULL, 'while', 'queued')]);
        WHEN 'running' THEN
            UPDATE jobs SET cancel_requested = true WHERE id = p_id;
            PERFORM pg_notify('otter_cancel', p_id::text);
        ELSE
            RAISE EXCEPTION 'the job has already finished (%)', v.status USING ERRCODE = 'OT409';
    END CASE;
    RETURN QUERY SELECT * FROM otter_job_rows WHERE id = p_id;
END;
$$ LANGUAGE plpgsql;
