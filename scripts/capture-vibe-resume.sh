#!/usr/bin/env bash
# Usage: scripts/capture-vibe-resume.sh [OUT_DIR]
#
# Captures what the REAL vibe does when a session is resumed (`--resume SESSION_ID`), which the
# shared fixtures do not show, against the project's scripted model server (otter-demo-model),
# into OUT_DIR (default otter-core/tests/data/vibe-captures/vibe-3.0.3/resume):
#   turn1/   a first run:  vibe --prompt=<first> --output streaming --trust --auto-approve --output-dir ..
#   turn2/   a follow-up:  the same with --prompt=<second> --resume <turn 1's session_id>
#   unknown/ --resume with a session id that does not exist
# Each holds argv, stdout, stderr, exit_code and (where written) export.json; requests.jsonl is the
# model server's log of the messages it received on the follow-up (role and content of each),
# which shows whether vibe sent the first turn back. Paths and ids are replaced by placeholders
# (/srv/capture, SESSION_1, ...) so that the capture does not depend on the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
OUT="${1:-$ROOT/otter-core/tests/data/vibe-captures/vibe-3.0.3/resume}"

VIBE="$(bash scripts/install_mistral_vibe.sh 2>/dev/null | sed -n 's/^Set: OTTER_VIBE_BIN=//p')"
[[ -x $VIBE ]] || { echo "the real vibe could not be installed" >&2; exit 1; }
"$VIBE" --version | grep -q '3.0.3' || { echo "this capture is of vibe 3.0.3, found $("$VIBE" --version)" >&2; exit 1; }
cargo build -q -p otter-demo-model
MODEL_BIN="$CARGO_TARGET_DIR/debug/otter-demo-model"

SCRATCH="$(mktemp -d)"
trap 'kill "$MODEL_PID" 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
OTTER_DEMO_MODEL_LISTEN="127.0.0.1:$PORT" RUST_LOG=info OTTER_LOG_FORMAT=json \
  "$MODEL_BIN" >"$SCRATCH/model.log" 2>&1 &
MODEL_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || { cat "$SCRATCH/model.log" >&2; exit 1; }

mkdir -p "$SCRATCH/home" "$SCRATCH/vibe_home" "$SCRATCH/ws"
cat >"$SCRATCH/vibe_home/config.toml" <<EOF
active_model = "otter-demo"
enable_telemetry = false
enable_update_checks = false
enable_auto_update = false
enable_notifications = false

[session_logging]
generate_titles = false

[[providers]]
name = "otter-demo"
api_base = "http://127.0.0.1:$PORT/v1"
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

# run NAME ARGS...: one vibe run in the workspace, captured into $SCRATCH/NAME.
run() {
  local name=$1
  shift
  mkdir -p "$SCRATCH/$name"
  printf '%s\n' "$@" >"$SCRATCH/$name/argv"
  set +e
  (cd "$SCRATCH/ws" && env -i PATH="$PATH" HOME="$SCRATCH/home" VIBE_HOME="$SCRATCH/vibe_home" \
    OTTER_DEMO_API_KEY=otter-demo-not-a-real-key TERM=dumb NO_COLOR=1 \
    "$VIBE" "$@" --output-dir "$SCRATCH/$name/out" </dev/null \
    >"$SCRATCH/$name/stdout" 2>"$SCRATCH/$name/stderr")
  echo $? >"$SCRATCH/$name/exit_code"
  set -e
  [[ -f $SCRATCH/$name/out/export.json ]] && cp "$SCRATCH/$name/out/export.json" "$SCRATCH/$name/export.json"
  rm -rf "$SCRATCH/$name/out"
}

run turn1 --prompt="Write a greeting to a file." --output streaming --trust --auto-approve
SESSION="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["session_id"])' "$SCRATCH/turn1/export.json")"
LOG_LINES_BEFORE="$(wc -l <"$SCRATCH/model.log")"
cp "$SCRATCH/model.log" "$SCRATCH/model.turn1.log"
run turn2 --prompt="Now say goodbye in the same file." --output streaming --trust --auto-approve --resume "$SESSION"
tail -n +"$((LOG_LINES_BEFORE + 1))" "$SCRATCH/model.log" >"$SCRATCH/model.turn2.log"
run unknown --prompt="Hello again." --output streaming --trust --auto-approve --resume 00000000-0000-0000-0000-000000000000

# The placeholders, and the request log of the follow-up.
SESSION2="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("session_id") or "")' "$SCRATCH/turn2/export.json" 2>/dev/null || true)"
rm -rf "$OUT"
mkdir -p "$OUT"
for name in turn1 turn2 unknown; do
  mkdir -p "$OUT/$name"
  for f in argv stdout stderr exit_code export.json; do
    [[ -f $SCRATCH/$name/$f ]] || continue
    sed -e "s#$SCRATCH/ws#/srv/capture/ws#g" -e "s#$SCRATCH#/srv/capture#g" -e "s#127.0.0.1:$PORT#127.0.0.1:PORT#g" \
      -e "s#$SESSION#SESSION_1#g" ${SESSION2:+-e "s#$SESSION2#SESSION_2#g"} "$SCRATCH/$name/$f" >"$OUT/$name/$f"
  done
done
python3 - "$SCRATCH/model.turn2.log" "$OUT/turn2/requests.jsonl" <<'PY'
import json, sys
out = open(sys.argv[2], "w")
for line in open(sys.argv[1]):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    if "roles" in record:
        out.write(json.dumps({"roles": record["roles"].split(","), "reply": record.get("reply")}) + "\n")
PY
echo "captured into $OUT (session $SESSION resumed as ${SESSION2:-?})"
