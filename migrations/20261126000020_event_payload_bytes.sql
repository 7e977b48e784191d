-- Pages of events bounded by bytes (issue 14): each event records the length of its payload as
-- JSON text, so that a reader can stop a page at a byte budget (otter_core::db::events) without
-- reading or converting the payloads it will not send. Events stored before this migration have
-- none (NULL): readers compute it for them, `octet_length(payload::text)`.

ALTER TABLE events ADD COLUMN payload_bytes integer;

-- As in migration 12, with `payload_bytes` filled in.
CREATE OR REPLACE FUNCTION otter_insert_events(
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
    INSERT INTO events AS e (id, job_id, workspace_id, project_id, seq, kind, payload, payload_bytes)
    SELECT v_next + t.ord - 1, p_job_id, p_workspace_id, p_project_id, v_seq + t.ord, t.kind, t.payload,
           octet_length(t.payload::text)
    FROM unnest(p_kinds, p_payloads) WITH ORDINALITY AS t (kind, payload, ord)
    ORDER BY t.ord
    RETURNING e.id, e.seq, e.created_at;
END;
$$ LANGUAGE plpgsql;
