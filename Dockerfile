# Otter's images, from one multi-stage build:
#   docker build --target server -t otter/server .
#   docker build --target worker -t otter/worker .
#   docker build --target demo-model -t otter/demo-model .
# docker-compose.yml builds them. The worker image carries CPython, the real vibe (installed by
# scripts/install_mistral_vibe.sh) and the docker CLI; the server image needs neither.
#
# It builds with the classic builder and with BuildKit alike: no syntax directive, no RUN --mount.
# The dependency cache is a layer: the workspace's manifests and Cargo.lock are built first with
# stub sources, so a change to Otter's code rebuilds only Otter's crates.
#
# Every stage is labelled org.otter.stage, so that its superseded layers can be pruned without
# touching other projects' images (scripts/compose-smoke.sh does).
#
# Build arguments (docker-compose.yml passes the OTTER_* variables of the same names):
#   OTTER_RUST_IMAGE, OTTER_DEBIAN_IMAGE, OTTER_PYTHON_IMAGE   the base images (official ones by
#       default; scripts/local-base-images.sh builds stand-ins where nothing can be pulled)
#   OTTER_EXTRA_CA_CERT   PEM text of one more CA certificate to trust in every step that
#       downloads (a TLS-intercepting proxy), and in the images; empty: nothing changes

ARG OTTER_RUST_IMAGE=rust:1-trixie
ARG OTTER_DEBIAN_IMAGE=debian:trixie-slim
ARG OTTER_PYTHON_IMAGE=python:3.12-slim-trixie

# ---- build: the binaries, dependencies first ----------------------------------------------------
FROM ${OTTER_RUST_IMAGE} AS build
LABEL org.otter.stage=build
ARG OTTER_EXTRA_CA_CERT=
COPY scripts/docker/trust-extra-ca.sh /usr/local/lib/otter/trust-extra-ca.sh
RUN OTTER_EXTRA_CA_CERT="$OTTER_EXTRA_CA_CERT" sh /usr/local/lib/otter/trust-extra-ca.sh
WORKDIR /src
# Every member's manifest (a new crate must be added here and below), then stub sources for each
# target.
COPY Cargo.toml Cargo.lock ./
COPY otter-core/Cargo.toml otter-core/Cargo.toml
COPY otter-server/Cargo.toml otter-server/Cargo.toml
COPY otter-worker/Cargo.toml otter-worker/Cargo.toml
COPY otter-testkit/Cargo.toml otter-testkit/Cargo.toml
COPY otter-bench/Cargo.toml otter-bench/Cargo.toml
COPY otter-demo-model/Cargo.toml otter-demo-model/Cargo.toml
COPY scripts/docker/stub-sources.sh /usr/local/lib/otter/stub-sources.sh
RUN sh /usr/local/lib/otter/stub-sources.sh \
 && cargo build --release --locked -p otter-server -p otter-worker -p otter-demo-model
# The real sources (only what the build reads, so that a change to docs or scripts does not
# rebuild). Their files are touched so that cargo never takes a stub's build for theirs.
COPY migrations migrations
COPY otter-core otter-core
COPY otter-server otter-server
COPY otter-worker otter-worker
COPY otter-testkit otter-testkit
COPY otter-bench otter-bench
COPY otter-demo-model otter-demo-model
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p otter-server -p otter-worker -p otter-demo-model \
 && mkdir -p /out \
 && cp target/release/otter-server target/release/otter-worker target/release/otter-demo-model /out/

# ---- demo-model: the scripted model of `OTTER_DEMO=true` (compose profile "demo") ---------------
FROM ${OTTER_DEBIAN_IMAGE} AS demo-model
LABEL org.otter.stage=demo-model
RUN useradd --system --uid 10001 --home-dir /nonexistent --no-create-home otter
COPY --from=build /out/otter-demo-model /usr/local/bin/otter-demo-model
USER otter
ENV OTTER_DEMO_MODEL_LISTEN=0.0.0.0:8090
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/otter-demo-model"]

# ---- server: small runtime; root, its commands run as the job user ---------------------------------
# The server and the worker run as root so that what they run (workspace commands here; vibe and
# setup.sh in the worker) runs as another user, OTTER_JOB_USER=otter-job (uid 10001, the uid of
# earlier images' single user, so existing volumes stay usable), who can read neither their
# environment, memory nor files (docs/workspace-trust-model.md). /workspaces and the VIBE_HOME
# base stay root's: Otter gives the job user each directory it makes there.
FROM ${OTTER_DEBIAN_IMAGE} AS server
LABEL org.otter.stage=server
ARG OTTER_EXTRA_CA_CERT=
COPY scripts/docker/trust-extra-ca.sh /usr/local/lib/otter/trust-extra-ca.sh
COPY scripts/docker/add-job-user.sh /usr/local/lib/otter/add-job-user.sh
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && OTTER_EXTRA_CA_CERT="$OTTER_EXTRA_CA_CERT" sh /usr/local/lib/otter/trust-extra-ca.sh \
 && sh /usr/local/lib/otter/add-job-user.sh
COPY --from=build /out/otter-server /usr/local/bin/otter-server
ENV OTTER_LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=6 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/otter-server"]

# ---- worker: CPython + the real vibe + the docker CLI; root, jobs run as the job user --------------
FROM ${OTTER_PYTHON_IMAGE} AS worker
LABEL org.otter.stage=worker
ARG OTTER_EXTRA_CA_CERT=
COPY scripts/docker/trust-extra-ca.sh /usr/local/lib/otter/trust-extra-ca.sh
# docker-cli: Otter's instructions tell vibe to build and run the app in Docker (through the
# mounted socket, when OTTER_JOB_DOCKER=true gives jobs its group). Every Python client trusts
# the system bundle (an extra CA included), not certifi's copy.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git docker-cli \
 && rm -rf /var/lib/apt/lists/* \
 && OTTER_EXTRA_CA_CERT="$OTTER_EXTRA_CA_CERT" sh /usr/local/lib/otter/trust-extra-ca.sh
COPY scripts/docker/add-job-user.sh /usr/local/lib/otter/add-job-user.sh
RUN sh /usr/local/lib/otter/add-job-user.sh
COPY scripts/install_mistral_vibe.sh /usr/local/lib/otter/install_mistral_vibe.sh
RUN OTTER_PYTHON="$(command -v python3)" OTTER_VIBE_VENV=/opt/vibe OTTER_BIN_DIR=/usr/local/bin \
    bash /usr/local/lib/otter/install_mistral_vibe.sh
COPY --from=build /out/otter-worker /usr/local/bin/otter-worker
ENV OTTER_VIBE_BIN=/usr/local/bin/vibe \
    OTTER_VIBE_HOME_BASE=/var/lib/otter/vibe
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD kill -0 1 || exit 1
ENTRYPOINT ["/usr/local/bin/otter-worker"]
