-- Event ids without a global lock (docs/architecture.md, "Event ids").
--
-- Until now every event writer took one advisory lock and held it through its commit, so that
-- bigserial ids became visible in increasing order. PostgreSQL holds that lock across the
-- commit's WAL flush, so all event-writing transactions of an installation committed one after
-- another (about 500/s on the 2-core box, see docs/benchmarks.md).
--
-- Now an event's id is derived from the id of the transaction that writes it:
--
--     id = ((xid8 - xid_base) << 16) + n        n = 0, 1, ... within the transaction
--
-- Transaction ids are handed out in increasing order, but transactions commit in any order. A
-- reader therefore only takes ids below the *horizon*, `(xmin - xid_base) << 16`, where `xmin` is
-- the oldest transaction still running in its snapshot: every transaction below `xmin` has ended,
-- so no id below the horizon can appear later, and every id that appears later is above it. A
-- cursor that only ever moves over ids below the horizon never skips one (invariant 6).
--
-- Per job, events must also become visible in id order and get `seq` in that order: a
-- transaction that writes a job's events takes the job's own lock *before its first write* (so
-- before it has a transaction id), which orders both its xid and its commit after the job's
-- previous writer. `otter_lock_job_events` enforces that order; one job per transaction.

ALTER TABLE events ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE events_id_seq;

-- One row: the transaction id that maps to event id 0 (see above). `otter::db::migrate` moves it
-- down when the stored ids are not below the next id (after a dump restored into a new cluster,
-- whose transaction ids start low again).
CREATE TABLE event_ids (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    xid_base  bigint NOT NULL
);
INSERT INTO event_ids (xid_base)
SELECT pg_current_xact_id()::text::bigint - (coalesce(max(id), 0) >> 16) - 2 FROM events;

CREATE FUNCTION otter_event_xid_base() RETURNS bigint AS $$
    SELECT xid_base FROM event_ids
$$ LANGUAGE sql STABLE;

-- Every id below this is final: stored for good, or never to exist.
CREATE FUNCTION otter_event_horizon() RETURNS bigint AS $$
    SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint - otter_event_xid_base()) << 16
$$ LANGUAGE sql STABLE;

-- Takes the lock of `p_job_id`'s events for the rest of the transaction. Must run before the
-- transaction's first write; taking it again for the same job is free.
CREATE FUNCTION otter_lock_job_events(p_job_id uuid) RETURNS void AS $$
BEGIN
    IF current_setting('otter.events_job', true) IS NOT DISTINCT FROM p_job_id::text THEN
        RETURN;
    END IF;
    IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'events of job % must be locked before the transaction''s first write (one job per transaction)', p_job_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM pg_advisory_xact_lock(7305002, hashtext(p_job_id::text));
    PERFORM set_config('otter.events_job', p_job_id::text, true);
END;
$$ LANGUAGE plpgsql;

DROP FUNCTION otter_append_events(uuid, text[], jsonb[]);

-- Where every event row is written: `p_job_id`'s events, for a caller that has already read the
-- job's workspace and project (the state changes of migration 13 read the job row anyway). It
-- takes the job's event lock itself (free when the caller holds it). It no longer NOTIFYs: a
-- notifying transaction holds a database-wide lock across its commit's WAL flush, which
-- serialised every event commit again. Readers poll while anyone watches (otter_core::feed).
CREATE FUNCTION otter_insert_events(
    p_job_id uuid,
    p_workspace_id uuid,
    p_project_id uuid,
    p_kinds text[],
    p_payloads jsonb[]
) RETURNS TABLE (id bigint, seq bigint, created_at timestamptz) AS $$
#variable_conflict use_column
DECLARE
    v_count int := coalesce(array_length(p_kinds, 1), 0);
    v_seq bigint;
    v_base bigint;
    v_first bigint;
    v_next bigint;
BEGIN
    IF v_count = 0 THEN
        RETURN;
    END IF;
    PERFORM otter_lock_job_events(p_job_id);
    SELECT coalesce(max(e.seq), 0) INTO v_seq FROM events e WHERE e.job_id = p_job_id;
    -- Assigns the transaction its id if it has none yet (after the job's lock, see above).
    SELECT xid_base INTO v_base FROM event_ids;
    v_first := (pg_current_xact_id()::text::bigint - v_base) << 16;
    SELECT coalesce(max(e.id) + 1, v_first) INTO v_next
    FROM events e WHERE e.id >= v_first AND e.id < v_first + 65536;
    IF v_next - v_first + v_count > 65536 THEN
        RAISE EXCEPTION 'otter_insert_events: more than 65536 events in one transaction'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN QUERY
    INSERT INTO events AS e (id, job_id, workspace_id, project_id, seq, kind, payload)
    SELECT v_next + t.ord - 1, p_job_id, p_workspace_id, p_project_id, v_seq + t.ord, t.kind, t.payload
    FROM unnest(p_kinds, p_payloads) WITH ORDINALITY AS t (kind, payload, ord)
    ORDER BY t.ord
    RETURNING e.id, e.seq, e.created_at;
END;
$$ LANGUAGE plpgsql;

-- Appends events to a job by its id alone (otter_core::db::events::append).
CREATE FUNCTION otter_append_events(
    p_job_id uuid,
    p_kinds text[],
    p_payloads jsonb[]
) RETURNS TABLE (id bigint, seq bigint, created_at timestamptz) AS $$
DECLARE
    v_workspace uuid;
    v_project uuid;
BEGIN
    IF coalesce(array_length(p_kinds, 1), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM otter_lock_job_events(p_job_id);
    SELECT j.workspace_id, j.project_id INTO v_workspace, v_project FROM jobs j WHERE j.id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'otter_append_events: no job %', p_job_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN QUERY SELECT * FROM otter_insert_events(p_job_id, v_workspace, v_project, p_kinds, p_payloads);
END;
$$ LANGUAGE plpgsql;
