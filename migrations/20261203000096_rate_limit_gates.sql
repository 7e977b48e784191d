-- Rate limits park, they do not fail (issue 19, part 3).
--
-- * `rate_limit_gates`: one row per model provider and key (`gate`, `<provider>:<hash of the
--   key>`, computed by the worker from its configuration), shut `until` the limit resets. The
--   finish of a run that ended on a rate limit (`p_end` released with the details'
--   `rate_limit`: `{gate, provider, reset_ms, backoff_ms, message}`) shuts it, writes a
--   `job_rate_limited` event and parks the job until the gate opens, the attempt not counted.
-- * `otter_claim_job(..., p_gate)`: a claim by a worker whose gate is shut answers -3 and takes
--   nothing: every worker of that provider and key waits for the reset.

CREATE TABLE rate_limit_gates (
    gate       text PRIMARY KEY,
    provider   text NOT NULL,
    until      timestamptz NOT NULL,
    hits       integer NOT NULL DEFAULT 1,
    job_id     uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Migration 90's claim, and the gate (`p_gate`, NULL: none) of the claiming worker's provider.
DROP FUNCTION otter_claim_job(uuid, text, uuid, double precision, uuid, integer);
CREATE FUNCTION otter_claim_job(
    p_id uuid,
    p_worker_id text,
    p_lease_token uuid,
    p_ttl_ms double precision,
    p_job_token uuid,
    p_project_max_running integer DEFAULT NULL,
    p_gate text DEFAULT NULL
) RETURNS integer AS $$
DECLARE
    v_attempt integer;
    v_workspace uuid;
    v_project uuid;
    v_parent uuid;
    v_limit integer;
BEGIN
    IF p_gate IS NOT NULL AND EXISTS (
        SELECT 1 FROM rate_limit_gates WHERE gate = p_gate AND until > now()) THEN
        RETURN -3;
    END IF;
    PERFORM otter_lock_job_events(p_id);
    SELECT workspace_id, project_id, parent_job_id INTO v_workspace, v_project, v_parent
    FROM jobs WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM jobs WHERE workspace_id = v_workspace AND status = 'running')
       OR otter_parent_pending(v_parent) THEN
        RETURN -1;
    END IF;
    IF v_project IS NOT NULL THEN
        SELECT coalesce(max_running, p_project_max_running) INTO v_limit
        FROM projects WHERE id = v_project;
        IF v_limit IS NOT NULL THEN
            -- NO KEY UPDATE: submits of the project (whose foreign key takes KEY SHARE) go on.
            PERFORM 1 FROM projects WHERE id = v_project FOR NO KEY UPDATE;
            IF (SELECT count(*) FROM jobs WHERE project_id = v_project AND status = 'running')
               >= v_limit THEN
                RETURN -2;
            END IF;
        END IF;
    END IF;
    UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = p_worker_id,
            lease_token = p_lease_token,
            lease_expires_at = now() + p_ttl_ms * interval '1 millisecond', started_at = now(),
            exit_code = NULL, error = NULL, job_token = p_job_token,
            session_id = coalesce(session_id, (SELECT p.session_id FROM jobs p WHERE p.id = v_parent))
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
    v_limit jsonb := v_details->'rate_limit';
    v_prev timestamptz;
    v_hits integer;
    v_until timestamptz;
    v_delay_ms double precision := p_retry_delay_ms;
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
    IF p_end = 'released' AND jsonb_typeof(v_limit) = 'object' THEN
        -- A rate limit: shut (or keep shut) the gate of the run's provider and key, and park
        -- the job until it opens. A gate shut again within 10 minutes of its last opening counts
        -- as the same limit, and its backoff doubles (at most an hour); a reset time that vibe's
        -- message gives wins over the backoff. An open gate is never shortened.
        SELECT until, hits INTO v_prev, v_hits FROM rate_limit_gates
        WHERE gate = v_limit->>'gate' FOR UPDATE;
        v_hits := CASE WHEN v_prev > now() - interval '10 minutes' THEN v_hits + 1 ELSE 1 END;
        v_until := now() + least(coalesce((v_limit->>'reset_ms')::double precision,
                                          (v_limit->>'backoff_ms')::double precision
                                              * power(2, least(v_hits - 1, 12))),
                                 3600000) * interval '1 millisecond';
        v_until := greatest(v_until, v_prev);
        INSERT INTO rate_limit_gates (gate, provider, until, hits, job_id)
        VALUES (v_limit->>'gate', v_limit->>'provider', v_until, v_hits, p_id)
        ON CONFLICT (gate) DO UPDATE SET provider = EXCLUDED.provider, until = EXCLUDED.until,
            hits = EXCLUDED.hits, job_id = EXCLUDED.job_id, updated_at = now();
        v_delay_ms := extract(epoch FROM v_until - now()) * 1000;
        PERFORM otter_insert_events(p_id, v.workspace_id, v.project_id, ARRAY['job_rate_limited'],
            ARRAY[jsonb_build_object(
                'attempt', v.attempts,
                'until', to_char(v_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'provider', v_limit->>'provider',
                'gate', v_limit->>'gate',
                'hits', v_hits,
                'source', CASE WHEN v_limit ? 'reset_ms' AND v_limit->'reset_ms' <> 'null'::jsonb
                               THEN 'message' ELSE 'backoff' END,
                'message', v_limit->>'message')]);
    END IF;
    RETURN otter_end_run(v, p_end, p_retryable, p_error, p_exit_code, v_delay_ms,
        v_details->'setup', v_details->>'reason');
END;
$$ LANGUAGE plpgsql;
