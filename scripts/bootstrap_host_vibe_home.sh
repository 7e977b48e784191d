#!/usr/bin/env bash
# Usage: scripts/bootstrap_host_vibe_home.sh [SOURCE_VIBE_HOME]
#
# Mirrors a vibe home (default: $VIBE_HOME if set, else ~/.vibe) into Otter's template home
# (OTTER_VIBE_HOME_TEMPLATE, default ~/.cache/otter/vibe-template), which Otter copies into every
# new workspace's own VIBE_HOME before adding its own settings (DESIGN.md §4, §6).
#
# Copied: config.toml (providers, models, active_model, ...), agents/, prompts/, skills/,
# tools/, plugins/, hooks.toml, skills.toml and anything else you put there yourself.
# Not copied (state that vibe writes while it runs, or that Otter writes per workspace/job):
# logs/ (session logs, vibe.log), sessions/, runs/, worktrees/, vibehistory, caches
# (cache.toml, projects.toml, *_cache.json, skills-registry-cache/, builtin-skills/,
# plugin-data/), trusted_folders.toml and AGENTS.md (Otter writes both itself).
#
# The template's .env is the source's .env (if any) with MISTRAL_API_KEY taken from the
# repository's .env when that file sets it; it is written with mode 0600.
# The template is replaced as a whole, so running this again re-mirrors the source.
set -euo pipefail

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac
if (($# > 1)); then
    usage >&2
    exit 2
fi

log() { printf 'bootstrap_host_vibe_home: %s\n' "$*" >&2; }
die() {
    printf 'bootstrap_host_vibe_home: error: %s\n' "$*" >&2
    exit 1
}

HOME_DIR="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SOURCE="${1:-${VIBE_HOME:-$HOME_DIR/.vibe}}"
TEMPLATE="${OTTER_VIBE_HOME_TEMPLATE:-$HOME_DIR/.cache/otter/vibe-template}"

# Top-level entries never copied into the template.
EXCLUDES=(
    logs sessions session runs worktrees vibehistory
    cache.toml projects.toml '*_cache.json' skills-registry-cache builtin-skills plugin-data
    trusted_folders.toml AGENTS.md .env
)

case "$TEMPLATE" in
/*) ;;
*) TEMPLATE="$PWD/$TEMPLATE" ;;
esac
TEMPLATE="${TEMPLATE%/}"
[[ -n "$TEMPLATE" && "$TEMPLATE" != "$HOME_DIR" ]] ||
    die "refusing to use '$TEMPLATE' as the template home (set OTTER_VIBE_HOME_TEMPLATE to a directory of its own)"

have_source=false
if [[ -d "$SOURCE" ]]; then
    SOURCE="$(cd "$SOURCE" && pwd)"
    have_source=true
    if [[ -d "$TEMPLATE" && "$(cd "$TEMPLATE" && pwd)" == "$SOURCE" ]]; then
        die "the template home and the source are the same directory ($SOURCE)"
    fi
elif [[ $# -eq 1 ]]; then
    die "$SOURCE is not a directory"
else
    log "$SOURCE does not exist (run vibe once, or give a vibe home as the argument); the template gets only .env"
fi

mkdir -p "$(dirname "$TEMPLATE")"
STAGE="$(mktemp -d "$TEMPLATE.new.XXXXXX")"
trap 'rm -rf "$STAGE" "$TEMPLATE.old.$$"' EXIT
chmod 700 "$STAGE"

if $have_source; then
    if command -v rsync >/dev/null 2>&1; then
        args=(-a)
        for e in "${EXCLUDES[@]}"; do args+=(--exclude "/$e"); done
        rsync "${args[@]}" "$SOURCE/" "$STAGE/"
    else
        args=()
        for e in "${EXCLUDES[@]}"; do args+=(--exclude "./$e"); done
        tar -C "$SOURCE" "${args[@]}" -cf - . | tar -C "$STAGE" -xpf -
    fi
    chmod 700 "$STAGE"
fi

# The repository's MISTRAL_API_KEY (last assignment wins; the file is read, never sourced).
repo_key=""
if [[ -f "$REPO_ROOT/.env" ]]; then
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line#export }"
        if [[ "$line" =~ ^MISTRAL_API_KEY[[:space:]]*=[[:space:]]*(.*)$ ]]; then
            value="${BASH_REMATCH[1]}"
            value="${value%"${value##*[![:space:]]}"}"
            if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
                value="${BASH_REMATCH[1]}"
            fi
            repo_key="$value"
        fi
    done <"$REPO_ROOT/.env"
fi

# The template's .env: the source's, with MISTRAL_API_KEY replaced by the repository's.
(
    umask 077
    : >"$STAGE/.env"
    if $have_source && [[ -f "$SOURCE/.env" ]]; then
        if [[ -n "$repo_key" ]]; then
            grep -Ev '^[[:space:]]*(export[[:space:]]+)?MISTRAL_API_KEY[[:space:]]*=' "$SOURCE/.env" >>"$STAGE/.env" || true
        else
            cat "$SOURCE/.env" >>"$STAGE/.env"
        fi
    fi
    if [[ -n "$repo_key" ]]; then
        printf 'MISTRAL_API_KEY=%s\n' "$repo_key" >>"$STAGE/.env"
    fi
)
chmod 600 "$STAGE/.env"
if [[ -n "$repo_key" ]]; then
    log "MISTRAL_API_KEY from $REPO_ROOT/.env written to the template's .env"
elif [[ ! -s "$STAGE/.env" ]]; then
    log "no MISTRAL_API_KEY found (neither $REPO_ROOT/.env nor the source's .env sets one)"
fi

# Swap the new template in.
if [[ -e "$TEMPLATE" ]]; then
    mv "$TEMPLATE" "$TEMPLATE.old.$$"
fi
mv "$STAGE" "$TEMPLATE"
rm -rf "$TEMPLATE.old.$$"

if $have_source; then
    log "mirrored $SOURCE into $TEMPLATE:"
else
    log "created $TEMPLATE:"
fi
(cd "$TEMPLATE" && find . -mindepth 1 -maxdepth 1 -printf '  %P\n' | sort) >&2
echo "Set: OTTER_VIBE_HOME_TEMPLATE=$TEMPLATE"
