#!/usr/bin/env bash
# Usage: scripts/down.sh [--all]
#
# Stops otter-worker, otter-server and otter-demo-model (scripts/up.sh --demo) started by
# scripts/up.sh (pid files in $OTTER_STATE_DIR/run): SIGTERM, wait up to 15 s, then SIGKILL.
# --all also stops the project's PostgreSQL and Redis (scripts/services.sh stop).
set -euo pipefail

readonly STOP_DEADLINE_SECS=15
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"
RUN_DIR="$OTTER_STATE_DIR/run"

ALL=0
case "${1:-}" in
"") ;;
--all) ALL=1 ;;
-h | --help)
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
  ;;
*)
  echo "usage: scripts/down.sh [--all]" >&2
  exit 2
  ;;
esac

log() { printf '[down] %s\n' "$*"; }

# stop_bin NAME: stop the process in run/NAME.pid, but only if that pid still
# is NAME (a stale pid may have been reused by an unrelated process).
stop_bin() {
  local name="$1" pidfile="$RUN_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(head -n1 "$pidfile" 2>/dev/null || true)"
  # /proc/PID/comm is the executable name cut to 15 chars ("otter-server" fits).
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "${name:0:15}" ]]; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + STOP_DEADLINE_SECS))
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= end)); then
        log "$name (pid $pid) still running after ${STOP_DEADLINE_SECS}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  else
    log "$name not running (removing stale $pidfile)"
  fi
  rm -f "$pidfile"
}

# Worker first: it talks to the server and the demo model, not the other way round.
stop_bin otter-worker
stop_bin otter-server
stop_bin otter-demo-model

if [[ $ALL -eq 1 ]]; then
  "$SCRIPT_DIR/services.sh" stop
fi
