-- A batch of a run's output is written once, even when the worker retries it. If the connection
-- breaks after the commit but before the answer arrives, the worker cannot tell whether the
-- batch was stored, and writes it again. Each batch now carries its number within the run
-- (1, 2, …), and the job row remembers the last one stored under the current lease. A batch
-- that is not newer is acknowledged without being stored a second time.
ALTER TABLE jobs
    ADD COLUMN last_batch_lease uuid,
    ADD COLUMN last_batch_no bigint;

CREATE FUNCTION otter_append_run_events(
    p_id uuid,
    p_lease_token uuid,
    p_kinds text[],
    p_payloads jsonb[],
    p_batch_no bigint
) RETURNS boolean AS $$
DECLARE
    v_workspace uuid;
    v_project uuid;
    v_last_lease uuid;
    v_last_no bigint;
BEGIN
    PERFORM otter_lock_job_events(p_id);
    SELECT workspace_id, project_id, last_batch_lease, last_batch_no
    INTO v_workspace, v_project, v_last_lease, v_last_no FROM jobs
    WHERE id = p_id AND lease_token = p_lease_token AND status = 'running';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_last_lease = p_lease_token AND v_last_no >= p_batch_no THEN
        RETURN true;
    END IF;
    -- Neither column is indexed: a heap-only update, no index entries.
    UPDATE jobs SET last_batch_lease = p_lease_token, last_batch_no = p_batch_no WHERE id = p_id;
    PERFORM otter_insert_events(p_id, v_workspace, v_project, p_kinds, p_payloads);
    RETURN true;
END;
$$ LANGUAGE plpgsql;
