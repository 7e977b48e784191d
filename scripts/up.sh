#!/usr/bin/env bash
# Usage: scripts/up.sh
#
# The one command that brings Otter up locally:
#   * loads .env (if present), then scripts/env.sh defaults
#   * starts PostgreSQL + Redis (scripts/services.sh start)
#   * cargo build --release -p otter-server -p otter-worker
#   * (re)starts otter-server, waits for GET /healthz, then starts otter-worker,
#     both in the background with logs in $OTTER_STATE_DIR/logs and pid files
#     in $OTTER_STATE_DIR/run. Running it again restarts both.
# The server applies database migrations itself at start.
# Stop with scripts/down.sh (add --all to stop PostgreSQL and Redis too).
set -euo pipefail

readonly HEALTH_DEADLINE_SECS=60
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT"

log() { printf '[up] %s\n' "$*"; }
warn() { printf '[up] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[up] ERROR: %s\n' "$*" >&2
  exit 1
}

# .env is loaded first (not after the build) so that ports or URLs it sets
# also apply to the services we start and to the URLs env.sh derives.
# Note: `source` assigns unconditionally, so .env wins over the shell's values.
if [[ -f .env ]]; then
  log "loading .env"
  set -a
  # shellcheck source=/dev/null
  source ./.env
  set +a
fi
# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"

if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/nonexistent}/.cargo/env" ]]; then
  # shellcheck source=/dev/null
  source "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
"$SCRIPT_DIR/services.sh" ensure-tool curl:curl

"$SCRIPT_DIR/services.sh" start

log "cargo build --release -p otter-server -p otter-worker"
cargo build --release -p otter-server -p otter-worker
# CARGO_TARGET_DIR may be relative (to the workspace root, where we are).
BIN_DIR="$(cd "$CARGO_TARGET_DIR/release" && pwd)"
for b in otter-server otter-worker; do
  [[ -x "$BIN_DIR/$b" ]] || die "build produced no $BIN_DIR/$b"
done

# Local-run defaults; each only if not already set (environment or .env).
: "${OTTER_LISTEN_ADDR:=127.0.0.1:8080}"
: "${OTTER_VIBE_HOME_BASE:=$OTTER_STATE_DIR/vibe-homes}"
: "${OTTER_DEFAULT_WORKSPACE_PATH:=$OTTER_STATE_DIR/workspaces/default}"
# A wildcard listen address is reachable locally via 127.0.0.1.
LOCAL_ADDR="${OTTER_LISTEN_ADDR/#0.0.0.0:/127.0.0.1:}"
: "${OTTER_API_BASE_URL:=http://$LOCAL_ADDR}"
export OTTER_LISTEN_ADDR OTTER_VIBE_HOME_BASE OTTER_DEFAULT_WORKSPACE_PATH OTTER_API_BASE_URL
mkdir -p "$OTTER_VIBE_HOME_BASE" "$OTTER_DEFAULT_WORKSPACE_PATH"

if [[ -z "${OTTER_VIBE_BIN:-}" ]] && ! command -v vibe >/dev/null 2>&1; then
  warn "'vibe' is not on PATH and OTTER_VIBE_BIN is unset: jobs will fail until you run scripts/install_mistral_vibe.sh (or set OTTER_VIBE_BIN to the vibe binary)."
fi

LOG_DIR="$OTTER_STATE_DIR/logs"
RUN_DIR="$OTTER_STATE_DIR/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"

# Already running per pid files? Stop them first, so this is a restart.
"$SCRIPT_DIR/down.sh"

# launch NAME: start $BIN_DIR/NAME detached (own session, immune to the
# terminal's hangup/Ctrl-C), appending to its log, pid in run/NAME.pid.
launch() {
  local name="$1"
  printf '\n===== %s starting at %s =====\n' "$name" "$(date -u +%FT%TZ)" >>"$LOG_DIR/$name.log"
  setsid nohup "$BIN_DIR/$name" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo "$!" >"$RUN_DIR/$name.pid"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

fail_with_log() {
  local name="$1"
  shift
  warn "last lines of $LOG_DIR/$name.log:"
  tail -n 40 "$LOG_DIR/$name.log" >&2 || true
  die "$*"
}

HEALTH_URL="http://$LOCAL_ADDR/healthz"
launch otter-server
SERVER_PID="$(cat "$RUN_DIR/otter-server.pid")"
end=$((SECONDS + HEALTH_DEADLINE_SECS))
until curl -fsS -o /dev/null --max-time 2 "$HEALTH_URL" 2>/dev/null; do
  kill -0 "$SERVER_PID" 2>/dev/null || fail_with_log otter-server "otter-server exited during startup"
  ((SECONDS < end)) || fail_with_log otter-server "$HEALTH_URL not healthy after ${HEALTH_DEADLINE_SECS}s"
  sleep 0.5
done
log "otter-server healthy at $HEALTH_URL"

# The worker starts once the server is healthy, i.e. migrations are applied.
launch otter-worker
sleep 2
kill -0 "$(cat "$RUN_DIR/otter-worker.pid")" 2>/dev/null ||
  fail_with_log otter-worker "otter-worker exited right after start"

cat <<EOF

Otter is up.
  API:          $OTTER_API_BASE_URL
  health:       curl $HEALTH_URL
  server log:   $LOG_DIR/otter-server.log
  worker log:   $LOG_DIR/otter-worker.log
  PostgreSQL:   $DATABASE_URL   (log: $LOG_DIR/postgres.log)
  Redis:        $REDIS_URL   (log: $LOG_DIR/redis.log)
  stop:         scripts/down.sh        (scripts/down.sh --all also stops PostgreSQL and Redis)
EOF
