# Sourced by quickstart.sh and test.sh: create/reuse .venv and install bridgetune with EXTRAS.
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip
# Pinned on purpose: on CPU machines this takes the local CPU wheel instead of several GB of CUDA.
pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
pip install --quiet -e ".${EXTRAS:-}"
