#!/usr/bin/env bash
# Usage: scripts/bench.sh [otter-bench arguments...]      (default: all)
#
# Otter's benchmark suite (issue 7), one command: builds the release binaries (shared
# CARGO_TARGET_DIR), starts the project's PostgreSQL and Redis (scripts/services.sh), raises
# the open-file limit (figure 4 holds ~2 fds per SSE client), runs `otter-bench all` (or the
# given benchmarks/flags, e.g. `scripts/bench.sh sse --clients 2000`) and writes
# docs/benchmarks.md: the machine, the commit, the date, and one table per figure with Otter's
# figure, the raw limit measured in the same run, the ratio, the target and met/missed.
# Benchmarks are not tests: nothing here asserts timings, and scripts/test.sh does not run it.
# Set OTTER_BENCH_OUT to write elsewhere than docs/benchmarks.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source scripts/env.sh
OUT="${OTTER_BENCH_OUT:-$ROOT/docs/benchmarks.md}"

scripts/services.sh start >/dev/null
# Databases of earlier runs (a benchmark's hold millions of rows) would slow this one down:
# autovacuum keeps visiting them. This run's own are dropped again at its end.
scripts/services.sh drop-test-dbs
cargo build --release -p otter-server -p otter-worker -p otter-bench
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "[bench] open-file limit: $(ulimit -n)" >&2

args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(all)
TABLES="$(mktemp)"
trap 'rm -f "$TABLES"; scripts/services.sh drop-test-dbs >/dev/null 2>&1 || true' EXIT
started=$(date +%s)
"$CARGO_TARGET_DIR/release/otter-bench" "${args[@]}" --out "$TABLES"
elapsed=$(($(date +%s) - started))

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
# Before the output file is opened (and truncated): that alone is not an uncommitted change.
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet -- . ":(exclude)$OUT" 2>/dev/null || echo ' (with uncommitted changes)')"
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`scripts/bench.sh ${args[*]}\` (the \`otter-bench\` crate); do not edit the tables by hand."
  echo "Every figure is the median over runs with [min–max] across runs. The raw limit in each row was"
  echo "measured in the same run on the same machine, so the **ratio** is the figure to trust: the"
  echo "machine is shared and noisy, and lone absolute times are not comparable between runs."
  echo
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- Commit: $commit"
  echo "- Machine: $(nproc) CPUs, ${cpu}; memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
  echo "- Kernel: $(uname -r); PostgreSQL $(psql --version 2>/dev/null | awk '{print $3}'), $(redis-server --version 2>/dev/null | awk '{print $3}' | tr -d 'v=' | sed 's/^/Redis /')"
  echo "- Load generators run on the same 2 cores as the server, the workers, PostgreSQL and Redis."
  echo "- Whole run: ${elapsed} s."
  echo
  cat "$TABLES"
  if [[ -f docs/benchmarks-notes.md ]]; then
    echo
    cat docs/benchmarks-notes.md
  fi
} >"$OUT"
echo "[bench] wrote $OUT" >&2
