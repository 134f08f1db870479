#!/usr/bin/env bash
# For maintainers: install the NEWEST versions pyproject.toml allows into a separate venv
# (.venv-latest, the lock ignored) and run the default test suite there, so upstream breakage
# shows up in a run we start, not in a user's install. Run it before a release, after a
# transformers/peft/accelerate/torch release, and weekly.
#
#   bash scripts/test-latest.sh                 # report only: versions that differ, test result
#   bash scripts/test-latest.sh --update-lock   # and, when the suite passes, write them into
#                                               # requirements/lock.txt (commit it)
# Extra arguments go to pytest (e.g. -x, -k prefix).
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE=0
if [ "${1:-}" = "--update-lock" ]; then UPDATE=1; shift; fi
PYTHON=${PYTHON:-python3}
VENV=.venv-latest
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
quiet_pip() {  # as in setup-env.sh
    "$@" --quiet 2>&1 | { grep -v "^WARNING: Location '.*' is ignored: it is neither" || true; }
}

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
quiet_pip "$VENV/bin/pip" install --upgrade pip
quiet_pip "$VENV/bin/pip" install "torch==$TORCH_VERSION"
quiet_pip "$VENV/bin/pip" install --upgrade --upgrade-strategy eager -e ".[dev]"

FROZEN=$(mktemp)
trap 'rm -f "$FROZEN"' EXIT
# torch is pinned by the set-up scripts themselves (TORCH_VERSION), and the CUDA runtime
# packages belong to a GPU build of it: neither goes into the lock.
"$VENV/bin/pip" freeze --exclude-editable --all \
  | grep -viE '^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|pip|setuptools|wheel)==' \
  | LC_ALL=C sort -f > "$FROZEN"

echo "== versions that differ from requirements/lock.txt (lock -> newest)"
"$VENV/bin/python" scripts/lock_diff.py requirements/lock.txt "$FROZEN"

echo "== test suite on the newest versions"
status=0
(
  . "$VENV/bin/activate"
  export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  python -m pytest -q -p no:cacheprovider "$@"
) || status=$?

if [ "$status" -ne 0 ]; then
  echo "test-latest: the suite FAILED on the newest versions (above); the lock is unchanged." \
    "Fix the code, or add an upper bound in pyproject.toml naming the version that breaks."
  exit "$status"
fi
if [ "$UPDATE" -eq 1 ]; then
  {
    echo "# The exact versions the test suite passed with, for scripts/setup-env.sh (pip --constraint)."
    echo "# Platform: $("$VENV/bin/python" -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")'), torch $TORCH_VERSION (CPU; pinned by the scripts, not here)."
    echo "# Regenerate: bash scripts/test-latest.sh --update-lock   ($(date -u +%Y-%m-%d))"
    cat "$FROZEN"
  } > requirements/lock.txt
  echo "test-latest: suite passed; requirements/lock.txt updated (review the diff and commit it)."
else
  echo "test-latest: suite passed on the newest versions; --update-lock would record them."
fi
