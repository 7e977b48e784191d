# shellcheck shell=bash
# Usage: source scripts/env.sh      (or: . scripts/env.sh; print with scripts/services.sh env)
#
# Exports the settings Otter's scripts, tests and binaries use to find the
# project-private PostgreSQL and Redis started by scripts/services.sh.
# Every variable keeps a value you already set; only unset ones get defaults.
#
# This file is meant to be *sourced*, also into interactive shells, so it
# deliberately does NOT run `set -euo pipefail` (that would change the options
# of the shell that sources it). It is written to be safe under `set -u`.

# Home directory even when $HOME is unset (some CI and cron environments).
_otter_home="${HOME:-$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)}"
_otter_home="${_otter_home:-/tmp}"

# Where services keep their data, logs and pid files.
: "${OTTER_STATE_DIR:=$_otter_home/.cache/otter}"
# Make it absolute, so every script (whatever its cwd) means the same dir.
case "$OTTER_STATE_DIR" in
/*) ;;
*) OTTER_STATE_DIR="$PWD/$OTTER_STATE_DIR" ;;
esac
# Private ports, so the instances never clash with a system PostgreSQL/Redis.
: "${OTTER_PG_PORT:=54329}"
: "${OTTER_REDIS_PORT:=63799}"
export OTTER_STATE_DIR OTTER_PG_PORT OTTER_REDIS_PORT

# Connection URLs (role/password/database are created by scripts/services.sh).
: "${DATABASE_URL:=postgres://otter:otter@127.0.0.1:$OTTER_PG_PORT/otter}"
: "${OTTER_DATABASE_URL:=$DATABASE_URL}"
: "${REDIS_URL:=redis://127.0.0.1:$OTTER_REDIS_PORT}"
: "${OTTER_REDIS_URL:=$REDIS_URL}"
export DATABASE_URL OTTER_DATABASE_URL REDIS_URL OTTER_REDIS_URL

# Build cache outside the clone: CI works on a fresh clone every time, and a
# shared target dir keeps incremental builds (and therefore CI) fast.
: "${CARGO_TARGET_DIR:=$_otter_home/.cache/otter/target}"
export CARGO_TARGET_DIR

unset _otter_home
