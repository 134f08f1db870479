#!/usr/bin/env bash
# Install what the tests need and run the default suite (offline, CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
pip install --quiet -e ".[dev]"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q -p no:cacheprovider "$@"
