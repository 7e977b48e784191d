-- Signed webhooks (issue 18): the hooks, one delivery per (hook, matching event), and every
-- attempt at sending it. The fan-out from events to deliveries happens in the transaction that
-- writes the event (a trigger on `events`), so an event committed is a delivery committed: no
-- event is lost between the two, whatever process dies. Senders claim due deliveries with
-- `FOR UPDATE SKIP LOCKED` and hold them by a lease (`next_attempt_at` moved past the send's
-- timeout), so several servers never send one delivery at the same time
-- (otter_core::webhooks).

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    url         text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    -- Event kinds delivered (never `output_chunk`: see the trigger below).
    events      text[] NOT NULL CHECK (cardinality(events) > 0),
    -- Only this project's events; NULL: every project's, and jobs without a project.
    project_id  uuid REFERENCES projects (id) ON DELETE CASCADE,
    description text,
    -- The HMAC key of the signatures. Kept to sign; sent only by create and rotate-secret.
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER webhooks_updated_at BEFORE UPDATE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id        bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    -- pending: to be sent at next_attempt_at; succeeded: a 2xx came back; failed: given up.
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    -- Due time while pending; while a sender holds the delivery, the end of its lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The holder of the current lease (a sender's claim); NULL when nobody sends it.
    lease           uuid,
    attempts        integer NOT NULL DEFAULT 0,
    -- Retries stop OTTER_WEBHOOK_RETRY_FOR after this (set again by a redeliver).
    retry_from      timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (webhook_id, event_id)
);
-- The senders' claim: the due pending deliveries, oldest first.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (webhook_id, created_at DESC);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
CREATE TRIGGER webhook_deliveries_updated_at BEFORE UPDATE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

CREATE TABLE webhook_attempts (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    -- The receiver's HTTP status; NULL when none came back (refused, timed out, blocked).
    status_code  integer,
    duration_ms  integer NOT NULL,
    error        text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- The fan-out. A row trigger whose WHEN skips `output_chunk` in C, before any PL/pgSQL runs:
-- output lines are nearly every event written (the benchmarked path), and no webhook may ask
-- for them (the API refuses the kind). For the few other events of a job (queued, started,
-- ended, ...) it costs one scan of `webhooks`, a table of a handful of rows, empty by default.
CREATE FUNCTION otter_webhook_fan_out() RETURNS trigger AS $$
BEGIN
    INSERT INTO webhook_deliveries (id, webhook_id, event_id, kind)
    SELECT gen_random_uuid(), w.id, NEW.id, NEW.kind
    FROM webhooks w
    WHERE NEW.kind = ANY (w.events)
      AND (w.project_id IS NULL OR w.project_id = NEW.project_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER events_webhook_fan_out AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.kind <> 'output_chunk') EXECUTE FUNCTION otter_webhook_fan_out();
