-- Fair shares between projects (issue 19, part 4).
--
-- * `projects.max_running`: the most jobs of the project that run at once, over all workers;
--   NULL: the workers' `OTTER_PROJECT_MAX_RUNNING` (passed to the claim), unlimited if that is
--   unset too. `otter_claim_job` answers -2 ("project at its limit") for a job whose project
--   runs that many already; the worker drops the delivery, and the end of any of the project's
--   runs pushes its next jobs again (as for a busy workspace).
-- * `jobs.queue_at`: the job's turn in claim order within its priority (the Redis score's time
--   part, and the order of `GET /v1/queue`). A job whose project (or, for jobs without one, the
--   jobs without a project) has no queued job yet takes its turn now; any other comes one turn
--   (an hour) after the project's last queued job. So at equal priority the projects' queued
--   jobs are claimed in turn, and a project that floods the queue pushes only its own jobs back.
--   Priority still wins: it is the score's first part.

ALTER TABLE projects
    ADD COLUMN max_running integer CHECK (max_running BETWEEN 1 AND 100000);

ALTER TABLE jobs ADD COLUMN queue_at timestamptz;
UPDATE jobs SET queue_at = created_at WHERE status = 'queued';

-- The last queued turn of a project (the submit's probe), and the queue in claim order.
CREATE INDEX jobs_queue_turn_idx ON jobs (project_id, queue_at) WHERE status = 'queued';
-- The project's running jobs (the claim's count, under `max_running`).
CREATE INDEX jobs_running_by_project_idx ON jobs (project_id) WHERE status = 'running';
-- A project's jobs (its usage: `otter_project_usage`, summed at each submit and run start of a
-- project job; it was a scan of every job).
CREATE INDEX jobs_project_idx ON jobs (project_id) WHERE project_id IS NOT NULL;

-- The job as the API reads it: migration 40's columns, then its turn (a view only grows at its
-- end).
CREATE OR REPLACE VIEW otter_job_rows AS
SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
       j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after,
       j.cancel_requested, j.worker_id, j.lease_expires_at, j.created_at, j.started_at,
       j.finished_at,
       o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome,
       o.stop_reason, o.export,
       j.parent_job_id, j.session_id, j.limits, j.model,
       coalesce(j.queue_at, j.created_at) AS queue_at
FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id;

-- One turn: how far behind its project's last queued job a job is placed.
CREATE FUNCTION otter_queue_turn() RETURNS interval AS $$
    SELECT interval '1 hour'
$$ LANGUAGE sql IMMUTABLE;

-- Submits a job: migration 40's, and the job takes its turn (`queue_at`), which it returns with
-- `created_at`.
DROP FUNCTION otter_insert_job(uuid, uuid, uuid, text, integer, integer, uuid, jsonb, text);
CREATE FUNCTION otter_insert_job(
    p_id uuid,
    p_workspace_id uuid,
    p_project_id uuid,
    p_prompt text,
    p_priority integer,
    p_max_attempts integer,
    p_parent_job_id uuid DEFAULT NULL,
    p_limits jsonb DEFAULT '{}'::jsonb,
    p_model text DEFAULT NULL,
    OUT created_at timestamptz,
    OUT queue_at timestamptz
) AS $$
DECLARE
    v_last timestamptz;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    -- Two probes, so that each is one step down `jobs_queue_turn_idx`.
    IF p_project_id IS NULL THEN
        SELECT max(j.queue_at) INTO v_last FROM jobs j
        WHERE j.status = 'queued' AND j.project_id IS NULL;
    ELSE
        SELECT max(j.queue_at) INTO v_last FROM jobs j
        WHERE j.status = 'queued' AND j.project_id = p_project_id;
    END IF;
    -- Capped well before the score's time part would reach the next priority (2051).
    queue_at := least(greatest(now(), v_last + otter_queue_turn()), timestamptz '2049-01-01');
    INSERT INTO jobs (id, workspace_id, project_id, prompt, priority, max_attempts,
                      parent_job_id, session_id, limits, model, queue_at)
    VALUES (p_id, p_workspace_id, p_project_id, p_prompt, p_priority, p_max_attempts,
            p_parent_job_id,
            (SELECT j.session_id FROM jobs j WHERE j.id = p_parent_job_id),
            coalesce(p_limits, '{}'::jsonb), p_model, queue_at)
    RETURNING jobs.created_at INTO created_at;
    PERFORM otter_insert_events(p_id, p_workspace_id, p_project_id, ARRAY['job_queued'],
        ARRAY[jsonb_build_object('priority', p_priority, 'max_attempts', p_max_attempts)]);
END;
$$ LANGUAGE plpgsql;

-- Claims a job: migration 40's, and a job whose project runs its `max_running` jobs already
-- (else `p_project_max_running`, the worker's OTTER_PROJECT_MAX_RUNNING; NULL: no limit) is
-- not claimed (-2). The project's row is locked while its running jobs are counted, so that
-- two claims of one project never both see room for one more; a project without a limit costs
-- no lock.
DROP FUNCTION otter_claim_job(uuid, text, uuid, double precision, uuid);
CREATE FUNCTION otter_claim_job(
    p_id uuid,
    p_worker_id text,
    p_lease_token uuid,
    p_ttl_ms double precision,
    p_job_token uuid,
    p_project_max_running integer DEFAULT NULL
) RETURNS integer AS $$
DECLARE
    v_attempt integer;
    v_workspace uuid;
    v_project uuid;
    v_parent uuid;
    v_limit integer;
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
