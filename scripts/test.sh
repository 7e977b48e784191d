#!/usr/bin/env bash
# Usage: scripts/test.sh [CARGO_TEST_ARGS...]   e.g. scripts/test.sh -- some_filter
#
# The one command that runs every Otter check, locally and in CI (.ci/run):
#   1. start the project-private PostgreSQL + Redis (scripts/services.sh start), install
#      busybox-static for the runtime container tests when a Docker engine is there, and
#      Debian's chromium and chromium-driver for the console's browser tests when missing
#   2. make sure rustfmt, clippy and cargo-machete are installed
#   3. cargo fmt --all --check
#   4. cargo clippy --workspace --all-targets -- -D warnings
#   5. cargo machete: no unused dependency in any Cargo.toml (it reads the sources; seconds)
#   6. cargo doc --no-deps (the library's docs, warnings as errors)
#   7. cargo test --workspace [CARGO_TEST_ARGS...]  (arguments appended verbatim)
#   8. scripts/compose-smoke.sh: the compose stack built, brought up and checked from the host
#      (not run when CARGO_TEST_ARGS are given: they select some tests, not the whole suite)
# Docker: the runtime tests and the compose smoke test need a Docker engine; without one the run
# fails at step 2 (nothing is skipped). rustfmt and clippy are installed with rustup when missing,
# cargo-machete with `cargo install` from crates.io (version MACHETE_VERSION, once per machine).
# Each step prints a header and its elapsed seconds; the first failure stops
# the run with a non-zero exit. Plain `cargo test` (not nextest) so cargo's own
# "test result:" summary lines are what CI reads.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
cd "$ROOT"

# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
export DEBIAN_FRONTEND=noninteractive

# cargo may not be on PATH in a non-login shell even though rustup installed it.
if ! command -v cargo >/dev/null 2>&1 && [[ -f "${HOME:-/nonexistent}/.cargo/env" ]]; then
  # shellcheck source=/dev/null
  source "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "[test] ERROR: cargo not found: install Rust (https://rustup.rs) or put ~/.cargo/bin on PATH" >&2
  exit 1
}

# The cargo-machete that step 2 installs when `cargo machete` is missing.
MACHETE_VERSION=0.9.2

TOTAL_START=$SECONDS
STEP=0
CURRENT=""
STEP_START=$SECONDS

# step NAME: print a header for the next step.
step() {
  STEP=$((STEP + 1))
  CURRENT="$1"
  STEP_START=$SECONDS
  printf '\n==> [%d] %s\n' "$STEP" "$CURRENT"
}

# done_step [STATUS]: print the step's outcome (default ok) and duration.
done_step() {
  printf '==> [%d] %s: %s (%ds)\n' "$STEP" "$CURRENT" "${1:-ok}" "$((SECONDS - STEP_START))"
}

# On any failure: say which step failed and after how long, keep the exit code.
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    printf '\n==> FAILED at step [%d] %s (exit %d, %ds; total %ds)\n' \
      "$STEP" "$CURRENT" "$rc" "$((SECONDS - STEP_START))" "$((SECONDS - TOTAL_START))" >&2
  fi
}
trap on_exit EXIT

# has_component NAME: is the cargo subcommand for rustfmt/clippy/machete usable?
has_component() {
  case "$1" in
  rustfmt) cargo fmt --version >/dev/null 2>&1 ;;
  clippy) cargo clippy --version >/dev/null 2>&1 ;;
  machete) cargo machete --version >/dev/null 2>&1 ;;
  *) return 1 ;;
  esac
}

step "services: PostgreSQL + Redis"
"$SCRIPT_DIR/services.sh" start
done_step

step "runtime test prerequisite: busybox-static"
# The runtime container tests build their app image FROM scratch around a statically linked
# busybox (the Docker engine cannot pull images), so Debian's busybox-static must be there.
if docker info >/dev/null 2>&1; then
  "$SCRIPT_DIR/services.sh" ensure-tool busybox:busybox-static
  done_step
else
  echo "[test] ERROR: no Docker engine answers (docker info): the runtime and compose tests need one (Debian: apt-get install docker.io docker-compose)" >&2
  exit 1
fi

step "browser test prerequisite: chromium, chromium-driver"
# The console's tests (otter-worker/tests/console) drive a headless Chromium over WebDriver;
# without it they fail (nothing is skipped), so it is installed like PostgreSQL.
"$SCRIPT_DIR/services.sh" ensure-tool chromium:chromium chromedriver:chromium-driver
chromium --version
done_step

step "toolchain components: rustfmt, clippy, cargo-machete"
cargo --version
for comp in rustfmt clippy; do
  if ! has_component "$comp"; then
    if command -v rustup >/dev/null 2>&1; then
      echo "installing missing component $comp"
      rustup component add "$comp" ||
        echo "[test] WARNING: 'rustup component add $comp' failed (offline?)" >&2
    fi
  fi
  if ! has_component "$comp"; then
    echo "[test] ERROR: $comp is not available and could not be installed: 'rustup component add $comp'." >&2
    exit 1
  fi
done
if ! has_component machete; then
  echo "installing missing cargo-machete $MACHETE_VERSION"
  cargo install cargo-machete --locked --version "$MACHETE_VERSION" ||
    echo "[test] WARNING: 'cargo install cargo-machete' failed (offline?)" >&2
fi
if ! has_component machete; then
  echo "[test] ERROR: cargo-machete is not available and could not be installed: 'cargo install cargo-machete --locked --version $MACHETE_VERSION'." >&2
  exit 1
fi
done_step

step "cargo fmt --all --check"
cargo fmt --all --check
done_step

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
done_step

step "cargo machete (unused dependencies)"
cargo machete
done_step

step "cargo doc --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
done_step

step "drop databases left by earlier test runs"
scripts/services.sh drop-test-dbs
done_step

step "cargo test --workspace${*:+ $*}"
cargo test --workspace "$@"
done_step

step "compose stack: scripts/compose-smoke.sh"
if [[ $# -gt 0 ]]; then
  done_step "not run (test arguments were given: run scripts/compose-smoke.sh by itself)"
else
  "$SCRIPT_DIR/compose-smoke.sh"
  done_step
fi

printf '\n==> all %d steps passed in %ds\n' "$STEP" "$((SECONDS - TOTAL_START))"
