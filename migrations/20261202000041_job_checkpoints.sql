-- What each job changed, and undo (issue 16). The worker takes a checkpoint of the job's
-- workspace before its run and another after it ends (setup.sh included), in the checkpoint
-- store outside the workspace (otter_core::checkpoint); this table says which checkpoints are the
-- job's, and the summary of what changed between them, which the job's `output` shows.
--
-- `before_id` is the checkpoint taken before the job's first attempt: a retried job's change set
-- spans all its attempts. It is NULL when that checkpoint could not be taken (`error` says why):
-- what the job changed is then unknown, whatever a later attempt finds. `after_id` is the one
-- taken after the last attempt that ended, NULL until then or when it could not be taken.
CREATE TABLE job_checkpoints (
    job_id        uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    before_id     uuid,
    after_id      uuid,
    files_changed bigint,
    additions     bigint,
    deletions     bigint,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER job_checkpoints_updated_at BEFORE UPDATE ON job_checkpoints
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

-- Records the checkpoint a run took before it started (`p_checkpoint`, NULL when it could not be
-- taken, `p_error` saying why), fenced by the lease. A job that already has one (an earlier
-- attempt's) keeps it. Returns the job's before checkpoint and whether the lease held:
-- (NULL, false) when the lease is gone (nothing was written).
CREATE FUNCTION otter_record_checkpoint_before(
    p_id uuid,
    p_lease_token uuid,
    p_checkpoint uuid,
    p_error text,
    OUT before_id uuid,
    OUT held boolean
) AS $$
DECLARE
    v_workspace uuid;
BEGIN
    -- Every change of a job's lease takes this lock first: the lease cannot change between
    -- the check and the commit.
    PERFORM otter_lock_job_events(p_id);
    SELECT workspace_id INTO v_workspace FROM jobs
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running';
    IF NOT FOUND THEN
        held := false;
        RETURN;
    END IF;
    INSERT INTO job_checkpoints AS c (job_id, workspace_id, before_id, error)
    VALUES (p_id, v_workspace, p_checkpoint, p_error)
    ON CONFLICT (job_id) DO UPDATE SET job_id = c.job_id
    RETURNING c.before_id INTO before_id;
    held := true;
END;
$$ LANGUAGE plpgsql;

-- Records the checkpoint a run took after it ended (`p_checkpoint`, NULL when it could not be
-- taken, `p_error` saying why) and the summary of the change set, fenced by the lease. Called
-- before the run is finished, so that a finished job's output carries its summary. Returns
-- false (nothing written) when the lease is gone.
CREATE FUNCTION otter_record_checkpoint_after(
    p_id uuid,
    p_lease_token uuid,
    p_checkpoint uuid,
    p_error text,
    p_files_changed bigint,
    p_additions bigint,
    p_deletions bigint
) RETURNS boolean AS $$
BEGIN
    PERFORM otter_lock_job_events(p_id);
    PERFORM 1 FROM jobs WHERE id = p_id AND lease_token = p_lease_token AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE job_checkpoints SET after_id = p_checkpoint,
           error = coalesce(p_error, CASE WHEN before_id IS NULL THEN error END),
           files_changed = p_files_changed, additions = p_additions, deletions = p_deletions
    WHERE job_id = p_id;
    RETURN FOUND;
END;
$$ LANGUAGE plpgsql;

-- A restore of a workspace's files (POST /v1/jobs/{id}/restore) must not overlap a run of that
-- workspace. The restore holds the session-level advisory lock (7305003, hashtext(workspace id))
-- exclusively for as long as it writes files; every transition of a job to `running` (the
-- claim, whichever function makes it) must take the same lock shared, without waiting, until
-- its transaction ends. A claim that finds a restore in progress fails with the constraint name
-- `jobs_workspace_restoring`, which the worker reads as "the workspace is busy" (the job stays
-- queued and is pushed again when the restore ends). A claim in flight holds the lock, so a
-- restore that gets it afterwards sees the job `running` and refuses (409).
CREATE FUNCTION otter_run_waits_for_restore() RETURNS trigger AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(7305003, hashtext(NEW.workspace_id::text)) THEN
        RAISE EXCEPTION 'a restore of workspace % is in progress', NEW.workspace_id
            USING ERRCODE = 'OT423', CONSTRAINT = 'jobs_workspace_restoring';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_workspace_restoring BEFORE UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'running' AND OLD.status IS DISTINCT FROM 'running')
    EXECUTE FUNCTION otter_run_waits_for_restore();
