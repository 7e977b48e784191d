#!/usr/bin/env bash
# Usage: scripts/install_mistral_vibe.sh [--version X.Y.Z] [-h|--help]
#
# Installs the Mistral Vibe CLI (`vibe`, PyPI package mistral-vibe, default 3.0.3) into a
# private virtualenv and links it into a bin directory, for Otter's worker (OTTER_VIBE_BIN) and
# the real-vibe end-to-end test (DESIGN.md §4, §9).
#
#   OTTER_PYTHON      CPython >= 3.12 to use (otherwise searched: python3.13/python3.12 on PATH,
#                     pyenv versions, then on Debian/Ubuntu `apt-get install python3` when the
#                     packaged python3 is new enough)
#   OTTER_VIBE_VENV   the virtualenv (default: ~/.cache/otter/vibe-venv)
#   OTTER_BIN_DIR     where the `vibe` symlink goes (default: ~/.local/bin)
#
# Idempotent: when the venv's `vibe --version` already names the wanted version, it only prints
# it. mistral-vibe 3.0.3's wheel pins certifi==2026.10.19, which PyPI no longer serves: the
# wheel's own requirements are installed with an available certifi post-release instead
# (certifi==2026.10.19.post1), then the wheel itself with --no-deps.
set -euo pipefail

VERSION="3.0.3"
MIN_PY_MINOR=12 # CPython 3.12 or newer

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0"
}

while (($# > 0)); do
    case "$1" in
    --version)
        [[ $# -ge 2 && -n "$2" ]] || {
            echo "error: --version needs a value" >&2
            exit 2
        }
        VERSION="$2"
        shift 2
        ;;
    --version=*)
        VERSION="${1#--version=}"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "error: unknown argument: $1" >&2
        usage >&2
        exit 2
        ;;
    esac
done

HOME_DIR="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
VENV="${OTTER_VIBE_VENV:-$HOME_DIR/.cache/otter/vibe-venv}"
BIN_DIR="${OTTER_BIN_DIR:-$HOME_DIR/.local/bin}"

log() { printf 'install_mistral_vibe: %s\n' "$*" >&2; }
die() {
    printf 'install_mistral_vibe: error: %s\n' "$*" >&2
    exit 1
}

# Prints the version of the venv's vibe ("vibe 3.0.3"), or nothing.
installed_version() {
    if [[ -x "$VENV/bin/vibe" ]]; then
        "$VENV/bin/vibe" --version 2>/dev/null | head -n 1 || true
    fi
}

# True when `vibe --version` output $1 names exactly $VERSION.
is_wanted() {
    local words
    read -r -a words <<<"$1"
    local w
    for w in "${words[@]}"; do
        [[ "$w" == "$VERSION" || "$w" == "v$VERSION" ]] && return 0
    done
    return 1
}

finish() {
    local version="$1"
    mkdir -p "$BIN_DIR"
    ln -sfn "$VENV/bin/vibe" "$BIN_DIR/vibe"
    echo "$version"
    echo "vibe is installed in $VENV (linked from $BIN_DIR/vibe)."
    echo "Set: OTTER_VIBE_BIN=$VENV/bin/vibe"
}

# True when $1 runs and is CPython >= 3.$MIN_PY_MINOR with the venv module.
python_ok() {
    "$1" - "$MIN_PY_MINOR" >/dev/null 2>&1 <<'EOF'
import sys, platform, venv  # noqa: F401  (venv must be importable)
ok = platform.python_implementation() == "CPython" and sys.version_info >= (3, int(sys.argv[1]))
sys.exit(0 if ok else 1)
EOF
}

find_python() {
    if [[ -n "${OTTER_PYTHON:-}" ]]; then
        python_ok "$OTTER_PYTHON" ||
            die "OTTER_PYTHON=$OTTER_PYTHON is not a working CPython >= 3.$MIN_PY_MINOR (with the venv module)"
        echo "$OTTER_PYTHON"
        return
    fi
    local candidate
    for candidate in python3.14 python3.13 python3.12 python3; do
        # pyenv shims exist on PATH even when the version is not selected; python_ok runs them.
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    local roots=()
    if command -v pyenv >/dev/null 2>&1; then
        roots+=("$(pyenv root 2>/dev/null)/versions")
    fi
    roots+=("${PYENV_ROOT:-$HOME_DIR/.pyenv}/versions" "$HOME_DIR/.pyenv/versions")
    local root dir
    for root in "${roots[@]}"; do
        [[ -d "$root" ]] || continue
        # Newest first (version sort), plain CPython versions only (e.g. 3.13.0, not pypy3.10).
        while IFS= read -r dir; do
            for candidate in "$root/$dir/bin/python3" "$root/$dir/bin/python"; do
                if [[ -x "$candidate" ]] && python_ok "$candidate"; then
                    echo "$candidate"
                    return
                fi
            done
        done < <(find "$root" -mindepth 1 -maxdepth 1 -printf '%f\n' | grep -E '^3\.[0-9]+(\.[0-9]+)?$' | sort -rV)
    done
    if [[ -f /etc/debian_version ]] && command -v apt-get >/dev/null 2>&1; then
        local candidate_version
        candidate_version="$(apt-cache policy python3 2>/dev/null | awk '/Candidate:/ {print $2}')"
        if [[ "$candidate_version" =~ ^([0-9]+:)?3\.([0-9]+) ]] && ((BASH_REMATCH[2] >= MIN_PY_MINOR)); then
            log "installing python3 $candidate_version from the OS packages"
            local sudo=()
            ((EUID == 0)) || sudo=(sudo)
            "${sudo[@]}" apt-get install -y python3 python3-venv >&2
            if python_ok /usr/bin/python3; then
                echo /usr/bin/python3
                return
            fi
        else
            log "the OS package python3 is ${candidate_version:-unavailable}, older than 3.$MIN_PY_MINOR; not installing it"
        fi
    fi
    die "mistral-vibe needs CPython >= 3.$MIN_PY_MINOR and none was found. Install one (e.g. \
\`pyenv install 3.13\`, \`uv python install 3.13\`, or your OS's python3.12/python3.13 package) \
and run again, or point OTTER_PYTHON at its python3 binary."
}

# ---------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$VENV")"
# One install at a time (parallel test runs, several shells).
exec 9>"$VENV.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

current="$(installed_version)"
if [[ -n "$current" ]] && is_wanted "$current"; then
    finish "$current"
    exit 0
fi

PYTHON="$(find_python)"
log "using $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
start=$SECONDS

if [[ -e "$VENV" ]]; then
    log "replacing $VENV (${current:-no working vibe in it})"
    rm -rf "$VENV"
fi
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log "downloading mistral-vibe==$VERSION"
"${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$WORK/wheel" "mistral-vibe==$VERSION" ||
    die "could not download mistral-vibe==$VERSION from the package index (is PyPI reachable?)"
WHEEL="$(find "$WORK/wheel" -maxdepth 1 -name '*.whl' | head -n 1)"
[[ -n "$WHEEL" ]] || die "pip downloaded no wheel for mistral-vibe==$VERSION"

# The wheel's Requires-Dist lines (extras skipped), one requirement a line.
"$VENV/bin/python" - "$WHEEL" >"$WORK/requirements.in" <<'EOF'
import re, sys, zipfile
from email.parser import HeaderParser
with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(wheel.read(name).decode("utf-8"))
for req in meta.get_all("Requires-Dist") or []:
    if re.search(r"\bextra\s*==", req):
        continue
    print(req.strip())
EOF

# certifi: keep the pin when the index serves it, else take its .post1 (the republished one).
: >"$WORK/requirements.txt"
while IFS= read -r req; do
    if [[ "$req" =~ ^certifi[[:space:]]*\(?[[:space:]]*==[[:space:]]*([0-9][0-9A-Za-z.]*)[[:space:]]*\)?[[:space:]]*(;.*)?$ ]]; then
        pinned="${BASH_REMATCH[1]}"
        marker="${BASH_REMATCH[2]:-}"
        if "${PIP[@]}" download --quiet --no-deps --dest "$WORK/certifi" "certifi==$pinned" >/dev/null 2>&1; then
            req="certifi==$pinned$marker"
        elif "${PIP[@]}" download --quiet --no-deps --dest "$WORK/certifi" "certifi==$pinned.post1" >/dev/null 2>&1; then
            log "certifi==$pinned is not served; using certifi==$pinned.post1"
            req="certifi==$pinned.post1$marker"
        else
            die "mistral-vibe==$VERSION pins certifi==$pinned, and neither it nor $pinned.post1 is available"
        fi
    fi
    printf '%s\n' "$req" >>"$WORK/requirements.txt"
done <"$WORK/requirements.in"

log "installing $(wc -l <"$WORK/requirements.txt") requirements"
"${PIP[@]}" install --quiet --requirement "$WORK/requirements.txt" ||
    die "installing mistral-vibe's requirements failed (is PyPI reachable?)"
log "installing $(basename "$WHEEL") (--no-deps)"
"${PIP[@]}" install --quiet --no-deps "$WHEEL"

current="$(installed_version)"
if [[ -z "$current" ]] || ! is_wanted "$current"; then
    die "installed mistral-vibe==$VERSION, but '$VENV/bin/vibe --version' says '${current:-nothing}'"
fi
log "installed in $((SECONDS - start)) s"
finish "$current"
