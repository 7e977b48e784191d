#!/usr/bin/env bash
# Usage: scripts/capture-vibe-429.sh [OUT_DIR [CASE...]]
#
# Captures what the REAL vibe does when its model answers `429 Too Many Requests`, which the
# shared fixtures do not show, against the project's scripted model server (otter-demo-model with
# OTTER_DEMO_MODEL_RATE_LIMIT / OTTER_DEMO_MODEL_RETRY_AFTER), into OUT_DIR (default
# otter-core/tests/data/vibe-captures/vibe-3.0.3/rate-limit). The cases (all by default):
#   retry-after/     every request gets a 429 with `Retry-After: 2`
#   no-retry-after/  every request gets a 429 without Retry-After
#   first-only/      the first request gets a 429 (with no Retry-After), every later one is served
# Each is one run of vibe --prompt=<p> --output streaming --trust --auto-approve --output-dir ..
# against its own model server (own port), all at once (an always-429 case takes ~5 minutes:
# vibe retries by itself). Each holds argv, stdout, stderr, exit_code and (where written)
# export.json; `server` is the model server's settings and the chat-completions requests it
# received, with times relative to the first one (vibe's own retry schedule) and when vibe
# started and exited on that clock. Paths and ids are replaced by placeholders (/srv/capture,
# PORT, SESSION_1, ...) so that the capture does not depend on the machine. CARGO_TARGET_DIR is
# kept if set (scripts/env.sh only fills it in when unset).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
OUT="${1:-$ROOT/otter-core/tests/data/vibe-captures/vibe-3.0.3/rate-limit}"
shift $(($# > 0 ? 1 : 0))
ALL_CASES=(retry-after no-retry-after first-only)
CASES=("$@")
((${#CASES[@]} > 0)) || CASES=("${ALL_CASES[@]}")
for case in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $case "* ]] || { echo "unknown case $case (cases: ${ALL_CASES[*]})" >&2; exit 2; }
done

VIBE="$(bash scripts/install_mistral_vibe.sh 2>/dev/null | sed -n 's/^Set: OTTER_VIBE_BIN=//p')"
[[ -x $VIBE ]] || { echo "the real vibe could not be installed" >&2; exit 1; }
"$VIBE" --version | grep -q '3.0.3' || { echo "this capture is of vibe 3.0.3, found $("$VIBE" --version)" >&2; exit 1; }
cargo build -q -p otter-demo-model
MODEL_BIN="$CARGO_TARGET_DIR/debug/otter-demo-model"

SCRATCHES=()
MODEL_PIDS=()
cleanup() {
  local pid dir
  for pid in "${MODEL_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for dir in "${SCRATCHES[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

# The settings of each case: OTTER_DEMO_MODEL_RATE_LIMIT, OTTER_DEMO_MODEL_RETRY_AFTER, its
# session's placeholder.
settings() {
  case $1 in
  retry-after) echo "always 2 SESSION_1" ;;
  no-retry-after) echo "always - SESSION_2" ;;
  first-only) echo "first - SESSION_3" ;;
  esac
}

# capture CASE: a model server and one vibe run in a scratch directory of its own, written to
# $OUT/CASE when done.
capture() {
  local name=$1 mode retry_after placeholder scratch port
  read -r mode retry_after placeholder < <(settings "$name")
  [[ $retry_after == - ]] && retry_after=""
  scratch=$2
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  env OTTER_DEMO_MODEL_LISTEN="127.0.0.1:$port" OTTER_DEMO_MODEL_RATE_LIMIT="$mode" \
    ${retry_after:+OTTER_DEMO_MODEL_RETRY_AFTER="$retry_after"} RUST_LOG=info OTTER_LOG_FORMAT=json \
    "$MODEL_BIN" >"$scratch/model.log" 2>&1 &
  local model_pid=$!
  echo "$model_pid" >"$scratch/model.pid"
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$scratch/model.log" >&2; return 1; }

  mkdir -p "$scratch/home" "$scratch/vibe_home" "$scratch/ws" "$scratch/run"
  cat >"$scratch/vibe_home/config.toml" <<EOF
active_model = "otter-demo"
enable_telemetry = false
enable_update_checks = false
enable_auto_update = false
enable_notifications = false

[session_logging]
generate_titles = false

[[providers]]
name = "otter-demo"
api_base = "http://127.0.0.1:$port/v1"
api_key_env_var = "OTTER_DEMO_API_KEY"
backend = "generic"
api_style = "openai"

[[models]]
name = "otter-demo"
provider = "otter-demo"
alias = "otter-demo"
input_price = 0.0
output_price = 0.0
EOF

  local args=(--prompt="Write a greeting to a file." --output streaming --trust --auto-approve)
  printf '%s\n' "${args[@]}" >"$scratch/run/argv"
  date +%s.%N >"$scratch/run/started"
  set +e
  (cd "$scratch/ws" && env -i PATH="$PATH" HOME="$scratch/home" VIBE_HOME="$scratch/vibe_home" \
    OTTER_DEMO_API_KEY=otter-demo-not-a-real-key TERM=dumb NO_COLOR=1 \
    "$VIBE" "${args[@]}" --output-dir "$scratch/run/out" </dev/null \
    >"$scratch/run/stdout" 2>"$scratch/run/stderr")
  echo $? >"$scratch/run/exit_code"
  set -e
  date +%s.%N >"$scratch/run/exited"
  kill "$model_pid" 2>/dev/null || true
  wait "$model_pid" 2>/dev/null || true
  [[ -f $scratch/run/out/export.json ]] && cp "$scratch/run/out/export.json" "$scratch/run/export.json"

  # The model server's side: its settings and the requests it received.
  python3 - "$scratch/model.log" "$mode" "$retry_after" "$(cat "$scratch/run/started")" \
    "$(cat "$scratch/run/exited")" "$(cat "$scratch/run/exit_code")" >"$scratch/run/server" <<'PY'
import json, sys
from datetime import datetime
log, mode, retry_after, started, exited, code = sys.argv[1:]
started, exited = float(started), float(exited)
rows = []
for line in open(log):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    message = record.get("message") or record.get("fields", {}).get("message")
    if message not in ("rate limited", "answered"):
        continue
    at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
    rows.append((at, record.get("request"), "429" if message == "rate limited" else "200 " + record.get("reply", "")))
print(f"OTTER_DEMO_MODEL_RATE_LIMIT={mode}")
print(f"OTTER_DEMO_MODEL_RETRY_AFTER={retry_after}" if retry_after else "OTTER_DEMO_MODEL_RETRY_AFTER unset (no Retry-After header)")
refused = sum(1 for r in rows if r[2] == "429")
print(f"chat-completions requests received: {len(rows)} ({refused} answered 429, {len(rows) - refused} served)")
if rows:
    first = rows[0][0]
    print(f"vibe started at t={started - first:+.3f} s and exited at t={exited - first:+.3f} s (exit code {code}),")
    print(f"t=0 being the first request; vibe ran {exited - started:.1f} s")
    print()
    print(f"{'request':>7}  {'t (s)':>8}  {'interval (s)':>12}  answer")
    previous = None
    for at, number, answer in rows:
        interval = "" if previous is None else f"{at - previous:.3f}"
        print(f"{number:>7}  {at - first:>8.3f}  {interval:>12}  {answer}")
        previous = at
else:
    print(f"vibe ran {exited - started:.1f} s (exit code {code})")
PY

  local session
  session="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("session_id") or "")' "$scratch/run/export.json" 2>/dev/null || true)"
  rm -rf "${OUT:?}/$name"
  mkdir -p "$OUT/$name"
  for f in argv stdout stderr exit_code export.json server; do
    [[ -f $scratch/run/$f ]] || continue
    sed -e "s#$scratch/run/out#/srv/capture/out#g" -e "s#$scratch/ws#/srv/capture/ws#g" -e "s#$scratch#/srv/capture#g" \
      -e "s#127.0.0.1:$port#127.0.0.1:PORT#g" ${session:+-e "s#$session#$placeholder#g"} \
      "$scratch/run/$f" >"$OUT/$name/$f"
  done
  echo "captured $name into $OUT/$name (exit $(cat "$scratch/run/exit_code"), session ${session:-none} as $placeholder)"
}

mkdir -p "$OUT"
JOBS=()
for case in "${CASES[@]}"; do
  scratch="$(mktemp -d)"
  SCRATCHES+=("$scratch")
  capture "$case" "$scratch" &
  JOBS+=($!)
done
# The model servers' pids, so that an interrupted capture stops them too.
sleep 2
for scratch in "${SCRATCHES[@]}"; do
  [[ -f $scratch/model.pid ]] && MODEL_PIDS+=("$(cat "$scratch/model.pid")")
done
status=0
for job in "${JOBS[@]}"; do
  wait "$job" || status=1
done
exit "$status"
