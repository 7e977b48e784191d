#!/usr/bin/env bash
# Usage: scripts/compose.sh [COMPOSE ARGUMENTS...]     e.g. scripts/compose.sh up --build -d
#
# Runs Docker Compose on Otter's docker-compose.yml: the v2 plugin (`docker compose`) when the
# docker CLI has it, else docker-compose v1. Before that, it sets what the compose file cannot
# find out by itself, each only when neither the environment nor .env sets it:
#   OTTER_DOCKER_GID   the group that owns the Docker socket (/var/run/docker.sock), added to the
#                      server's and the worker's processes so that they, not root, reach Docker
# Everything else is read by compose itself, from the environment and .env (see .env.example).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT"

die() {
  printf '[compose] ERROR: %s\n' "$*" >&2
  exit 1
}

# in_dotenv NAME: does .env give NAME a non-empty value?
in_dotenv() {
  [[ -f .env ]] && grep -Eq "^[[:space:]]*(export[[:space:]]+)?$1=[^[:space:]#]" .env
}

if [[ -z "${OTTER_DOCKER_GID:-}" ]] && ! in_dotenv OTTER_DOCKER_GID; then
  SOCKET=/var/run/docker.sock
  [[ -S $SOCKET ]] || die "$SOCKET is not a socket: is the Docker engine running here? (or set OTTER_DOCKER_GID in .env)"
  OTTER_DOCKER_GID="$(stat -c %g "$SOCKET")"
  export OTTER_DOCKER_GID
fi

if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
fi
die "neither 'docker compose' nor 'docker-compose' is installed (Debian: apt-get install docker-compose)"
