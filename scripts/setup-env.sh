# Sourced by quickstart.sh and test.sh: create/reuse .venv and install bridgetune with EXTRAS,
# at the exact versions of requirements/lock.txt (the versions the test suite passed with).
# LOCK= (empty) installs the newest versions pyproject.toml allows instead.
PYTHON=${PYTHON:-python3}
LOCK=${LOCK-requirements/lock.txt}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
# pip without one harmless warning: on machines whose pip config lists local package folders,
# pip prints "Location ... is ignored" for every package a folder lacks. Failures still show.
quiet_pip() {
    "$@" --quiet 2>&1 | { grep -v "^WARNING: Location '.*' is ignored: it is neither" || true; }
}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
quiet_pip pip install --upgrade pip
# Pinned on purpose: on CPU machines this takes the local CPU wheel instead of several GB of CUDA.
quiet_pip pip install "torch==${TORCH_VERSION:-2.13.0}"
quiet_pip pip install ${LOCK:+--constraint "$LOCK"} -e ".${EXTRAS:-}"
