"""Continued masked-LM pre-training on unlabelled text (`bridgetune pretrain`, task `mlm`).

Data (CorpusReader, below): documents, one per line of a .txt file, rows of
CSV/TSV/JSONL, or the sentences of a CoNLL-style token file (tags ignored); .txt and JSONL files
are read from disk when needed, so a corpus may be larger than memory. Each document is cut
into windows of max_length tokens (nothing is dropped), tokenized once: the windows are cached
on disk (bridgetune.knowledge.corpus) and a later run on the same text maps them. Masking
(bridgetune.knowledge.masking: token, whole-word with jieba's words for Chinese, or knowledge
masking of dictionary phrases) is drawn afresh for every training batch; dev windows are masked
the same way at every evaluation (seeded by their tokens), so dev loss and perplexity compare
across evaluations and with the model before training, which the run reports next to the final
figures.

A base model without a trained masked-LM head (the bundled MiniLM has none) gets a fresh one
whose output layer is tied to the input embeddings. The model directory is a masked-LM model
any task config can name as `model.name` (its encoder is what a classifier or tagger loads).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bridgetune.config import DataConfig, RunConfig
from bridgetune.data.io import column, detect_format, json_row, read_records
from bridgetune.data.readers import TAG_PATTERN, TOKEN_ONLY, starts_with
from bridgetune.data.schema import DataError, Example
from bridgetune.knowledge.corpus import LazyLines
from bridgetune.knowledge.masking import add_words, mask, units
from bridgetune.tasks.base import TASKS, Feature, Task, pad_batch
from bridgetune.tasks.losses import IGNORE
from bridgetune.tasks.metrics import loss_metrics
from bridgetune.tasks.predictions import LossPrediction
from bridgetune.tasks.token import TokenReader


@dataclass(frozen=True)
class CorpusReader:
    """Unlabelled text for masked-LM pre-training: .txt/.md files (each non-empty line a
    document; Chinese text needs no spaces), CSV/TSV/JSONL rows of `text_column`, or the
    sentences of CoNLL-style token files (`data.format: conll`, or a .conll/.bio/.bmes/...
    file; tags ignored), e.g. the training file of an NER task."""

    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        suffix = path.suffix.lower()
        if cfg.format == "conll" or (cfg.format == "auto" and suffix in TOKEN_ONLY):
            sentences = TokenReader().read_file(path, cfg, labelled=False)
            return [Example(text=e.text, source=e.source) for e in sentences]
        if suffix in (".txt", ".md", ".text"):
            self.refuse_tag_lines(path)
            return LazyLines.scan(  # read from disk when needed: a corpus can outgrow memory
                path, lambda line, number: Example(text=line, source=f"{path}:{number}")
            )
        fmt = detect_format(path, cfg.format, tagged=False)
        if fmt == "jsonl" and not starts_with(path, b"["):
            return LazyLines.scan(path, lambda line, number: self.read_row(
                json_row(line, path, number), cfg, (path, number)))  # fmt: skip
        return [self.read_row(row, cfg, (path, n)) for n, row in read_records(path, fmt)]

    @staticmethod
    def refuse_tag_lines(path: Path) -> None:
        """A .txt file of token + tag lines read as documents would train on the tags."""
        with path.open(encoding="utf-8", errors="replace") as stream:
            lines = [line for _, line in zip(range(400), stream)]
        sample = [line.split() for line in lines if line.strip()][:200]
        tagged = [parts for parts in sample if len(parts) >= 2 and TAG_PATTERN.fullmatch(parts[-1])]
        if sample and len(tagged) >= 0.8 * len(sample):
            raise DataError(
                f"{path}: looks like a CoNLL-style tag file (line 1: {lines[0].strip()!r}); "
                "set data.format: conll to pre-train on its sentences, tags ignored"
            )

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        path, number = where
        row = {cfg.column_map.get(k, k): v for k, v in row.items()}
        text = column(row, cfg.text_column, path, number)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{number}: empty text in column '{cfg.text_column}'")
        return Example(text=text.strip(), source=f"{path}:{number}")

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return []

    def check_label_set(self, labels: list[str], source: str) -> None:
        return None

    def stratum(self, example: Example) -> str | None:
        return None


@TASKS.register("mlm")
class MaskedLMTask(Task):
    """Masked-LM pre-training of an encoder on unlabelled text; no labels."""

    name = "mlm"
    auto_class = "AutoModelForMaskedLM"
    problem = "mlm"
    default_metric = "loss"
    lower_is_better = frozenset({"loss", "perplexity"})
    takes_pairs = False
    output = "loss"
    prediction = LossPrediction
    reader = CorpusReader()
    baseline_eval = True  # dev metrics of the model before training are reported too

    def __init__(
        self,
        labels: list[str],
        masking: str = "whole_word",
        mask_prob: float = 0.15,
        phrases: list[str] | None = None,
    ) -> None:
        self.labels = labels
        self.masking = masking
        self.mask_prob = mask_prob
        self.phrases = sorted(set(phrases or []), key=len, reverse=True)
        self.tokenizer: Any = None  # set by encode: masking draws its random tokens from it
        if self.phrases:
            add_words(self.phrases)  # jieba keeps them whole

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> MaskedLMTask:
        pretrain = settings.get("pretrain") or {}
        return cls(
            labels,
            pretrain.get("masking", settings.get("masking", "whole_word")),
            pretrain.get("mask_prob", settings.get("mask_prob", 0.15)),
            read_phrases(pretrain.get("phrases")),
        )

    def settings(self) -> dict[str, Any]:
        return {"masking": self.masking, "mask_prob": self.mask_prob}

    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        if cfg.method.name != "full":
            raise ValueError(f"method.name={cfg.method.name!r}: pre-training trains the whole "
                             "encoder; use method.name: full")  # fmt: skip
        if cfg.train.rdrop or cfg.train.class_weights:
            raise ValueError("train.rdrop and train.class_weights do not apply to pre-training")
        if cfg.pretrain.masking == "knowledge" and not cfg.pretrain.phrases:
            raise ValueError("pretrain.masking: knowledge masks dictionary phrases: set "
                             "pretrain.phrases (a file, one phrase per line)")  # fmt: skip

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        from rich.console import Console
        from transformers import AutoConfig, AutoModelForMaskedLM

        config = AutoConfig.from_pretrained(name_or_path)
        if kwargs.get("dropout") is not None:
            for key in ("hidden_dropout_prob", "dropout"):
                if hasattr(config, key):
                    setattr(config, key, kwargs["dropout"])
        model, info = AutoModelForMaskedLM.from_pretrained(
            name_or_path, config=config, output_loading_info=True
        )
        model.tie_weights()
        fresh = [key for key in info.get("missing_keys", []) if "embeddings" not in key]
        if fresh:
            Console(stderr=True).print(
                f"{name_or_path} has no trained masked-LM head: a fresh one starts "
                f"({len(fresh)} tensors; its output layer is tied to the input embeddings)"
            )
        return model

    def encode(self, examples: Sequence[Example], tokenizer: Any, max_length: int) -> Any:
        """Windows of up to max_length tokens (special tokens included) of every document,
        tokenized once and cached on disk (bridgetune.knowledge.corpus): a WindowStore."""
        from bridgetune.knowledge.corpus import windows

        self.tokenizer = tokenizer
        settings = {"masking": self.masking, "phrases": self.phrases, "max_length": max_length}
        return windows(examples, tokenizer, lambda chunk, t: self.cut(chunk, t, max_length),
                       settings)  # fmt: skip

    def cut(
        self, examples: list[Example], tokenizer: Any, max_length: int
    ) -> Iterator[tuple[int, list[int], list[int]]]:
        """(document, window ids, window units) of every window of `examples`."""
        prefix, suffix = special_frame(tokenizer)
        room = max_length - len(prefix) - len(suffix)
        encoded = tokenizer(
            [e.text for e in examples], add_special_tokens=False, return_offsets_mapping=True
        )
        for row, example in enumerate(examples):
            ids, offsets = encoded["input_ids"][row], encoded["offset_mapping"][row]
            found = units(example.text, offsets, encoded.word_ids(row), self.masking,
                          self.phrases)  # fmt: skip
            for start in range(0, max(len(ids), 1), room):
                # the special tokens around the window are never masked
                yield (
                    row,
                    prefix + ids[start : start + room] + suffix,
                    [-1] * len(prefix) + found[start : start + room] + [-1] * len(suffix),
                )

    def collate_train(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """A fresh masking for every batch (torch's RNG: seeded, restored on resume)."""
        return self._masked(features, pad_id, None)

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Dev and prediction: each window masked the same way every time."""
        return self._masked(features, pad_id, "fixed")

    def _masked(self, features: list[Feature], pad_id: int, fixed: str | None) -> dict:
        rows = []
        for feature in features:
            inputs, labels = self.masked(feature, fixed is not None)
            rows.append({**feature, "input_ids": inputs, "labels": labels})
        return pad_batch(rows, pad_id, label_pad=IGNORE)

    def masked(self, feature: Feature, fixed: bool) -> tuple[list[int], list[int]]:
        generator = None
        if fixed:
            generator = torch.Generator().manual_seed(zlib.crc32(bytes(str(feature["input_ids"]),
                                                                        "utf-8")))  # fmt: skip
        return mask(feature["input_ids"], feature["units"], self.tokenizer, self.mask_prob,
                    generator, IGNORE)  # fmt: skip

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Each window's summed loss over its masked tokens (the dev masking)."""
        predictions = []
        for row, feature in enumerate(features):
            _, labels = self.masked(feature, True)
            target = torch.tensor(labels, dtype=torch.long, device=logits.device)
            scored = int((target != IGNORE).sum())
            nll = 0.0
            if scored:
                nll = F.cross_entropy(logits[row, : len(labels)].float(), target,
                                      reduction="sum", ignore_index=IGNORE).item()  # fmt: skip
            predictions.append({"nll": nll, "tokens": scored, "truncated": False})
        return predictions

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        return loss_metrics(predictions)

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        raise ValueError("a pre-trained encoder takes no feedback; fine-tune it for a task")


def special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS] / [SEP])."""
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(framed) - len(bare) + 1):
        if framed[start : start + len(bare)] == bare:
            return framed[:start], framed[start + len(bare) :]
    return [], []


def read_phrases(path: str | None) -> list[str]:
    """The knowledge dictionary: one phrase per line (blank lines and # comments skipped)."""
    if not path:
        return []
    from bridgetune.knowledge.words import read_word_list

    missing = "no phrase file there (pretrain.phrases: one phrase per line)"
    return [phrase for _, phrase in read_word_list(path, missing)]
