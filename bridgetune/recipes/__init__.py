"""Recipes: one module per lifecycle verb, each composing stages and nothing else (torchtune's
recipes): check (config and task preparation), train (train, pretrain), finish (the end of every
run), evaluate (evaluate, validate-data, inputs), augment, fewshot, zeroshot, predict, monitor,
feedback, extract (triples and a knowledge graph from raw text). The CLI is a thin shell over
them; the package root (bridgetune.train, ...) names them. Next: export, distill, retrain,
search, ensemble (docs/architecture.md)."""
