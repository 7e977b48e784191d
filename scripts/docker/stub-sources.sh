#!/bin/sh
# Used by the Dockerfile's dependency layer: for every workspace member's Cargo.toml (already
# copied), writes an empty src/lib.rs, a `fn main() {}` src/main.rs and a `fn main() {}` at every
# explicit target `path = "…"`, so that `cargo build` compiles the dependencies of Cargo.lock
# and nothing of Otter's own code. The real sources are copied over them afterwards.
set -eu
for manifest in */Cargo.toml; do
  dir=${manifest%/Cargo.toml}
  mkdir -p "$dir/src"
  : >"$dir/src/lib.rs"
  echo 'fn main() {}' >"$dir/src/main.rs"
  sed -n 's/^path *= *"\(.*\)".*/\1/p' "$manifest" | while read -r target; do
    mkdir -p "$dir/$(dirname "$target")"
    echo 'fn main() {}' >"$dir/$target"
  done
done
