#!/usr/bin/env bash
# Usage: scripts/local-base-images.sh [--print] [-h|--help]
#
# Builds local stand-ins for the base images of Otter's compose stack, for a machine whose Docker
# engine cannot pull (no registry access). Everything comes from Debian's packages:
#   1. debootstrap a Debian trixie rootfs (minbase) and `docker import` it;
#   2. build four images FROM it, each giving only what Otter's stack uses of the official one:
#        postgres  PostgreSQL with the POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB first-start
#                  contract, PGDATA=/var/lib/postgresql/data, and pg_isready
#        redis     redis-server (protected mode off, as in the official image) and redis-cli
#        rust      this host's Rust toolchain (rustc, cargo) with gcc to link
#        python    CPython 3.13 (Debian's python3, venv and pip) at /usr/local/bin/python3
# The stand-ins trust this host's extra CA certificates (/usr/local/share/ca-certificates), so a
# build behind a TLS-intercepting gateway works with no further setting.
#
# It prints the OTTER_*_IMAGE= assignments to use (eval them, or append them to .env). Running it
# again reuses what it built: each image carries a label with the hash of its recipe (and of the
# host's toolchain, for rust), and is rebuilt only when that changes.
#
#   --print    only print the assignments of images already built (exit 1 if one is missing)
#
#   OTTER_DEBIAN_MIRROR      Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   OTTER_LOCAL_IMAGE_PREFIX image name prefix (default otter-local)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIRROR="${OTTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PREFIX="${OTTER_LOCAL_IMAGE_PREFIX:-otter-local}"
SUITE=trixie
LABEL=org.otter.local-base.recipe

log() { printf '[local-base-images] %s\n' "$*" >&2; }
die() {
  printf '[local-base-images] ERROR: %s\n' "$*" >&2
  exit 1
}

PRINT_ONLY=0
case "${1:-}" in
"") ;;
--print) PRINT_ONLY=1 ;;
-h | --help)
  sed -n '2,24s/^# \{0,1\}//p' "$0"
  exit 0
  ;;
*) die "unknown argument: $1 (see --help)" ;;
esac

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is dockerd running, may this user use /var/run/docker.sock?)"

# recipe_of IMAGE: the label value the image carries, or nothing.
recipe_of() {
  docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}

# hash_of TEXT...: a short content hash.
hash_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

BASE="$PREFIX/debian:$SUITE"
POSTGRES="$PREFIX/postgres:$SUITE"
REDIS="$PREFIX/redis:$SUITE"
RUST="$PREFIX/rust:$SUITE"
PYTHON="$PREFIX/python:$SUITE"

print_assignments() {
  printf 'OTTER_DEBIAN_IMAGE=%s\n' "$BASE"
  printf 'OTTER_POSTGRES_IMAGE=%s\n' "$POSTGRES"
  printf 'OTTER_REDIS_IMAGE=%s\n' "$REDIS"
  printf 'OTTER_RUST_IMAGE=%s\n' "$RUST"
  printf 'OTTER_PYTHON_IMAGE=%s\n' "$PYTHON"
}

if [[ $PRINT_ONLY -eq 1 ]]; then
  for image in "$BASE" "$POSTGRES" "$REDIS" "$RUST" "$PYTHON"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "$image is not built: run $0"
  done
  print_assignments
  exit 0
fi

# ---- the host's extra CA certificates, trusted by every stand-in ------------------------------
CA_DIR=/usr/local/share/ca-certificates
CA_FILES=()
if [[ -d $CA_DIR ]]; then
  while IFS= read -r -d '' f; do CA_FILES+=("$f"); done < <(find "$CA_DIR" -maxdepth 1 -name '*.crt' -type f -print0 | sort -z)
fi
CA_HASH="$(cat /dev/null "${CA_FILES[@]}" | sha256sum | cut -c1-16)"

# ---- 1. the Debian rootfs -------------------------------------------------------------------------
BASE_RECIPE="$(hash_of "$SUITE" "$MIRROR" "$CA_HASH" "$(sed -n '/^# ---- 1\./,/^# ---- 2\./p' "$0")")"
if [[ "$(recipe_of "$BASE")" == "$BASE_RECIPE" ]]; then
  log "$BASE: up to date"
else
  [[ $(id -u) -eq 0 ]] || die "debootstrap needs root: run as root (or sudo)"
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and this is not a Debian/Ubuntu machine"
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  fi
  ROOTFS="$(mktemp -d /tmp/otter-rootfs.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  log "debootstrap $SUITE from $MIRROR (about a minute)"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 ||
    die "debootstrap failed; its log: $ROOTFS.log"
  rm -f "$ROOTFS.log"
  for f in "${CA_FILES[@]}"; do cp "$f" "$ROOTFS/usr/local/share/ca-certificates/"; done
  chroot "$ROOTFS" update-ca-certificates >/dev/null
  # What the official slim images do: no docs or caches, apt without recommends.
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$ROOTFS/etc/apt/apt.conf.d/90otter-slim"
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
  log "docker import $BASE"
  tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    -c "LABEL $LABEL=$BASE_RECIPE" \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    -c 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$ROOTFS"
  trap - EXIT
fi

# ---- 2. the stand-ins, FROM the rootfs ------------------------------------------------------------
# build IMAGE RECIPE CONTEXT_DIR DOCKERFILE_TEXT: docker build (classic builder) unless the image
# already carries RECIPE.
build() {
  local image=$1 recipe=$2 context=$3 dockerfile=$4
  if [[ "$(recipe_of "$image")" == "$recipe" ]]; then
    log "$image: up to date"
    return
  fi
  log "building $image"
  local out
  out="$(mktemp /tmp/otter-local-build.XXXXXX)"
  if ! printf '%s\n' "$dockerfile" | DOCKER_BUILDKIT=0 docker build --label "$LABEL=$recipe" \
    -t "$image" -f - "$context" >"$out" 2>&1; then
    tail -n 40 "$out" >&2
    die "building $image failed (log above, whole log: $out)"
  fi
  rm -f "$out"
}

BASE_ID="$(docker image inspect --format '{{.Id}}' "$BASE")"
EMPTY="$(mktemp -d /tmp/otter-local-context.XXXXXX)"
CONTEXTS=("$EMPTY")
cleanup_contexts() { rm -rf "${CONTEXTS[@]}"; }
trap cleanup_contexts EXIT

# PostgreSQL: Debian's server, with the official image's first-start contract.
cp "$SCRIPT_DIR/local-base/postgres-entrypoint.sh" "$EMPTY/postgres-entrypoint.sh"
PG_DOCKERFILE="FROM $BASE
RUN mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf \\
 && apt-get update && apt-get install -y -o Dpkg::Options::=--force-confold postgresql \\
 && rm -rf /var/lib/apt/lists/* \\
  && ln -sf /usr/lib/postgresql/*/bin/* /usr/local/bin/
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]
CMD [\"postgres\"]"
build "$POSTGRES" "$(hash_of "$BASE_ID" "$PG_DOCKERFILE" "$(cat "$EMPTY/postgres-entrypoint.sh")")" "$EMPTY" "$PG_DOCKERFILE"

# Redis: Debian's server. The official image runs with protected mode off (its clients are on
# other containers), which Debian's default keeps on: a wrapper adds it.
REDIS_DOCKERFILE="FROM $BASE
RUN apt-get update && apt-get install -y redis-server && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data \\
 && printf '#!/bin/sh\nexec /usr/bin/redis-server \"\$@\" --protected-mode no\n' >/usr/local/bin/redis-server \\
 && chmod 755 /usr/local/bin/redis-server
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
CMD [\"redis-server\"]"
build "$REDIS" "$(hash_of "$BASE_ID" "$REDIS_DOCKERFILE")" "$EMPTY" "$REDIS_DOCKERFILE"

# Python: Debian's CPython (3.13 on trixie) where the official image has it.
PY_DOCKERFILE="FROM $BASE
RUN apt-get update && apt-get install -y python3 python3-venv python3-pip && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/python3 /usr/local/bin/python3 && ln -s /usr/bin/python3 /usr/local/bin/python
CMD [\"python3\"]"
build "$PYTHON" "$(hash_of "$BASE_ID" "$PY_DOCKERFILE")" "$EMPTY" "$PY_DOCKERFILE"

# Rust: this host's toolchain (the official image's CARGO_HOME and PATH), with gcc to link.
command -v rustc >/dev/null 2>&1 || { [[ -f "${HOME:-/nonexistent}/.cargo/env" ]] && source "$HOME/.cargo/env"; }
command -v rustc >/dev/null 2>&1 || die "no Rust toolchain on this host to copy into $RUST"
SYSROOT="$(rustc --print sysroot)"
RUST_VERSION="$(rustc --version)"
RUST_DOCKERFILE="FROM $BASE
RUN apt-get update && apt-get install -y gcc libc6-dev pkg-config make git && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
CMD [\"bash\"]"
RUST_RECIPE="$(hash_of "$BASE_ID" "$RUST_DOCKERFILE" "$RUST_VERSION" "$SYSROOT")"
if [[ "$(recipe_of "$RUST")" != "$RUST_RECIPE" ]]; then
  RUST_CONTEXT="$(mktemp -d /tmp/otter-local-rust.XXXXXX)"
  CONTEXTS+=("$RUST_CONTEXT")
  mkdir -p "$RUST_CONTEXT/toolchain/bin"
  # rustc, cargo and rustdoc with their libraries; not the docs, sources or other tools.
  for tool in rustc cargo rustdoc; do
    [[ -x "$SYSROOT/bin/$tool" ]] && cp "$SYSROOT/bin/$tool" "$RUST_CONTEXT/toolchain/bin/"
  done
  (cd "$SYSROOT" && tar --exclude='lib/rustlib/src' --exclude='lib/rustlib/rustc-src' -c lib) |
    tar -C "$RUST_CONTEXT/toolchain" -x
fi
build "$RUST" "$RUST_RECIPE" "${RUST_CONTEXT:-$EMPTY}" "$RUST_DOCKERFILE"

log "done; use these (eval \"\$($0 --print)\", or append them to .env):"
print_assignments
