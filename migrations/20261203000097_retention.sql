-- Retention (issue 19, part 5). With OTTER_RETENTION set, the workers purge jobs that ended
-- before it: their `output_chunk` events (in small batches, each its own short statement) and
-- their run directories; the row, output, lifecycle events and change summary stay.
-- `jobs.events_purged` says it was done (`otter_job_rows.events_purged`, appended).

ALTER TABLE jobs ADD COLUMN events_purged boolean NOT NULL DEFAULT false;

-- The purge's next jobs, oldest end first.
CREATE INDEX jobs_purgeable_idx ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND NOT events_purged;

-- The job as the API reads it: migration 95's columns, then whether its output lines were purged.
CREATE OR REPLACE VIEW otter_job_rows AS
SELECT j.id, j.workspace_id, j.project_id, j.prompt, j.status, j.paused, j.priority,
       j.attempts, j.max_attempts, j.exit_code, j.error, j.preview_url, j.run_after,
       j.cancel_requested, j.worker_id, j.lease_expires_at, j.created_at, j.started_at,
       j.finished_at,
       o.job_id IS NOT NULL AS has_output, o.final_text, o.usage, o.cost, o.outcome,
       o.stop_reason, o.export,
       j.parent_job_id, j.session_id, j.limits, j.model,
       coalesce(j.queue_at, j.created_at) AS queue_at,
       coalesce(o.forced_exit, false) AS forced_exit,
       j.events_purged
FROM jobs j LEFT JOIN job_outputs o ON o.job_id = j.id;
