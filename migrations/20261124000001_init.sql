-- Otter's schema: projects, workspaces, jobs, job outputs and the event log.
-- PostgreSQL is the source of truth; Redis only carries job ids (see DESIGN.md §2).

CREATE OR REPLACE FUNCTION otter_set_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    project_id  uuid REFERENCES projects (id) ON DELETE SET NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Canonical absolute path of the workspace directory; one workspace per directory.
    path        text NOT NULL UNIQUE,
    -- The workspace's own VIBE_HOME (OTTER_VIBE_HOME_BASE/<id>).
    vibe_home   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_project_id_idx ON workspaces (project_id);
CREATE TRIGGER workspaces_updated_at BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    project_id       uuid REFERENCES projects (id) ON DELETE SET NULL,
    prompt           text NOT NULL CHECK (length(prompt) > 0),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- A paused job stays `queued` and is never claimed (the seed's rule).
    paused           boolean NOT NULL DEFAULT false,
    priority         integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    exit_code        integer,
    error            text,
    preview_url      text,
    -- Not claimable before this time (retry backoff).
    run_after        timestamptz NOT NULL DEFAULT now(),
    -- The claim: which worker holds the job, with which fencing token, until when.
    worker_id        text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'running') = (lease_token IS NOT NULL))
);
-- Invariant 4: at most one running job per workspace, enforced by the database itself.
CREATE UNIQUE INDEX jobs_one_running_per_workspace ON jobs (workspace_id) WHERE status = 'running';
-- The queue in claim order (GET /v1/queue, the reconciler).
CREATE INDEX jobs_queue_order_idx ON jobs (priority DESC, created_at, id) WHERE status = 'queued';
-- History: finished jobs, newest first.
CREATE INDEX jobs_history_idx ON jobs (finished_at DESC, id) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_workspace_idx ON jobs (workspace_id, created_at);
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE status = 'running';
CREATE TRIGGER jobs_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

-- What a finished run left behind: vibe's final answer and export.json's figures.
CREATE TABLE job_outputs (
    job_id      uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    final_text  text,
    usage       jsonb,
    cost        double precision,
    outcome     text,
    stop_reason text,
    -- The kept part of export.json (without its large `config` object).
    export      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER job_outputs_updated_at BEFORE UPDATE ON job_outputs
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

-- The event log. `id` orders the global stream, `seq` a job's own events.
CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    workspace_id uuid NOT NULL,
    project_id   uuid,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, seq)
);
CREATE INDEX events_workspace_idx ON events (workspace_id, id);
CREATE INDEX events_project_idx ON events (project_id, id) WHERE project_id IS NOT NULL;

-- The only way events are written. A bigserial is assigned at insert, not at commit: with two
-- writers, id 101 could become visible before id 100, and a reader whose cursor moved past 101
-- would lose 100. Every writer therefore takes one transaction-scoped advisory lock before it
-- draws ids, and holds it until commit: ids become visible in the order they were drawn, so a
-- reader that sees id N has already been able to see every id below N. The same lock makes the
-- per-job seq (max + 1) safe. NOTIFY is delivered at commit, after the rows are visible.
CREATE FUNCTION otter_append_events(
    p_job_id uuid,
    p_kinds text[],
    p_payloads jsonb[]
) RETURNS TABLE (id bigint, seq bigint, created_at timestamptz) AS $$
#variable_conflict use_column
DECLARE
    v_workspace uuid;
    v_project uuid;
    v_base bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7305001);
    SELECT j.workspace_id, j.project_id INTO v_workspace, v_project FROM jobs j WHERE j.id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'otter_append_events: no job %', p_job_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT coalesce(max(e.seq), 0) INTO v_base FROM events e WHERE e.job_id = p_job_id;
    RETURN QUERY
    INSERT INTO events AS e (job_id, workspace_id, project_id, seq, kind, payload)
    SELECT p_job_id, v_workspace, v_project, v_base + t.ord, t.kind, t.payload
    FROM unnest(p_kinds, p_payloads) WITH ORDINALITY AS t (kind, payload, ord)
    ORDER BY t.ord
    RETURNING e.id, e.seq, e.created_at;
    PERFORM pg_notify('otter_events', p_job_id::text);
END;
$$ LANGUAGE plpgsql;
