#!/bin/sh
# Run by the server and worker images' builds (as root): the job user, OTTER_JOB_USER's default
# otter-job, whom vibe, setup.sh and workspace commands run as. Its uid is 10001, the uid of the
# single user of earlier images, so volumes written by them stay the job's. It owns its home
# only: /workspaces and the VIBE_HOME base are root's, and Otter gives the job user each
# workspace directory and VIBE_HOME it makes (docs/workspace-trust-model.md).
set -eu
useradd --system --uid 10001 --user-group --create-home --home-dir /home/otter-job \
  --shell /bin/bash otter-job
mkdir -p /var/lib/otter/vibe /workspaces
chmod 0755 /var/lib/otter /var/lib/otter/vibe /workspaces
