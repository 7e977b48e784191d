#!/usr/bin/env bash
# Usage: scripts/up.sh [--demo]
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
#
# --demo  also builds otter-demo-model, the scripted demo model (not a real model; README.md,
#         "Demo model"), starts it first on OTTER_DEMO_MODEL_LISTEN (default 127.0.0.1:8090),
#         waits for its /healthz, and runs the server and the worker with OTTER_DEMO=true and
#         OTTER_DEMO_MODEL_URL pointing at it: jobs succeed without any API key.
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

DEMO=0
for arg in "$@"; do
  case "$arg" in
  --demo) DEMO=1 ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: scripts/up.sh [--demo]" >&2
    exit 2
    ;;
  esac
done

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

BINS=(otter-server otter-worker)
((DEMO)) && BINS+=(otter-demo-model)
PACKAGES=()
for b in "${BINS[@]}"; do PACKAGES+=(-p "$b"); done
log "cargo build --release ${PACKAGES[*]}"
cargo build --release "${PACKAGES[@]}"
# CARGO_TARGET_DIR may be relative (to the workspace root, where we are).
BIN_DIR="$(cd "$CARGO_TARGET_DIR/release" && pwd)"
for b in "${BINS[@]}"; do
  [[ -x "$BIN_DIR/$b" ]] || die "build produced no $BIN_DIR/$b"
done

# Local-run defaults; each only if not already set (environment or .env).
: "${OTTER_LISTEN_ADDR:=127.0.0.1:8080}"
# As root, jobs run as OTTER_JOB_USER (scripts/services.sh start creates it), who cannot enter
# root's home: their homes and the default workspace live under /var/lib/otter then.
if [[ "$(id -u)" -eq 0 ]]; then DATA_DIR=/var/lib/otter; else DATA_DIR="$OTTER_STATE_DIR"; fi
: "${OTTER_VIBE_HOME_BASE:=$DATA_DIR/vibe-homes}"
: "${OTTER_DEFAULT_WORKSPACE_PATH:=$DATA_DIR/workspaces/default}"
# A wildcard listen address is reachable locally via 127.0.0.1.
LOCAL_ADDR="${OTTER_LISTEN_ADDR/#0.0.0.0:/127.0.0.1:}"
: "${OTTER_API_BASE_URL:=http://$LOCAL_ADDR}"
export OTTER_LISTEN_ADDR OTTER_VIBE_HOME_BASE OTTER_DEFAULT_WORKSPACE_PATH OTTER_API_BASE_URL
# The default workspace itself is made by Otter on first use, so that it belongs to the job user.
mkdir -p "$OTTER_VIBE_HOME_BASE" "$(dirname "$OTTER_DEFAULT_WORKSPACE_PATH")"

if ((DEMO)); then
  : "${OTTER_DEMO_MODEL_LISTEN:=127.0.0.1:8090}"
  DEMO_LOCAL_ADDR="${OTTER_DEMO_MODEL_LISTEN/#0.0.0.0:/127.0.0.1:}"
  # The server and the worker talk to the demo model this script starts, wherever .env pointed.
  DEMO_URL="http://$DEMO_LOCAL_ADDR/v1"
  if [[ -n "${OTTER_DEMO_MODEL_URL:-}" && "${OTTER_DEMO_MODEL_URL%/}" != "$DEMO_URL" ]]; then
    log "OTTER_DEMO_MODEL_URL=$OTTER_DEMO_MODEL_URL replaced by $DEMO_URL (the demo model started here)"
  fi
  OTTER_DEMO=true
  OTTER_DEMO_MODEL_URL="$DEMO_URL"
  export OTTER_DEMO OTTER_DEMO_MODEL_URL OTTER_DEMO_MODEL_LISTEN
elif [[ "${OTTER_DEMO:-}" =~ ^([Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss]|[Oo][Nn])$ ]]; then
  warn "OTTER_DEMO=${OTTER_DEMO} without --demo: no demo model is started here; jobs need one at ${OTTER_DEMO_MODEL_URL:-http://127.0.0.1:8090/v1}."
fi

if [[ -z "${OTTER_VIBE_BIN:-}" ]] && ! command -v vibe >/dev/null 2>&1; then
  warn "'vibe' is not on PATH and OTTER_VIBE_BIN is unset: jobs will fail until you run scripts/install_mistral_vibe.sh (or set OTTER_VIBE_BIN to the vibe binary)."
elif [[ "$(id -u)" -eq 0 && "${OTTER_JOB_USER:-otter-job}" != root ]]; then
  VIBE_PATH="$(command -v "${OTTER_VIBE_BIN:-vibe}" || true)"
  if [[ -n "$VIBE_PATH" ]] && ! runuser -u "${OTTER_JOB_USER:-otter-job}" -- "$VIBE_PATH" --version >/dev/null 2>&1; then
    warn "$VIBE_PATH cannot be run by the job user ${OTTER_JOB_USER:-otter-job} (is it in root's home?): install vibe where that user can run it (docs/runbook.md), or jobs will fail."
  fi
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

# wait_healthy NAME URL: wait until URL answers 2xx, failing (with NAME's log) if NAME exits
# or the deadline passes.
wait_healthy() {
  local name="$1" url="$2" pid end
  pid="$(cat "$RUN_DIR/$name.pid")"
  end=$((SECONDS + HEALTH_DEADLINE_SECS))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail_with_log "$name" "$name exited during startup"
    ((SECONDS < end)) || fail_with_log "$name" "$url not healthy after ${HEALTH_DEADLINE_SECS}s"
    sleep 0.5
  done
  log "$name healthy at $url"
}

# The demo model first: the worker's first job may need it at once.
if ((DEMO)); then
  launch otter-demo-model
  wait_healthy otter-demo-model "http://$DEMO_LOCAL_ADDR/healthz"
fi

HEALTH_URL="http://$LOCAL_ADDR/healthz"
launch otter-server
wait_healthy otter-server "$HEALTH_URL"

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
if ((DEMO)); then
  cat <<EOF
  demo model:   $OTTER_DEMO_MODEL_URL   (log: $LOG_DIR/otter-demo-model.log)
                OTTER_DEMO=true: every job runs against the scripted demo model, not a real model.
EOF
fi
