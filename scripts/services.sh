#!/usr/bin/env bash
# Usage: scripts/services.sh [start|stop|status|env|drop-test-dbs|ensure-tool CMD:PKG...]
#
# Runs Otter's project-private PostgreSQL and Redis on 127.0.0.1 only.
#   start   (default) install what is missing, start both (or reuse an instance
#           already answering on the port), wait until healthy, print the URLs
#   stop    stop both instances started from this state dir
#   status  report both; exit 0 only when both answer
#   env     print `export` lines (eval "$(scripts/services.sh env)")
#   drop-test-dbs  drop the databases earlier test and benchmark runs left
#           (otter_test_<uuid>, one per test); one still in use is kept
#   job-user  (as root) create OTTER_JOB_USER (default otter-job) if missing;
#           `start` does it too. Otter running as root runs vibe, setup.sh and
#           commands as that unprivileged user (docs/workspace-trust-model.md)
#   ensure-tool CMD:PKG...  install Debian package PKG when command CMD is
#           missing (helper used by the other scripts, e.g. curl:curl)
#
# Settings (see scripts/env.sh): OTTER_STATE_DIR (default ~/.cache/otter),
# OTTER_PG_PORT (54329), OTTER_REDIS_PORT (63799).
#
# Layout under $OTTER_STATE_DIR:
#   pg/data  pg/sock  pg/postgres.log   PostgreSQL cluster, unix socket, log
#   redis/redis.conf redis/redis.pid redis/data/   Redis config, pid, AOF/RDB
#   logs/redis.log, logs/postgres.log (symlink to pg/postgres.log)
#   services.lock                       serialises concurrent start/stop
#
# Root vs non-root:
#   * PostgreSQL refuses to run as root. As root, the cluster is owned by the
#     `postgres` system user and initdb/pg_ctl run via `runuser -u postgres`.
#     That user must be able to traverse every parent of the data dir. When
#     $OTTER_STATE_DIR is not reachable for it (typically /root is mode 700),
#     we do NOT loosen permissions on the home directory; instead the cluster
#     lives in /var/tmp/otter-0/<hash of state dir>/pg (root-owned, mode 711,
#     survives reboots, unique per state dir) and $OTTER_STATE_DIR/pg is a
#     symlink to it, so the layout above still holds. Once chosen, the
#     location is kept (the symlink or real dir is reused on later runs).
#   * Not root: everything runs as the current user; missing packages are
#     installed with sudo when available, otherwise we fail saying what to
#     install.
# Redis runs as the invoking user in both cases.
set -euo pipefail

readonly DEADLINE_SECS=30
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"
export DEBIAN_FRONTEND=noninteractive
# runuser, useradd etc. live in /usr/sbin, which minimal PATHs may lack.
case ":$PATH:" in
*:/usr/sbin:*) ;;
*) PATH="$PATH:/usr/sbin:/sbin" ;;
esac

STATE="$OTTER_STATE_DIR"
LOG_DIR="$STATE/logs"
REDIS_DIR="$STATE/redis"
REDIS_CONF="$REDIS_DIR/redis.conf"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"
PG_SUPERUSER=postgres # bootstrap superuser name given to initdb

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[services] ERROR: %s\n' "$*" >&2
  exit 1
}
is_root() { [[ "$(id -u)" -eq 0 ]]; }

# ---------------------------------------------------------------- packages --

APT_UPDATED=0
# apt_install PKG... : install Debian packages non-interactively, as root or
# via passwordless-capable sudo; otherwise fail with what to install.
apt_install() {
  local -a pre=()
  if ! is_root; then
    if command -v sudo >/dev/null 2>&1; then
      # With no terminal (CI) sudo must not wait for a password prompt.
      if [[ -t 0 ]]; then pre=(sudo); else pre=(sudo -n); fi
      pre+=(env DEBIAN_FRONTEND=noninteractive)
    else
      die "missing packages: $*. Not root and sudo is not available: install them yourself, e.g. 'apt-get install -y $*' as root."
    fi
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages: $* and apt-get is not available: install PostgreSQL (initdb, pg_ctl, psql, pg_isready) and redis-server/redis-cli with your package manager."
  local -a apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
  if [[ "$APT_UPDATED" -eq 0 ]]; then
    log "apt-get update"
    "${pre[@]}" "${apt[@]}" update >/dev/null ||
      die "apt-get update failed (need: $*)${pre[0]:+; sudo may need a password: run 'sudo apt-get install -y $*' yourself}"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  "${pre[@]}" "${apt[@]}" install --no-install-recommends "$@" ||
    die "could not install: $* (try 'sudo apt-get install -y $*')"
}

# ensure_tool CMD:PKG... : install PKG for every CMD not on PATH.
ensure_tool() {
  local spec missing=()
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || missing+=("${spec#*:}")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || die "'${spec%%:*}' still missing after installing ${spec#*:}"
  done
}

# Newest /usr/lib/postgresql/<ver>/bin that has initdb (Debian layout), or "".
newest_pg_bin() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
    best="$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n1)"
  done
  printf '%s' "$best"
}

ensure_installed() {
  local -a missing=()
  [[ -n "$(newest_pg_bin)" ]] || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  if [[ ${#missing[@]} -gt 0 ]]; then apt_install "${missing[@]}"; fi
  [[ -n "$(newest_pg_bin)" ]] || die "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"
  command -v redis-server >/dev/null 2>&1 || die "redis-server not found after install"
  command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found after install"
  if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user (install the 'postgresql' package)"
    command -v runuser >/dev/null 2>&1 || die "running as root needs 'runuser' (package util-linux)"
  fi
}

# ------------------------------------------------------------- postgresql --

# Resolve PG_BASE (the dir holding data/, sock/, postgres.log). See header.
resolve_pg_base() {
  local link="$STATE/pg"
  if [[ -L "$link" ]]; then
    PG_BASE="$(readlink -f "$link")"
  elif [[ -d "$link" ]] || ! is_root || runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
    PG_BASE="$link"
  else
    local root_dir key
    root_dir="/var/tmp/otter-$(id -u)"
    key="$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
    PG_BASE="$root_dir/$key/pg"
    # /var/tmp is world-writable: refuse a dir someone else planted there.
    if [[ -L "$root_dir" ]] || { [[ -e "$root_dir" ]] && [[ "$(stat -c %u "$root_dir")" != "0" ]]; }; then
      die "$root_dir exists but is not a root-owned directory; remove it and retry"
    fi
    mkdir -p "$root_dir/$key"
    chmod 711 "$root_dir" "$root_dir/$key" # postgres may traverse, not list
    ln -sfn "$PG_BASE" "$link"
  fi
  PGDATA="$PG_BASE/data"
  PG_SOCK="$PG_BASE/sock"
  PG_LOG="$PG_BASE/postgres.log"
}

# Choose binaries: those matching an existing cluster's PG_VERSION, else newest.
resolve_pg_bin() {
  PG_BIN="$(newest_pg_bin)"
  if [[ -f "$PGDATA/PG_VERSION" ]]; then
    local ver
    ver="$(cat "$PGDATA/PG_VERSION")"
    if [[ -x "/usr/lib/postgresql/$ver/bin/pg_ctl" ]]; then
      PG_BIN="/usr/lib/postgresql/$ver/bin"
    else
      die "$PGDATA was created by PostgreSQL $ver, whose binaries are not installed; install postgresql-$ver or remove $PG_BASE"
    fi
  fi
}

# Run a PostgreSQL server binary as the cluster owner (postgres when root).
# cd / first: runuser keeps the cwd, which may be unreadable for postgres.
# 9>&- : never leak the services.lock fd into the (long-lived) postmaster,
# or it would keep the lock held for as long as the server runs.
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@" 9>&-)
  else
    "$@" 9>&-
  fi
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$OTTER_PG_PORT" -t 2 >/dev/null 2>&1; }

# pid of a live postmaster for our data dir, or "" (stale pid files ignored).
pg_running_pid() {
  local pid
  [[ -f "$PGDATA/postmaster.pid" ]] || return 0
  pid="$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres* ]]; then
    printf '%s' "$pid"
  fi
}

pg_tail_log() {
  warn "last lines of $PG_LOG:"
  tail -n 40 "$PG_LOG" >&2 2>/dev/null || true
}

pg_init() {
  mkdir -p "$PG_BASE" "$PG_SOCK"
  if is_root; then chown postgres:postgres "$PG_BASE" "$PG_SOCK"; fi
  chmod 700 "$PG_BASE" "$PG_SOCK"
  if [[ -f "$PGDATA/PG_VERSION" ]]; then return 0; fi
  # A half-made data dir from an interrupted initdb: start it over.
  if [[ -d "$PGDATA" ]]; then rm -rf "$PGDATA"; fi
  local locale=C
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then locale=C.UTF-8; fi
  log "initdb $PGDATA ($("$PG_BIN/postgres" --version))"
  # Local (unix socket, private dir) connections are trusted so this script
  # can bootstrap; TCP on 127.0.0.1 requires the password (scram), exactly
  # like DATABASE_URL provides. fsync stays ON: tests include crash tests.
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$PG_SUPERUSER" --encoding=UTF8 --locale="$locale" \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_BASE/initdb.log" 2>&1 || {
    cat "$PG_BASE/initdb.log" >&2
    die "initdb failed"
  }
  # Our settings live in otter.conf, rewritten on every start.
  printf "\n# Otter dev/test settings (written by scripts/services.sh)\ninclude_if_exists = 'otter.conf'\n" |
    as_pg tee -a "$PGDATA/postgresql.conf" >/dev/null
}

pg_write_conf() {
  as_pg tee "$PGDATA/otter.conf" >/dev/null <<EOF
# Written by scripts/services.sh on every start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $OTTER_PG_PORT
unix_socket_directories = '$PG_SOCK'
unix_socket_permissions = 0700
max_connections = 300
# tests run crash/recovery scenarios: keep durability settings at defaults
fsync = on
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

# Create role otter (SUPERUSER, password otter) and database otter, idempotently.
pg_bootstrap() {
  local -a psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$OTTER_PG_PORT" -U "$PG_SUPERUSER" -d postgres)
  if [[ ! -S "$PG_SOCK/.s.PGSQL.$OTTER_PG_PORT" ]]; then
    warn "no unix socket in $PG_SOCK (instance on port $OTTER_PG_PORT not started from this state dir?); skipping role/database bootstrap"
    return 0
  fi
  "${psql[@]}" <<'SQL' >/dev/null
SELECT 'CREATE ROLE otter' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'otter')
\gexec
ALTER ROLE otter WITH LOGIN SUPERUSER CREATEDB CREATEROLE PASSWORD 'otter';
SELECT 'CREATE DATABASE otter OWNER otter' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'otter')
\gexec
SQL
}

pg_start() {
  resolve_pg_base
  resolve_pg_bin
  mkdir -p "$LOG_DIR"
  ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
  if pg_ready; then
    log "PostgreSQL already up on 127.0.0.1:$OTTER_PG_PORT, reusing it"
  else
    pg_init
    local pid port=""
    pid="$(pg_running_pid)"
    if [[ -n "$pid" ]]; then
      # Our postmaster is alive but not ready. Line 4 of postmaster.pid is its
      # port: same port means it is still starting (e.g. crash recovery), so
      # just wait; another port means the configuration changed: restart.
      port="$(sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null || true)"
      if [[ "$port" == "$OTTER_PG_PORT" ]]; then
        log "PostgreSQL pid $pid is starting up; waiting"
      else
        warn "postmaster $pid of $PGDATA listens on port '$port', not $OTTER_PG_PORT; restarting it"
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$DEADLINE_SECS" stop >/dev/null || true
        pid=""
      fi
    elif [[ -f "$PGDATA/postmaster.pid" ]]; then
      # Stale lock (crash, container restart). Postgres would refuse to start
      # if the old pid now belongs to another process, so remove it ourselves.
      warn "removing stale $PGDATA/postmaster.pid"
      rm -f "$PGDATA/postmaster.pid"
    fi
    if [[ -z "$pid" ]]; then
      # No postmaster of ours is alive: socket lock files here are stale too.
      rm -f "$PG_SOCK"/.s.PGSQL.* 2>/dev/null || true
      pg_write_conf
      log "starting PostgreSQL on 127.0.0.1:$OTTER_PG_PORT (data: $PGDATA)"
      if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$DEADLINE_SECS" start >/dev/null; then
        pg_tail_log
        die "pg_ctl start failed (see log above)"
      fi
    fi
    local end=$((SECONDS + DEADLINE_SECS))
    until pg_ready; do
      if ((SECONDS >= end)); then
        pg_tail_log
        die "PostgreSQL not accepting connections on 127.0.0.1:$OTTER_PG_PORT after ${DEADLINE_SECS}s"
      fi
      sleep 0.5
    done
  fi
  pg_bootstrap
  if ! "$PG_BIN/psql" -X -q -d "$DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1; then
    pg_tail_log
    die "PostgreSQL is up but '$DATABASE_URL' does not work (role/database otter missing or wrong password?)"
  fi
}

pg_stop() {
  if [[ ! -e "$STATE/pg" && ! -L "$STATE/pg" ]]; then
    log "PostgreSQL: no cluster in $STATE/pg"
    return 0
  fi
  resolve_pg_base
  [[ -d "$PGDATA" ]] || {
    log "PostgreSQL: no cluster at $PGDATA"
    return 0
  }
  resolve_pg_bin
  if [[ -n "$(pg_running_pid)" ]]; then
    log "stopping PostgreSQL ($PGDATA)"
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t "$DEADLINE_SECS" stop >/dev/null ||
      die "pg_ctl stop failed"
  else
    log "PostgreSQL ($PGDATA) is not running"
    rm -f "$PGDATA/postmaster.pid"
  fi
}

# ------------------------------------------------------------------ redis --

redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p "$OTTER_REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

# pid of a live redis-server from our pid file, or "".
redis_running_pid() {
  local pid
  [[ -f "$REDIS_PID" ]] || return 0
  pid="$(head -n1 "$REDIS_PID" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]]; then
    printf '%s' "$pid"
  fi
}

redis_tail_log() {
  warn "last lines of $REDIS_LOG:"
  tail -n 40 "$REDIS_LOG" >&2 2>/dev/null || true
}

redis_write_conf() {
  mkdir -p "$REDIS_DIR/data" "$LOG_DIR"
  cat >"$REDIS_CONF" <<EOF
# Written by scripts/services.sh on every start; edits are overwritten.
bind 127.0.0.1
port $OTTER_REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PID
logfile $REDIS_LOG
dir $REDIS_DIR/data
appendonly yes
maxmemory-policy noeviction
EOF
}

redis_start() {
  if redis_ready; then
    log "Redis already up on 127.0.0.1:$OTTER_REDIS_PORT, reusing it"
    return 0
  fi
  local pid
  pid="$(redis_running_pid)"
  if [[ -n "$pid" ]]; then
    # Ours but not answering PONG yet (e.g. still loading the AOF): wait below.
    log "Redis pid $pid is running but not ready yet; waiting"
  else
    if [[ -f "$REDIS_PID" ]]; then
      warn "removing stale $REDIS_PID"
      rm -f "$REDIS_PID"
    fi
    redis_write_conf
    log "starting Redis on 127.0.0.1:$OTTER_REDIS_PORT (data: $REDIS_DIR/data)"
    if ! redis-server "$REDIS_CONF" 9>&-; then # 9>&-: see as_pg
      redis_tail_log
      die "redis-server failed to start"
    fi
  fi
  local begin=$SECONDS end=$((SECONDS + DEADLINE_SECS))
  until redis_ready; do
    if ((SECONDS >= end)); then
      redis_tail_log
      die "Redis not answering PING on 127.0.0.1:$OTTER_REDIS_PORT after ${DEADLINE_SECS}s"
    fi
    # Fail fast when the daemon already died (e.g. port taken by something else).
    if ((SECONDS - begin >= 3)) && [[ -z "$(redis_running_pid)" ]]; then
      redis_tail_log
      die "redis-server exited during startup"
    fi
    sleep 0.3
  done
}

redis_stop() {
  local pid
  pid="$(redis_running_pid)"
  if [[ -z "$pid" ]]; then
    log "Redis ($REDIS_DIR) is not running"
    rm -f "$REDIS_PID"
    return 0
  fi
  log "stopping Redis (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true # SIGTERM: redis flushes the AOF and exits
  local end=$((SECONDS + DEADLINE_SECS))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= end)); then
      warn "Redis pid $pid ignored SIGTERM for ${DEADLINE_SECS}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$REDIS_PID"
}

# --------------------------------------------------------------- commands --

# Each test and benchmark creates its own database (otter_test_<uuid>); a run that is killed
# leaves its own behind, and a benchmark's hold millions of rows. Left alone they fill the disk
# and keep autovacuum busy visiting them. Only this project's private instance is touched.
cmd_drop_test_dbs() {
  local stale db dropped=0
  stale=$(psql "$DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'otter\_test\_%'")
  for db in $stale; do
    # Without FORCE: a database still in use (another run on this machine) is left alone.
    if psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1; then
      dropped=$((dropped + 1))
    fi
  done
  log "dropped $dropped stale test database(s)"
}

print_env() {
  local v
  for v in OTTER_STATE_DIR OTTER_PG_PORT OTTER_REDIS_PORT DATABASE_URL OTTER_DATABASE_URL \
    REDIS_URL OTTER_REDIS_URL CARGO_TARGET_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
}

# Serialise start/stop so e.g. test.sh and up.sh running at once don't race.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/services.lock"
  flock -w 300 9 || die "another scripts/services.sh holds $STATE/services.lock"
}

# ensure_job_user: as root, create the unprivileged user Otter runs jobs as
# (OTTER_JOB_USER, default otter-job): a system user with a home of its own (the
# tools vibe runs keep caches there) and no login shell. Not root: nothing to do,
# Otter cannot switch users then.
ensure_job_user() {
  is_root || return 0
  local user="${OTTER_JOB_USER:-otter-job}"
  if [[ "$user" == root ]] || getent passwd "$user" >/dev/null; then return 0; fi
  log "creating the job user $user (useradd --system --create-home)"
  useradd --system --create-home --home-dir "/home/$user" --shell /usr/sbin/nologin \
    --user-group "$user" || die "could not create the job user $user"
}

cmd_start() {
  ensure_installed
  ensure_job_user
  take_lock
  pg_start
  redis_start
  log "PostgreSQL: $DATABASE_URL  (log: $LOG_DIR/postgres.log)"
  log "Redis:      $REDIS_URL  (log: $REDIS_LOG)"
  log "environment: source scripts/env.sh   (or: eval \"\$(scripts/services.sh env)\")"
}

cmd_stop() {
  take_lock
  if [[ -n "$(newest_pg_bin)" ]]; then pg_stop; fi
  redis_stop
}

cmd_status() {
  local rc=0
  if [[ -n "$(newest_pg_bin)" ]]; then
    PGDATA="(none yet)"
    if [[ -e "$STATE/pg" || -L "$STATE/pg" ]]; then resolve_pg_base; fi
    resolve_pg_bin
    if pg_ready; then
      log "PostgreSQL: up   127.0.0.1:$OTTER_PG_PORT  pid=$(pg_running_pid)  data=$PGDATA"
    else
      log "PostgreSQL: down (127.0.0.1:$OTTER_PG_PORT, data=$PGDATA)"
      rc=1
    fi
  else
    log "PostgreSQL: not installed"
    rc=1
  fi
  if command -v redis-cli >/dev/null 2>&1 && redis_ready; then
    log "Redis:      up   127.0.0.1:$OTTER_REDIS_PORT  pid=$(redis_running_pid)  data=$REDIS_DIR/data"
  else
    log "Redis:      down (127.0.0.1:$OTTER_REDIS_PORT, data=$REDIS_DIR/data)"
    rc=1
  fi
  return "$rc"
}

main() {
  local cmd="${1:-start}"
  case "$cmd" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) print_env ;;
  drop-test-dbs) cmd_drop_test_dbs ;;
  job-user) ensure_job_user ;;
  ensure-tool)
    shift
    ensure_tool "$@"
    ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (use start|stop|status|env|drop-test-dbs|job-user|ensure-tool)" ;;
  esac
}

main "$@"
