"""The one inference path: the Predictor over a model directory (predictor), text generation and
its scores (generation), and retrieval for chat (retrieval). Loads no training module (a test
checks at runtime; import-linter statically)."""
