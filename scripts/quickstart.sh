#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh checkout: install, validate the bundled
# example data, fine-tune MiniLM on it, print the evaluation report and sample predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh

echo "== 1/4 check the data"
bridgetune validate-data examples/configs/support_sentiment.yaml
echo "== 2/4 fine-tune the bundled all-MiniLM-L6-v2 on support-message sentiment"
bridgetune train examples/configs/support_sentiment.yaml --overwrite   # rerunnable
echo "== 3/4 evaluation report (runs/support-sentiment/dev_report.md)"
cat runs/support-sentiment/dev_report.md
echo "== 4/4 predictions from the saved model"
bridgetune predict runs/support-sentiment/model \
  "My Aero X2 headphones arrived with a cracked case and nobody answers my emails." \
  "Can I change the delivery address for order #48213?" \
  "Thanks, the replacement charger came a day early. Great service!"
echo "== bonus: named entities (train support NER, then predict)"
bridgetune train examples/configs/support_ner.yaml --overwrite
bridgetune predict runs/support-ner/model \
  "Hi, this is Maria Lopez: my Nimbus Pad 11 order #55102 to Chicago is late since March 3rd."
