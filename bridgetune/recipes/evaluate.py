"""evaluate a saved model on labelled data, read unlabelled inputs for it, and validate a config's
data before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.data.bounds import clip_text, clip_words, is_clipped
from bridgetune.data.io import read_file
from bridgetune.data.schema import Example
from bridgetune.data.splits import check_labels, load_splits
from bridgetune.inference.predictor import Predictor
from bridgetune.lifecycle.reports import write_report
from bridgetune.modeldir import read_meta, saved_task_options
from bridgetune.recipes.check import ConfigLike, as_config, prepare_task, tags_words, task_reader
from bridgetune.recipes.predict import load
from bridgetune.tasks import reader_of


def saved_data_config(meta: dict[str, Any], path: str) -> DataConfig:
    """The data options a model was trained with, reading `path` (older directories recorded
    task options there too: they are the task's now, `saved_task_options`)."""
    saved = meta.get("data", {}).items()
    return DataConfig(
        train=path, **{k: v for k, v in saved if v is not None and k in DataConfig.model_fields}
    )


def evaluate(
    model_dir: str | Path, data: str | Path, output: str | Path | None = None, split: str = "eval"
) -> dict[str, Any]:
    """Metrics of a saved model on a labelled file (same columns as training); writes a report
    (JSON, Markdown, confusion matrix; generative models: sample generations) into `output`
    when given. A generative model is scored by loss and perplexity and by its generations
    (ROUGE, BLEU, chrF, exact match, EOS share; decoding from its generation config)."""
    predictor = load(model_dir)
    meta = predictor.meta
    cfg = saved_data_config(meta, str(data))
    examples = read_file(Path(data), cfg, reader_of(meta["task"], saved_task_options(meta)))
    check_labels(examples, predictor.task.labels, split)
    if predictor.task.generative:
        metrics = evaluate_generation(predictor, examples)
    else:
        metrics = predictor.task.metrics(predictor.predict(examples), examples)
    if output is not None:
        write_report(Path(output), split, metrics, title=f"{Path(model_dir).name}: {data}")
    return metrics


def evaluate_generation(predictor: Predictor, examples: list[Example]) -> dict[str, Any]:
    """Loss and perplexity of a generative model on labelled `examples`, and the scores of
    what it generates for them (bridgetune.inference.generation.generation_report)."""
    from rich.console import Console

    from bridgetune.inference.generation import generation_report
    from bridgetune.inference.predictor import infer

    task, tokenizer = predictor.task, predictor.tokenizer
    features = task.encode(examples, tokenizer, predictor.max_length)
    scored = infer(predictor.model, task, features, examples, tokenizer.pad_token_id,
                   predictor.device, batch_size=8)  # fmt: skip
    metrics = task.metrics(scored, examples)
    with Console(stderr=True).status(f"generating for {len(examples)} examples"):
        metrics.update(
            generation_report(
                predictor.model,
                tokenizer,
                examples,
                chat=task.chat,
                max_length=predictor.max_length,
                device=predictor.device,
                template=getattr(task, "prompt_template", None),  # its own tokens stay control
            )
        )
    return metrics


def read_inputs(model_dir: str | Path, path: Path, fmt: str = "auto") -> list[Example]:
    """Unlabelled inputs from TXT (a text per line), CSV/TSV/JSONL (the model's text columns)
    or, with fmt='conll', a token file (NER: predictions keep its words)."""
    from bridgetune.data.io import iter_lines, read_text

    meta = read_meta(Path(model_dir))
    if fmt == "txt" or (fmt == "auto" and path.suffix.lower() in (".txt", ".text")):
        return [Example(text=line) for line in iter_lines(read_text(path)) if line.strip()]
    cfg = saved_data_config(meta, str(path))
    cfg.format = fmt if fmt != "auto" else cfg.format
    reader = reader_of(meta["task"], saved_task_options(meta))
    return read_file(path, cfg, reader, labelled=False)


def validate_data(config: ConfigLike, overrides: list[str] | None = None) -> dict[str, Any]:
    """Check and describe the configured data before training (reads, validates, tokenizes)."""
    from bridgetune.data.stats import describe_splits

    cfg = as_config(config, overrides)
    splits = load_splits(cfg.data, task_reader(cfg))
    task, tokenizer, _ = prepare_task(cfg, splits)

    def lengths(examples: list[Example]) -> list[int]:
        if task.generative:  # as encoded: template, prompt, answer and EOS
            return [len(f["input_ids"]) for f in task.encode(examples, tokenizer, 2**31 - 1)]
        limit = cfg.model.max_length  # texts past its character bound are counted in it
        if tags_words(cfg.task.name):
            words = [clip_words(e.tokens or [], limit) for e in examples]
            encoded = tokenizer(words, is_split_into_words=True)
            cut = [len(w) < len(e.tokens or []) for w, e in zip(words, examples)]
        else:
            pairs = None
            if examples[0].text_pair is not None:
                pairs = [clip_text(e.text_pair or "", limit) for e in examples]
            encoded = tokenizer([clip_text(e.text, limit) for e in examples], pairs)
            cut = [is_clipped(e.text, limit) or is_clipped(e.text_pair, limit) for e in examples]
        counts = [len(ids) for ids in encoded["input_ids"]]
        return [max(n, limit + 1) if longer else n for n, longer in zip(counts, cut)]

    return describe_splits(splits, lengths, cfg.model.max_length, tags_words(cfg.task.name))
