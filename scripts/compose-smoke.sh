#!/usr/bin/env bash
# Usage: scripts/compose-smoke.sh
#
# The whole compose stack, built and brought up here, checked from the host (DESIGN.md invariant
# 12). On a scratch project name and a free port on 127.0.0.1, with the demo model:
#   1. `up -d --build` (profile demo, OTTER_DEMO=true, runtimes on), then wait for health;
#   2. GET /healthz;
#   3. a prompt run by the REAL vibe inside the worker container against the demo model: it ends
#      `succeeded`, its events arrive over SSE at the host, and the file vibe wrote shows in the
#      tree API;
#   4. a workspace command; who jobs run as: the server and the worker are root, the file vibe
#      wrote and the command are the job user's (uid 10001), which can read neither process's
#      /proc/1/environ nor the Docker socket, and the worker holds no API token;
#   5. the runtime API through the mounted socket: an app image built from a Dockerfile in the
#      workspace, started, answering at its preview URL from the host; its logs; stop; the
#      workspace deleted with its container and image;
#   6. `down -v`, then: no container, network or volume of the project and no runtime container
#      or image is left.
# The images themselves (otter/server, otter/worker, otter/demo-model, and otter/build-cache for
# the build stage) are kept: they are the layer cache of the next build. Superseded layers of
# Otter's own stages (label org.otter.stage) are pruned, so repeated runs do not fill the disk.
#
# Base images: the OTTER_*_IMAGE variables when set; else the official images when all are present
# locally; else the stand-ins of scripts/local-base-images.sh (built, or reused, here).
#   OTTER_SMOKE_KEEP=1   leave the stack up on failure, to look at it (then remove it by hand with
#                        the `down -v` command printed)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT"

readonly UP_DEADLINE_SECS=240
readonly JOB_DEADLINE_SECS=300

log() { printf '[compose-smoke] %s\n' "$*"; }
fail() {
  printf '[compose-smoke] FAILED: %s\n' "$*" >&2
  exit 1
}

command -v docker >/dev/null 2>&1 || fail "docker is not installed"
docker info >/dev/null 2>&1 || fail "the Docker engine does not answer"
"$SCRIPT_DIR/services.sh" ensure-tool curl:curl jq:jq openssl:openssl

# ---- base images ----------------------------------------------------------------------------------
official_present() {
  local image
  for image in rust:1-trixie debian:trixie-slim python:3.12-slim-trixie postgres:16-bookworm redis:7-bookworm; do
    docker image inspect "$image" >/dev/null 2>&1 || return 1
  done
}
if [[ -z "${OTTER_RUST_IMAGE:-}${OTTER_DEBIAN_IMAGE:-}${OTTER_PYTHON_IMAGE:-}${OTTER_POSTGRES_IMAGE:-}${OTTER_REDIS_IMAGE:-}" ]] &&
  ! official_present; then
  log "the official base images are not here: using local stand-ins (scripts/local-base-images.sh)"
  ASSIGNMENTS="$("$SCRIPT_DIR/local-base-images.sh")"
  while IFS= read -r line; do
    [[ $line == OTTER_*_IMAGE=* ]] && export "${line?}"
  done <<<"$ASSIGNMENTS"
fi

# ---- a scratch project ------------------------------------------------------------------------------
PROJECT="ottersmoke$$"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export COMPOSE_PROJECT_NAME="$PROJECT"
export OTTER_HTTP_PORT="$PORT"
export OTTER_DEMO=true
export OTTER_RUNTIME_ENABLED=true
export OTTER_RUNTIME_NETWORK="${PROJECT}_default"
export OTTER_RUNTIME_CONTAINER_PREFIX="$PROJECT-ws"
export OTTER_RUNTIME_IMAGE_PREFIX="$PROJECT/workspace"
export OTTER_RUNTIME_DEFAULT_HOST=http://127.0.0.1
# An operator's .env must not change what is tested: compose reads an empty env file instead.
SCRATCH="$(mktemp -d /tmp/otter-compose-smoke.XXXXXX)"
: >"$SCRATCH/empty.env"
COMPOSE=("$SCRIPT_DIR/compose.sh" --env-file "$SCRATCH/empty.env" -f "$ROOT/docker-compose.yml" -p "$PROJECT" --profile demo)
BASE_URL="http://127.0.0.1:$PORT"

# leftovers: every object of the project still on the engine, one per line.
leftovers() {
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^/container /'
  docker ps -aq --filter "name=^/$PROJECT-ws" | sed 's/^/runtime container /'
  docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^/network /'
  docker network ls -q --filter "name=^${PROJECT}_" | sed 's/^/network /'
  docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | sed 's/^/volume /'
  docker images -q "$PROJECT/workspace-*" | sed 's/^/runtime image /'
}

# teardown: down -v, then remove what compose does not own (runtime containers and images).
teardown() {
  "${COMPOSE[@]}" down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  docker ps -aq --filter "name=^/$PROJECT-ws" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker images -q "$PROJECT/workspace-*" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker network ls -q --filter "name=^${PROJECT}_" | xargs -r docker network rm >/dev/null 2>&1 || true
}

on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    log "--- the stack's last log lines ---"
    "${COMPOSE[@]}" logs --no-color --tail 60 2>&1 | tail -n 200 || true
    if [[ "${OTTER_SMOKE_KEEP:-}" == 1 ]]; then
      log "left up (OTTER_SMOKE_KEEP=1); remove with: COMPOSE_PROJECT_NAME=$PROJECT ${COMPOSE[*]} down -v"
      exit "$rc"
    fi
  fi
  teardown
  rm -rf "$SCRATCH"
  exit "$rc"
}
trap on_exit EXIT

# api METHOD PATH [JSON]: the response body; fails on a non-2xx status, printing the body.
api() {
  local method=$1 path=$2 body=${3:-} out status
  out="$(mktemp)"
  if [[ -n $body ]]; then
    status="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE_URL$path" \
      -H 'content-type: application/json' --data "$body")" || { rm -f "$out"; fail "$method $path: curl failed"; }
  else
    status="$(curl -sS -o "$out" -w '%{http_code}' -X "$method" "$BASE_URL$path")" ||
      { rm -f "$out"; fail "$method $path: curl failed"; }
  fi
  if [[ $status != 2* ]]; then
    cat "$out" >&2
    rm -f "$out"
    fail "$method $path answered $status"
  fi
  cat "$out"
  rm -f "$out"
}

# ---- 1. up ------------------------------------------------------------------------------------------
log "project $PROJECT on 127.0.0.1:$PORT; docker group $(stat -c %g /var/run/docker.sock)"
log "up -d --build (images otter/server, otter/worker, otter/demo-model; base ${OTTER_RUST_IMAGE:-rust:1-trixie}, ${OTTER_PYTHON_IMAGE:-python:3.12-slim-trixie})"
BUILD_START=$SECONDS
if ! "${COMPOSE[@]}" up -d --build >"$SCRATCH/up.log" 2>&1; then
  tail -n 60 "$SCRATCH/up.log" >&2
  fail "up -d --build failed (the end of its output is above)"
fi
log "up took $((SECONDS - BUILD_START))s"
# The build stage, tagged, so that its layers (the dependency cache above all) stay while the
# layers of earlier builds, now dangling, are pruned: repeated runs do not fill the disk.
BUILD_ARGS=()
for arg in OTTER_RUST_IMAGE OTTER_DEBIAN_IMAGE OTTER_PYTHON_IMAGE OTTER_EXTRA_CA_CERT; do
  [[ -n "${!arg:-}" ]] && BUILD_ARGS+=(--build-arg "$arg=${!arg}")
done
DOCKER_BUILDKIT=0 docker build -q --target build "${BUILD_ARGS[@]}" -t "${OTTER_IMAGE_PREFIX:-otter}/build-cache" "$ROOT" >/dev/null ||
  fail "tagging the build stage failed"
docker image prune -f --filter label=org.otter.stage >/dev/null

deadline=$((SECONDS + UP_DEADLINE_SECS))
until curl -fsS "$BASE_URL/healthz" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || fail "/healthz did not answer 200 within ${UP_DEADLINE_SECS}s"
  sleep 1
done

# The extra-CA build input: the script every downloading build step runs trusts a certificate
# given in OTTER_EXTRA_CA_CERT (a fresh self-signed one), and refuses text that is not one.
CA_CERT="$(openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -subj "/CN=otter-smoke-ca-$PROJECT" -days 1 2>/dev/null)" ||
  fail "openssl could not make a test certificate"
CA_LINE="$(sed -n 2p <<<"$CA_CERT")"
docker run --rm --user 0 --entrypoint sh -e OTTER_EXTRA_CA_CERT="$CA_CERT" -e CA_LINE="$CA_LINE" \
  "${OTTER_IMAGE_PREFIX:-otter}/server" -c \
  'sh /usr/local/lib/otter/trust-extra-ca.sh >/dev/null 2>&1 && grep -qF "$CA_LINE" /etc/ssl/certs/ca-certificates.crt' ||
  fail "a certificate given in OTTER_EXTRA_CA_CERT is not in the system bundle after trust-extra-ca.sh"
docker run --rm --user 0 --entrypoint sh -e OTTER_EXTRA_CA_CERT="not a certificate" "${OTTER_IMAGE_PREFIX:-otter}/server" \
  -c 'sh /usr/local/lib/otter/trust-extra-ca.sh' >/dev/null 2>&1 && fail "OTTER_EXTRA_CA_CERT accepted text that is no certificate"
log "OTTER_EXTRA_CA_CERT: a given certificate is trusted, other text refused"

# ---- 2. health ----------------------------------------------------------------------------------------
HEALTH="$(api GET /healthz)"
[[ "$(jq -r .status <<<"$HEALTH")" == ok ]] || fail "/healthz: $HEALTH"
log "healthz: $HEALTH"
for service in postgres redis otter-server otter-worker otter-demo-model; do
  [[ -n "$("${COMPOSE[@]}" ps -q "$service")" ]] || fail "service $service is not running"
done

# ---- 3. a prompt, by the real vibe and the demo model ---------------------------------------------------
WS="$(api POST /v1/workspaces '{"name": "smoke", "path": "/workspaces/smoke", "create": true}')"
WS_ID="$(jq -r .id <<<"$WS")"
JOB="$(api POST /v1/prompts "$(jq -n --arg ws "$WS_ID" '{prompt: "Write a greeting to a file, then show it.", workspace_id: $ws}')")"
JOB_ID="$(jq -r .id <<<"$JOB")"
log "job $JOB_ID in workspace $WS_ID"

# The event stream, read at the host until `event: end` (or the deadline).
SSE="$(curl -sS -N --max-time "$JOB_DEADLINE_SECS" "$BASE_URL/v1/events/stream?job_id=$JOB_ID" || true)"
grep -q '^event: end' <<<"$SSE" || fail "the SSE stream did not reach 'event: end' within ${JOB_DEADLINE_SECS}s:
$SSE"
for kind in job_queued job_started output_chunk job_succeeded; do
  grep -q "^event: $kind\$" <<<"$SSE" || fail "no '$kind' event over SSE"
done
SSE_EVENTS="$(grep -c '^event: ' <<<"$SSE")"

JOB="$(api GET "/v1/jobs/$JOB_ID")"
[[ "$(jq -r .status <<<"$JOB")" == succeeded ]] || fail "the job did not succeed: $JOB"
[[ "$(jq -r .output.model <<<"$JOB")" == otter-demo ]] || fail "the job's output does not name the model otter-demo: $(jq -c .output <<<"$JOB")"
[[ "$(jq -r .output.cost <<<"$JOB")" == 0 ]] || fail "the demo model's run cost something: $(jq -c .output <<<"$JOB")"
VIBE_VERSION="$(jq -r .output.export.vibe_version <<<"$JOB")"
[[ $VIBE_VERSION == 3.0.3 ]] || fail "the run was not made by vibe 3.0.3 (export says '$VIBE_VERSION')"

# What vibe did, from the stored events: reasoning, a file write, a shell command, the answer.
EVENTS="$(api GET "/v1/jobs/$JOB_ID/events?limit=500")"
SHAPE="$(jq -r '[.items[] | select(.kind == "output_chunk" and .payload.stream == "stdout") | .payload.entry
  | "\(.type):\(.role // .detail.kind // "")"] | join(" ")' <<<"$EVENTS")"
for part in reasoning: effect:file_write effect:shell message:assistant; do
  grep -qw -- "$part" <<<"$SHAPE" || fail "vibe's entries lack $part: $SHAPE"
done
WRITTEN="$(jq -r '[.items[] | .payload.entry? // empty | select(.type == "effect" and .detail.kind == "file_write")
  | (.detail.input.filePath // .detail.input.path)][0]' <<<"$EVENTS")"
[[ -n $WRITTEN && $WRITTEN != null ]] || fail "no file_write effect names its path"
WRITTEN="${WRITTEN#/workspaces/smoke/}"
TREE="$(api GET "/v1/workspaces/$WS_ID/tree")"
jq -e --arg p "$WRITTEN" '[.. | objects | select(.kind? == "file") | .path] | index($p) != null' <<<"$TREE" >/dev/null ||
  fail "the file vibe wrote ($WRITTEN) is not in the tree: $TREE"
log "job succeeded: $SSE_EVENTS events over SSE, entries: $SHAPE; wrote $WRITTEN"

# ---- 4. a workspace command ---------------------------------------------------------------------------
CMD="$(api POST "/v1/workspaces/$WS_ID/command" "$(jq -n --arg c "cat '$WRITTEN' >/dev/null && id -u && pwd" '{command: $c, timeout_secs: 30}')")"
[[ "$(jq -r .exit_code <<<"$CMD")" == 0 ]] || fail "the workspace command failed: $CMD"
[[ "$(jq -r .stdout <<<"$CMD")" == $'10001\n/workspaces/smoke' ]] || fail "the command did not run as uid 10001 in the workspace: $CMD"
log "workspace command ran as uid 10001 in /workspaces/smoke"

# Who jobs run as (docs/workspace-trust-model.md): the server and the worker as root, vibe (the
# owner of what it wrote) and commands as the job user, who reaches none of their secrets.
for service in otter-server otter-worker; do
  [[ "$("${COMPOSE[@]}" exec -T "$service" awk '/^Uid:/ {print $2}' /proc/1/status)" == 0 ]] ||
    fail "$service does not run as root, so its jobs cannot run as another user"
  "${COMPOSE[@]}" exec -T --user 10001 "$service" sh -c 'head -c1 /proc/1/environ' >/dev/null 2>&1 &&
    fail "the job user can read the environment of $service"
done
"${COMPOSE[@]}" exec -T otter-worker sh -c 'test -z "${OTTER_API_TOKENS+set}"' ||
  fail "the worker was given OTTER_API_TOKENS"
PROBE="$(jq -n --arg c "stat -c %u '$WRITTEN'; env | grep -c '^OTTER_API_TOKENS=\|^OTTER_DATABASE_URL=\|^OTTER_REDIS_URL=' || true
head -c1 /proc/1/environ >/dev/null 2>&1 && echo environ-read || echo environ-denied
curl -s --unix-socket /var/run/docker.sock http://docker/version >/dev/null 2>&1 && echo docker-open || echo docker-refused" \
  '{command: $c, timeout_secs: 30}')"
CMD="$(api POST "/v1/workspaces/$WS_ID/command" "$PROBE")"
[[ "$(jq -r .stdout <<<"$CMD")" == $'10001\n0\nenviron-denied\ndocker-refused' ]] ||
  fail "a job reached what it must not (want: vibe's file owned by 10001, no secret, environ and socket denied): $CMD"
log "jobs run as uid 10001 (vibe's file, commands): no secret, no /proc/1/environ, no Docker socket; server and worker are root; the worker has no token"

# ---- 5. the runtime API, through the mounted socket ----------------------------------------------------
APP_BASE="${OTTER_PYTHON_IMAGE:-python:3.12-slim-trixie}"
MARK="otter-smoke-$PROJECT"
SCRIPT="mkdir -p app && cd app && printf '%s\n' '$MARK' >index.html && printf 'FROM $APP_BASE\nCOPY index.html /srv/\nWORKDIR /srv\nEXPOSE 8000\nCMD [\"python3\", \"-u\", \"-m\", \"http.server\", \"8000\"]\n' >Dockerfile"
CMD="$(api POST "/v1/workspaces/$WS_ID/command" "$(jq -n --arg c "$SCRIPT" '{command: $c}')")"
[[ "$(jq -r .exit_code <<<"$CMD")" == 0 ]] || fail "writing the app failed: $CMD"
START="$(api POST "/v1/runtime/workspaces/$WS_ID/start")"
URL="$(jq -r .runtime_url <<<"$START")"
[[ $URL == http://127.0.0.1:* ]] || fail "start gave no preview URL on 127.0.0.1: $START"
deadline=$((SECONDS + 60))
until [[ "$(curl -fsS "$URL/index.html" 2>/dev/null)" == "$MARK" ]]; do
  ((SECONDS < deadline)) || fail "the app did not answer at $URL within 60s: $(api GET "/v1/runtime/workspaces/$WS_ID")"
  sleep 1
done
LOGS="$(api GET "/v1/runtime/workspaces/$WS_ID/logs?tail=20")"
grep -q 'index.html' <<<"$LOGS" || fail "the app's logs do not show the request: $LOGS"
STOPPED="$(api POST "/v1/runtime/workspaces/$WS_ID/stop")"
[[ "$(jq -r .status <<<"$STOPPED")" != running ]] || fail "stop left it running: $STOPPED"
! curl -fsS --max-time 3 "$URL/index.html" >/dev/null 2>&1 || fail "the app still answers after stop"
api DELETE "/v1/workspaces/$WS_ID?force=true" >/dev/null
log "runtime: built from the workspace's Dockerfile, answered at $URL, logs and stop work"

# ---- 6. down -v, and nothing left ------------------------------------------------------------------------
trap - EXIT
teardown
rm -rf "$SCRATCH"
LEFT="$(leftovers | sort -u)"
[[ -z $LEFT ]] || fail "left behind after down -v: $LEFT"
log "down -v: no container, network, volume or runtime container of $PROJECT is left"
log "PASSED"
