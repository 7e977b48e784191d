-- Idempotency keys and the audit trail (issue 18, parts 1 and 3).
--
-- `idempotency_keys`: one row per (scope, key), scope being the actor (token name or
-- fingerprint) that sent the key. The primary key decides which of several concurrent requests
-- with one key runs: the one whose INSERT claimed the row (state `in_progress`); the others
-- find the row and answer from it (the stored answer once `done`, 409 while `in_progress`, 422
-- when their body's hash differs). `request_hash` is the SHA-256 of the body's canonical bytes.
-- A row older than OTTER_IDEMPOTENCY_TTL is purged by the server, and may be claimed again
-- before then (the claim's upsert replaces an expired row).
CREATE TABLE idempotency_keys (
    scope           text NOT NULL,
    key             text NOT NULL,
    method          text NOT NULL,
    route           text NOT NULL,
    request_hash    bytea NOT NULL,
    state           text NOT NULL DEFAULT 'in_progress'
                    CHECK (state IN ('in_progress', 'done')),
    response_status integer,
    response_body   bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key),
    CHECK (state = 'in_progress' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
CREATE TRIGGER idempotency_keys_updated_at BEFORE UPDATE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();

-- `audit_log`: one row per state-changing request, written *before* the request is acted on
-- (`status` NULL), then completed with the answer's status and the created object's id. A row
-- whose status stays NULL is a request whose outcome was not recorded (the server died, or the
-- database went away mid-request): it may or may not have taken effect. `actor` is a token's
-- name, `token:<first 8 hex of its SHA-256>` for an unnamed token, `job:<id>` for a job's
-- token, or `anonymous` when the API has no tokens. No token is ever stored.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    method      text NOT NULL,
    route       text NOT NULL,
    path        text NOT NULL,
    target_ids  text[] NOT NULL DEFAULT '{}',
    created_id  text,
    status      integer,
    request_id  text,
    finished_at timestamptz
);
CREATE INDEX audit_log_actor ON audit_log (actor, id DESC);
CREATE INDEX audit_log_target_ids ON audit_log USING gin (target_ids);
