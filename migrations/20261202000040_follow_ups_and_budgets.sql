-- Follow-ups in the same vibe session, limits and a model per job, budgets per project
-- (issue 16, parts 1 and 4).
--
-- * A follow-up (`parent_job_id`) runs in its parent's workspace and resumes its parent's vibe
--   session (`vibe --resume <session_id>`). It is not claimed while its parent is queued or
--   running (`otter_claim_job` answers "workspace busy", as for another running job of the
--   workspace; the end of the parent pushes the workspace's jobs again).
-- * `session_id` is vibe's session: a follow-up inherits its parent's (at submit when the parent
--   has one, else at claim), and every run's `export.json` sets it (`otter_finish_run`).
-- * `limits` are the run's limits as submitted, defaults applied: `{"max_turns", "max_price_usd",
--   "max_tokens", "time_limit_secs"}`, each a positive number or absent. `model` is the vibe
--   model alias the run uses (`VIBE_ACTIVE_MODEL`); NULL: the worker's.
-- * `projects.budget_usd`: what the project's jobs may cost in all; NULL: no budget.

ALTER TABLE jobs
    ADD COLUMN parent_job_id uuid REFERENCES jobs (id) ON DELETE SET NULL,
    ADD COLUMN session_id text,
    ADD COLUMN limits jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(limits) = 'object'),
    ADD COLUMN model text CHECK (length(model) BETWEEN 1 AND 200);
CREATE INDEX jobs_session_idx ON jobs (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX jobs_parent_idx ON jobs (parent_job_id) WHERE parent_job_id IS NOT NULL;

ALTER TABLE projects
    ADD COLUMN budget_usd double precision CHECK (budget_usd >= 0 AND budget_usd < 'infinity');

-- The job as the API reads it: migration 30's columns, then the new ones (a view only grows at
-- its end).
CREATE OR REPLACE VIEW otter_job_rows AS
SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
       j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after,
       j.cancel_requested, j.worker_id, j.lease_expires_at, j.created_at, j.started_at,
       j.finished_at,
       o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome,
       o.stop_reason, o.export,
       j.parent_job_id, j.session_id, j.limits, j.model
FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id;

-- Whether a follow-up must wait: its parent is still queued or running.
CREATE FUNCTION otter_parent_pending(p_parent_job_id uuid) RETURNS boolean AS $$
    SELECT p_parent_job_id IS NOT NULL AND EXISTS (
        SELECT 1 FROM jobs WHERE id = p_parent_job_id AND status IN ('queued', 'running'))
$$ LANGUAGE sql STABLE;

-- Submits a job: migration 13's, with a parent, limits and a model. A follow-up takes its
-- parent's session id when the parent has one already. The checks of a follow-up (the parent
-- exists, same workspace, a finished parent has a session) are the caller's
-- (otter_core::service::submit_prompt), which answers them in the API's words.
DROP FUNCTION otter_insert_job(uuid, uuid, uuid, text, integer, integer);
CREATE FUNCTION otter_insert_job(
    p_id uuid,
    p_workspace_id uuid,
    p_project_id uuid,
    p_prompt text,
    p_priority integer,
    p_max_attempts integer,
    p_parent_job_id uuid DEFAULT NULL,
    p_limits jsonb DEFAULT '{}'::jsonb,
    p_model text DEFAULT NULL
) RETURNS timestamptz AS $$
DECLARE
    v_created timestamptz;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    INSERT INTO jobs (id, workspace_id, project_id, prompt, priority, max_attempts,
                      parent_job_id, session_id, limits, model)
    VALUES (p_id, p_workspace_id, p_project_id, p_prompt, p_priority, p_max_attempts,
            p_parent_job_id,
            (SELECT session_id FROM jobs WHERE id = p_parent_job_id),
            coalesce(p_limits, '{}'::jsonb), p_model)
    RETURNING created_at INTO v_created;
    PERFORM otter_insert_events(p_id, p_workspace_id, p_project_id, ARRAY['job_queued'],
        ARRAY[jsonb_build_object('priority', p_priority, 'max_attempts', p_max_attempts)]);
    RETURN v_created;
END;
$$ LANGUAGE plpgsql;

-- Claims a job: migration 13's, and a follow-up waits while its parent is queued or running
-- (answered -1, "workspace busy": the parent runs in the same workspace, and its end pushes the
-- workspace's jobs again). A follow-up takes its parent's session id, now final.
CREATE OR REPLACE FUNCTION otter_claim_job(
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
    v_parent uuid;
BEGIN
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

-- Ends a run: migration 30's, and the session id vibe reported in export.json becomes the
-- job's (a run that reported none keeps the one it inherited).
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
    IF jsonb_typeof(p_export->'session_id') = 'string' THEN
        UPDATE jobs SET session_id = p_export->>'session_id' WHERE id = p_id;
    END IF;
    RETURN otter_end_run(v, p_end, p_retryable, p_error, p_exit_code, p_retry_delay_ms,
        CASE WHEN jsonb_typeof(p_details) = 'object' THEN p_details->'setup' END);
END;
$$ LANGUAGE plpgsql;

-- What a project's jobs cost and used: the sums over their outputs (the last run of each job).
CREATE VIEW otter_project_usage AS
SELECT p.id AS project_id, p.budget_usd,
       coalesce(sum(o.cost), 0)::double precision AS spent_usd,
       coalesce(sum(CASE WHEN jsonb_typeof(o.usage->'input_tokens') = 'number'
                         THEN (o.usage->>'input_tokens')::numeric END), 0)::bigint AS prompt_tokens,
       coalesce(sum(CASE WHEN jsonb_typeof(o.usage->'output_tokens') = 'number'
                         THEN (o.usage->>'output_tokens')::numeric END), 0)::bigint AS completion_tokens,
       count(j.id) AS jobs
FROM projects p
LEFT JOIN jobs j ON j.project_id = p.id
LEFT JOIN job_outputs o ON o.job_id = j.id
GROUP BY p.id, p.budget_usd;
