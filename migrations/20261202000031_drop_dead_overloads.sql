-- The overloads no caller uses any more (issue 15). Migration 13's 15-argument
-- `otter_finish_run` was called only by migration 14's 17-argument form, which the previous
-- migration made whole; migration 13's 4-argument `otter_append_run_events` gave way to
-- migration 15's, which numbers its batches.
DROP FUNCTION otter_finish_run(uuid, uuid, text, boolean, text, integer, double precision, jsonb,
    boolean, text, jsonb, double precision, text, text, jsonb);
DROP FUNCTION otter_append_run_events(uuid, uuid, text[], jsonb[]);
