-- Retention (issue 19, part 5): the purge also deletes the checkpoints of the jobs it purges.
-- Before a workspace's checkpoint store is swept, the purge asks which checkpoints of that
-- workspace its jobs not purged still need (`otter_core::db::retention::kept_checkpoints`):
-- this index keeps that one workspace's rows, not the whole table.

CREATE INDEX job_checkpoints_workspace_idx ON job_checkpoints (workspace_id);
