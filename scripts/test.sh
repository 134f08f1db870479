#!/usr/bin/env bash
# Install what the tests need and run the default suite (offline, CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="[dev]" . scripts/setup-env.sh
bash scripts/install-browser.sh   # Debian chromium + chromedriver for the playground test
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
lint-imports --no-cache --no-logo   # the layers of docs/architecture.md (pyproject.toml)
python -m pytest -q -p no:cacheprovider "$@"
