#!/bin/sh
# The entrypoint of the local PostgreSQL stand-in (scripts/local-base-images.sh): the part of the
# official postgres image's contract that Otter's compose stack uses.
#   * First start (empty $PGDATA): initdb with POSTGRES_USER (default postgres) as superuser and
#     POSTGRES_PASSWORD (required, as in the official image) as its password, scram-sha-256 for
#     every host, then create POSTGRES_DB (default: the user's name) if it is not "postgres".
#   * Every start: listen on all addresses, run as the postgres user, as PID 1 (signals reach it).
# `docker-entrypoint.sh postgres [-c opt=value ...]` is the default command; any other command is
# run as it is.
set -eu

if [ "${1:-postgres}" != postgres ]; then
  exec "$@"
fi
[ $# -gt 0 ] && shift

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: the database is uninitialized and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 --username="$POSTGRES_USER" --dbname=postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "initialized $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi

exec postgres -c listen_addresses='*' "$@"
