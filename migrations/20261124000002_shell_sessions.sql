-- Shell sessions of the command endpoints (POST /v1/workspaces/{id}/command): the directory the
-- next command of a session starts in, so that `cd` persists between commands on any server
-- replica. The directory is always canonical and inside the session's workspace.

CREATE TABLE shell_sessions (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    cwd          text NOT NULL CHECK (length(cwd) > 0),
    -- Set while a command of the session runs: a second command is refused (409) until the
    -- holder releases it, or until busy_until when the holding server died.
    busy_token   uuid,
    busy_until   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((busy_token IS NULL) = (busy_until IS NULL))
);
-- Pruning a workspace's idle sessions.
CREATE INDEX shell_sessions_workspace_idx ON shell_sessions (workspace_id, last_used_at);
CREATE TRIGGER shell_sessions_updated_at BEFORE UPDATE ON shell_sessions
    FOR EACH ROW EXECUTE FUNCTION otter_set_updated_at();
