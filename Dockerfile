# syntax=docker/dockerfile:1
# Otter's images, from one multi-stage build:
#   docker build --target server -t otter-server .
#   docker build --target worker -t otter-worker .
# docker-compose.yml builds both. The worker image carries CPython 3.12 and the real vibe
# (installed by scripts/install_mistral_vibe.sh); the server image needs neither.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: both binaries, with the dependency cache kept between builds ----------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p otter-server -p otter-worker \
 && mkdir -p /out \
 && cp target/release/otter-server target/release/otter-worker /out/

# ---- server: small runtime, non-root ------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS server
# The server registers workspaces, so it writes VIBE_HOMEs too (same uid as the worker).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/otter --create-home otter \
 && mkdir -p /var/lib/otter/vibe /workspaces \
 && chown -R otter:otter /var/lib/otter /workspaces
COPY --from=build /out/otter-server /usr/local/bin/otter-server
USER otter
ENV OTTER_LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/otter-server"]

# ---- worker: CPython 3.12 + the real vibe, non-root -------------------------------------------------
FROM ${PYTHON_IMAGE} AS worker
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/otter --create-home otter \
 && mkdir -p /var/lib/otter/vibe /workspaces \
 && chown -R otter:otter /var/lib/otter /workspaces
COPY scripts/install_mistral_vibe.sh /usr/local/lib/otter/install_mistral_vibe.sh
RUN OTTER_PYTHON=/usr/local/bin/python3 OTTER_VIBE_VENV=/opt/vibe OTTER_BIN_DIR=/usr/local/bin \
    bash /usr/local/lib/otter/install_mistral_vibe.sh
COPY --from=build /out/otter-worker /usr/local/bin/otter-worker
USER otter
ENV OTTER_VIBE_BIN=/usr/local/bin/vibe \
    OTTER_VIBE_HOME_BASE=/var/lib/otter/vibe
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD kill -0 1 || exit 1
ENTRYPOINT ["/usr/local/bin/otter-worker"]
