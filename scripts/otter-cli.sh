#!/usr/bin/env bash
# Usage: scripts/otter-cli.sh <command> [args...]     (scripts/otter-cli.sh help for the list)
#
# A small client for Otter's HTTP API, for people at a terminal and for scripts.
#   OTTER_URL    the API (default http://127.0.0.1:8080)
#   OTTER_TOKEN  a bearer token (or OTTER_API_TOKEN), when the server requires one
# Output is the API's JSON (pretty-printed when jq or python3 is available); `prompt --follow`
# and `jobs follow` print the job's live output instead. Exit codes: 0 ok, 1 the request failed
# (the API's error message is printed), 2 bad usage.
set -euo pipefail

OTTER_URL="${OTTER_URL:-http://127.0.0.1:8080}"
OTTER_URL="${OTTER_URL%/}"
TOKEN="${OTTER_TOKEN:-${OTTER_API_TOKEN:-}}"

usage() {
  cat <<'USAGE'
usage: otter-cli.sh <command> [args...]

  smoke                                   health check plus a read of every list endpoint
  projects list | create <name> [description] [--budget USD] [--max-running N] | usage <id>
           | budget <id> <USD|none> | max-running <id> <N|none>
  workspaces list | create <path> [name] [--project ID] [--create]
  prompt <text> [--workspace ID] [--follow-up JOB] [--priority N] [--max-attempts N]
         [--model ALIAS] [--max-turns N] [--max-price USD] [--max-tokens N] [--time-limit S]
         [--idempotency-key KEY] [--follow]
  jobs show <id> | events <id> [after] | follow <id> | cancel <id> | pause <id> | resume <id>
  jobs changes <id> | diff <id> [path] | restore <id> before|after
  queue list [limit] [offset] | priority <id> <n>
  history [limit] [offset] [--status S] [--workspace ID] [--session SESSION_ID]
  runtime status|start|stop|restart|logs <workspace id> [tail]
  audit [limit] [offset] [--actor NAME] [--target ID]   who changed what, newest first
  webhooks list | show <id> | create <url> <kind>... [--project ID] [--description TEXT]
  webhooks delete <id> | rotate-secret <id> | deliveries <id> | redeliver <id> <delivery id>

environment: OTTER_URL (default http://127.0.0.1:8080), OTTER_TOKEN (bearer token)
USAGE
}

die_usage() {
  echo "otter-cli: $*" >&2
  echo "run 'otter-cli.sh help' for the commands" >&2
  exit 2
}

command -v curl >/dev/null 2>&1 || {
  echo "otter-cli: curl is required" >&2
  exit 1
}

# pretty: format JSON from stdin when a formatter exists.
pretty() {
  if command -v jq >/dev/null 2>&1; then
    jq .
  elif command -v python3 >/dev/null 2>&1; then
    python3 -m json.tool
  else
    cat
    echo
  fi
}

# json_string VALUE: VALUE as a JSON string literal.
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

# api METHOD PATH [BODY]: prints the response body; exits 1 with the API's message on failure.
api() {
  local method=$1 path=$2 body=${3:-}
  local args=(-sS -X "$method" -w '\n%{http_code}' -H 'accept: application/json')
  [[ -n "$TOKEN" ]] && args+=(-H "authorization: Bearer $TOKEN")
  [[ -n "${IDEMPOTENCY_KEY:-}" ]] && args+=(-H "idempotency-key: $IDEMPOTENCY_KEY")
  [[ -n "$body" ]] && args+=(-H 'content-type: application/json' --data-binary "$body")
  local out
  if ! out=$(curl "${args[@]}" "$OTTER_URL$path"); then
    echo "otter-cli: cannot reach $OTTER_URL (is Otter up? set OTTER_URL)" >&2
    exit 1
  fi
  local code=${out##*$'\n'}
  local response=${out%$'\n'*}
  if [[ "$code" != 2* ]]; then
    local message
    message=$(printf '%s' "$response" | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
    echo "otter-cli: $method $path failed with HTTP $code: ${message:-$response}" >&2
    exit 1
  fi
  printf '%s' "$response"
}

# urlencode TEXT: TEXT for a query string (byte by byte, so any UTF-8 path works).
urlencode() {
  local LC_ALL=C s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case "$c" in
    [a-zA-Z0-9._~/-]) out+=$c ;;
    *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

# field NAME: the first top-level string field NAME of the JSON on stdin (ids, statuses).
field() {
  sed -n "s/^{\"$1\":\"\\([^\"]*\\)\".*/\\1/p; t; s/.*[,{]\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -n 1
}

# follow JOB_ID: prints the job's output lines from the SSE stream until the job ends.
follow() {
  local job=$1
  local args=(-sSN -H 'accept: text/event-stream')
  [[ -n "$TOKEN" ]] && args+=(-H "authorization: Bearer $TOKEN")
  local event="" status=""
  while IFS= read -r line; do
    line=${line%$'\r'}
    case "$line" in
    event:*) event=${line#event:} event=${event# } ;;
    data:*)
      local data=${line#data:}
      data=${data# }
      case "$event" in
      output_chunk) printf '%s\n' "$(printf '%s' "$data" | render_chunk)" ;;
      end) break ;;
      job_succeeded | job_failed | job_cancelled) status=${event#job_} ;;
      *) printf '[%s]\n' "$event" ;;
      esac
      ;;
    esac
  done < <(curl "${args[@]}" "$OTTER_URL/v1/events/stream?job_id=$job")
  echo "[job $job ${status:-ended}]"
  [[ "$status" == succeeded ]]
}

# render_chunk: one output_chunk event (JSON on stdin) as a readable line.
render_chunk() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, sys
e = json.load(sys.stdin)["payload"]
entry = e.get("entry") or {}
text = e.get("text", "")
if entry.get("type") == "message":
    parts = entry.get("content") or []
    body = " ".join(p.get("text", "") for p in parts if isinstance(p, dict)) if isinstance(parts, list) else str(parts)
    text = "%s: %s" % (entry.get("role", "?"), body)
elif entry.get("type") == "effect":
    detail = entry.get("detail") or {}
    state = entry.get("state") or {}
    summary = (detail.get("display") or {}).get("summary") or entry.get("title", "")
    text = "[%s] %s (%s)" % (detail.get("kind", "tool"), summary, state.get("status", "?"))
elif entry.get("type") == "reasoning":
    text = "(thinking) " + entry.get("text", "")
print("%-6s %s" % (e.get("stream", ""), text))
'
  else
    sed -n 's/.*"text":"\([^"]*\)".*/\1/p'
  fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
help | -h | --help) usage ;;
smoke)
  api GET /healthz | pretty
  for path in /v1/projects /v1/workspaces /v1/queue /v1/history; do
    api GET "$path?limit=1" >/dev/null
    echo "ok  GET $path"
  done
  ;;
projects)
  case "${1:-}" in
  list) api GET "/v1/projects?limit=${2:-50}&offset=${3:-0}" | pretty ;;
  create)
    shift
    [[ -n "${1:-}" ]] || die_usage "projects create needs a name"
    body="{\"name\":$(json_string "$1")"
    shift
    while [[ $# -gt 0 ]]; do
      case "$1" in
      --budget) body+=",\"budget_usd\":${2:?--budget needs an amount of USD}" && shift ;;
      --max-running) body+=",\"max_running\":${2:?--max-running needs a number of jobs}" && shift ;;
      *) body+=",\"description\":$(json_string "$1")" ;;
      esac
      shift
    done
    api POST /v1/projects "$body}" | pretty
    ;;
  usage)
    [[ -n "${2:-}" ]] || die_usage "projects usage <id>"
    api GET "/v1/projects/$2/usage" | pretty
    ;;
  budget)
    [[ -n "${2:-}" && -n "${3:-}" ]] || die_usage "projects budget <id> <USD|none>"
    budget=$3
    [[ "$budget" == none ]] && budget=null
    api PATCH "/v1/projects/$2" "{\"budget_usd\":$budget}" | pretty
    ;;
  max-running)
    [[ -n "${2:-}" && -n "${3:-}" ]] || die_usage "projects max-running <id> <N|none>"
    max=$3
    [[ "$max" == none ]] && max=null
    api PATCH "/v1/projects/$2" "{\"max_running\":$max}" | pretty
    ;;
  *) die_usage "projects list|create|usage|budget|max-running" ;;
  esac
  ;;
workspaces)
  case "${1:-}" in
  list) api GET "/v1/workspaces?limit=${2:-50}&offset=${3:-0}" | pretty ;;
  create)
    shift
    [[ -n "${1:-}" ]] || die_usage "workspaces create needs a path"
    body="{\"path\":$(json_string "$1")"
    shift
    while [[ $# -gt 0 ]]; do
      case "$1" in
      --project) body+=",\"project_id\":$(json_string "${2:?--project needs an id}")" && shift ;;
      --create) body+=",\"create\":true" ;;
      *) body+=",\"name\":$(json_string "$1")" ;;
      esac
      shift
    done
    api POST /v1/workspaces "$body}" | pretty
    ;;
  *) die_usage "workspaces list|create" ;;
  esac
  ;;
prompt)
  [[ -n "${1:-}" ]] || die_usage "prompt needs the prompt text"
  body="{\"prompt\":$(json_string "$1")"
  shift
  do_follow=0
  limits=""
  add_limit() { limits+="${limits:+,}\"$1\":$2"; }
  while [[ $# -gt 0 ]]; do
    case "$1" in
    --workspace) body+=",\"workspace_id\":$(json_string "${2:?--workspace needs an id}")" && shift ;;
    --follow-up) body+=",\"parent_job_id\":$(json_string "${2:?--follow-up needs a job id}")" && shift ;;
    --model) body+=",\"model\":$(json_string "${2:?--model needs an alias}")" && shift ;;
    --max-turns) add_limit max_turns "${2:?--max-turns needs a number}" && shift ;;
    --max-price) add_limit max_price_usd "${2:?--max-price needs an amount of USD}" && shift ;;
    --max-tokens) add_limit max_tokens "${2:?--max-tokens needs a number}" && shift ;;
    --time-limit) add_limit time_limit_secs "${2:?--time-limit needs seconds}" && shift ;;
    --priority) body+=",\"priority\":${2:?--priority needs a number}" && shift ;;
    --max-attempts) body+=",\"max_attempts\":${2:?--max-attempts needs a number}" && shift ;;
    --idempotency-key) IDEMPOTENCY_KEY="${2:?--idempotency-key needs a key}" && shift ;;
    --follow) do_follow=1 ;;
    *) die_usage "unknown prompt option $1" ;;
    esac
    shift
  done
  [[ -n "$limits" ]] && body+=",\"limits\":{$limits}"
  job=$(api POST /v1/prompts "$body}")
  IDEMPOTENCY_KEY=""
  if [[ $do_follow -eq 1 ]]; then
    id=$(printf '%s' "$job" | field id)
    echo "[job $id queued]"
    follow "$id"
  else
    printf '%s' "$job" | pretty
  fi
  ;;
jobs)
  id=${2:-}
  [[ -n "$id" ]] || die_usage "jobs ${1:-show} needs a job id"
  case "${1:-}" in
  show) api GET "/v1/jobs/$id" | pretty ;;
  events) api GET "/v1/jobs/$id/events?after=${3:-0}" | pretty ;;
  follow) follow "$id" ;;
  cancel | pause | resume) api POST "/v1/jobs/$id/$1" '{}' | pretty ;;
  changes) api GET "/v1/jobs/$id/changes" | pretty ;;
  # The unified diff as it is (git apply takes it; git apply -R undoes the job).
  diff) api GET "/v1/jobs/$id/diff${3:+?path=$(urlencode "$3")}" ;;
  restore)
    case "${3:-}" in
    before | after) api POST "/v1/jobs/$id/restore" "{\"to\":\"$3\"}" | pretty ;;
    *) die_usage "jobs restore <id> before|after" ;;
    esac
    ;;
  *) die_usage "jobs show|events|follow|cancel|pause|resume|changes|diff|restore <id>" ;;
  esac
  ;;
queue)
  case "${1:-list}" in
  list) api GET "/v1/queue?limit=${2:-20}&offset=${3:-0}" | pretty ;;
  priority)
    [[ -n "${2:-}" && -n "${3:-}" ]] || die_usage "queue priority <job id> <n>"
    api PATCH "/v1/queue/$2" "{\"priority\":$3}" | pretty
    ;;
  *) die_usage "queue list|priority" ;;
  esac
  ;;
audit)
  query=""
  positional=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
    --actor) query+="&actor=$(urlencode "${2:?--actor needs a name}")" && shift ;;
    --target) query+="&target_id=$(urlencode "${2:?--target needs an id}")" && shift ;;
    *) positional+=("$1") ;;
    esac
    shift
  done
  api GET "/v1/audit?limit=${positional[0]:-20}&offset=${positional[1]:-0}$query" | pretty
  ;;
history)
  query="limit=20&offset=0"
  positional=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
    --status) query+="&status=${2:?--status needs a value}" && shift ;;
    --workspace) query+="&workspace_id=${2:?--workspace needs an id}" && shift ;;
    --session) query+="&session_id=${2:?--session needs a session id}" && shift ;;
    *) positional+=("$1") ;;
    esac
    shift
  done
  if [[ ${#positional[@]} -gt 0 ]]; then
    query="limit=${positional[0]}&offset=${positional[1]:-0}${query#limit=20&offset=0}"
  fi
  api GET "/v1/history?$query" | pretty
  ;;
runtime)
  action=${1:-}
  ws=${2:-}
  [[ -n "$ws" ]] || die_usage "runtime $action needs a workspace id"
  case "$action" in
  status) api GET "/v1/runtime/workspaces/$ws" | pretty ;;
  start | stop | restart) api POST "/v1/runtime/workspaces/$ws/$action" '{}' | pretty ;;
  logs) api GET "/v1/runtime/workspaces/$ws/logs?tail=${3:-200}" | pretty ;;
  *) die_usage "runtime status|start|stop|restart|logs <workspace id>" ;;
  esac
  ;;
webhooks)
  action=${1:-}
  case "$action" in
  list) api GET "/v1/webhooks?limit=${2:-50}&offset=${3:-0}" | pretty ;;
  show) api GET "/v1/webhooks/${2:?webhooks show <id>}" | pretty ;;
  create)
    shift
    [[ -n "${1:-}" && -n "${2:-}" ]] || die_usage "webhooks create <url> <kind>..."
    url=$1
    shift
    events="" extra=""
    while [[ $# -gt 0 ]]; do
      case "$1" in
      --project) extra+=",\"project_id\":$(json_string "${2:?--project needs an id}")" && shift ;;
      --description) extra+=",\"description\":$(json_string "${2:?--description needs a text}")" && shift ;;
      *) events+="${events:+,}$(json_string "$1")" ;;
      esac
      shift
    done
    api POST /v1/webhooks "{\"url\":$(json_string "$url"),\"events\":[$events]$extra}" | pretty
    ;;
  delete)
    api DELETE "/v1/webhooks/${2:?webhooks delete <id>}" >/dev/null
    echo "deleted"
    ;;
  rotate-secret) api POST "/v1/webhooks/${2:?webhooks rotate-secret <id>}/rotate-secret" '{}' | pretty ;;
  deliveries) api GET "/v1/webhooks/${2:?webhooks deliveries <id>}/deliveries?limit=${3:-20}" | pretty ;;
  redeliver)
    [[ -n "${2:-}" && -n "${3:-}" ]] || die_usage "webhooks redeliver <id> <delivery id>"
    api POST "/v1/webhooks/$2/deliveries/$3/redeliver" '{}' | pretty
    ;;
  *) die_usage "webhooks list|show|create|delete|rotate-secret|deliveries|redeliver" ;;
  esac
  ;;
*) die_usage "unknown command '$cmd'" ;;
esac
