"""The Task base (the protocol every task implements, with the defaults of its optional members),
the task registry, and the padding collate every task shares."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from bridgetune.config import DataConfig
from bridgetune.data.batching import padded
from bridgetune.data.io import Splits, read_file
from bridgetune.data.schema import DataError, Example
from bridgetune.lifecycle.store import FeedbackRow, export_rows
from bridgetune.registry import Registry
from bridgetune.tasks.losses import (
    LOSSES,
    class_weights,
    distillation_loss,
    divergence,
    task_loss,
)

Feature = dict[str, Any]


class NoOptions(BaseModel):
    """The `task.*` options of a task that takes none (a key there is a config error)."""

    model_config = ConfigDict(extra="forbid")


class Task:
    """What the loop, the methods, the predictor, the service and the monitor need from a task;
    they ask the task instead of comparing task names. The one base of every task: the
    optional members have their defaults here (no `getattr` probes elsewhere).

    Class attributes, so they can be read from `TASKS.get(name)` before a task object exists:
    `auto_class` names the transformers Auto class that loads a saved model of the task;
    `problem` is the kind of loss its head trains with, read by the task's own members and the
    losses library (bridgetune.tasks.losses), and handed to the methods as the kind of head they
    wrap (peft's task type; methods never import tasks); `default_metric` is the dev metric that
    picks the best checkpoint, `lower_is_better` the metrics that improve downwards (MAE);
    `takes_pairs`: every input is a (text, text_pair) pair; `output` is what a prediction
    carries ("label", "labels", "entities", "value", "answer", "ranking", "generation"; the
    playground renders by it) and `prediction` the pydantic model of its fields (what `decode`
    returns, what predict writes and the service documents); `reader` reads, validates and
    labels its data; `Options` is the pydantic model of the task's own `task.*` options,
    validated with the config like `method.*`, handed to `create` and saved with the model.
    """

    name: str
    labels: list[str]
    auto_class: str = "AutoModelForSequenceClassification"
    problem: str = "single"
    default_metric: str = "accuracy"
    takes_pairs: bool = False
    reader: Any = None
    output: str = "label"
    prediction: type[BaseModel] = BaseModel
    lower_is_better: frozenset[str] = frozenset()
    Options: type[BaseModel] = NoOptions

    generative = False  # generates text (generate, chat, generation metrics)
    multilabel = False  # several labels per text (sigmoid scores)
    chat = False  # prompts are conversations in the model's chat template
    takes_rules = False  # `rules:` apply to its predictions (bridgetune.knowledge.rules)
    takes_gazetteers = False  # `knowledge.gazetteers` become model inputs
    packs = False  # `task.packing`: several examples per training row
    baseline_eval = False  # dev metrics of the model before training are reported too
    default_method: str | None = None  # the method when a config names none
    threshold: float | None = None  # a decision threshold fitted on dev (multi-label)
    takes_crf = False  # `task.crf`: a CRF over its tags
    text_classes = False  # one or several classes per text (few-shot and zero-shot heads)
    ranks = False  # ranks candidates against a query (`rank`, /v1/rank)
    embeds = False  # one vector per text (`embed`, /v1/embeddings)
    # what `bridgetune distill` teaches: "sequence" (a row of logits per example), "token" (a
    # row per position), None (the task cannot be distilled)
    distills: str | None = None
    second_text = "text pairs (a second text per text)"  # what `text_pair` holds, in errors

    @classmethod
    def create(cls, labels: list[str], **settings: Any) -> Task:
        """The task for a label set; `settings` (tag_scheme, threshold, ...) as it needs."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ValueError for options of a RunConfig this task cannot take."""

    @classmethod
    def learn_settings(cls, train: list[Example], options: dict[str, Any]) -> dict[str, Any]:
        """Settings the task learns from the training examples before it is built (`options`:
        the run's `task.*`), handed to `create` and saved with the model like `settings()`:
        the relation task's entity types and type pairs. Default: none."""
        return {}

    @classmethod
    def losses(cls) -> tuple[str, ...]:
        """The `train.loss` choices of this task; the first is the default."""
        return LOSSES[cls.problem]

    @classmethod
    def configured_reader(cls, options: dict[str, Any]) -> Any:
        """The task's reader with the run's task options it reads by (causal_lm's prompt
        template, say); default: `reader` as it is."""
        return cls.reader

    def settings(self) -> dict[str, Any]:
        """What the saved model needs to rebuild this task (bridgetune.json "settings")."""
        return {}

    def evaluation_splits(self, splits: Splits, cfg: DataConfig) -> Splits:
        """The splits with what evaluation needs beyond the data files (an embedding model's
        extra corpus, `data.corpus`); default: as they are."""
        return splits

    def added_texts(self) -> list[str]:
        """Texts the task puts into its inputs beyond the data's (an embedding model's query
        and passage prefixes): a pruned vocabulary keeps their pieces. Default: none."""
        return []

    def prepare_tokenizer(self, tokenizer: Any) -> list[str]:
        """Add the task's own tokens (entity markers, say) to `tokenizer` before the model is
        built; returns the tokens added (the model's embeddings grow to match)."""
        return []

    def build_model(self, name_or_path: str, **kwargs: Any) -> torch.nn.Module:
        raise NotImplementedError

    def encode(self, examples: list[Example], tokenizer: Any, max_length: int) -> list[Feature]:
        raise NotImplementedError

    def collate(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def collate_train(self, features: list[Feature], pad_id: int) -> dict[str, torch.Tensor]:
        """Training batches (a task may pack several examples into a row); else `collate`."""
        return self.collate(features, pad_id)

    def loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        groups: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        smoothing: float = 0.0,
        kind: str | None = None,
    ) -> torch.Tensor:
        """The task's one loss (bridgetune.tasks.losses); class weights, label smoothing and
        R-Drop wrap it in the objective, which never asks what kind of task this is."""
        loss = task_loss(logits, labels, self.problem, weights, smoothing, groups, kind)
        assert loss is not None  # training batches carry labels
        return loss

    def divergence(
        self, first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """How far two dropout passes' predictions are apart (R-Drop's regularizer)."""
        return divergence(first, second, labels, self.problem)

    def soft_targets(self, logits: torch.Tensor, features: list[Feature]) -> list[torch.Tensor]:
        """A teacher's outputs for a batch, one tensor per feature, as `distillation_loss`
        reads them back (`bridgetune distill` computes them once and caches them): the
        example's row, or (token tasks) its positions' rows up to its length."""
        rows = logits.float().cpu()
        if self.distills == "token":
            return [row[: len(f["input_ids"])].clone() for row, f in zip(rows, features)]
        return [row.clone() for row in rows]

    def distillation_loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        mask: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        """How far the student's logits are from the teacher's soft targets (the batched
        `soft_targets`; `mask`: the batch's attention mask, for token tasks)."""
        return distillation_loss(student, teacher, self.problem, temperature, mask)

    def labelled_by(self, example: Example, prediction: dict[str, Any]) -> Example:
        """`example` labelled with this task's `prediction` for it: a teacher's pseudo-label of
        unlabelled text (`distill.unlabelled`)."""
        raise ValueError(f"task {self.name} cannot label examples with its predictions")

    def class_weights(self, setting: Any, features: list[Feature]) -> torch.Tensor | None:
        """Per-class loss weights for `train.class_weights` (bridgetune.tasks.losses)."""
        return class_weights(setting, self.labels, features, self.multilabel)

    def output_layer(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The layer the loss may run on scored positions only (causal LMs), else None."""
        return None

    def decode(
        self, logits: torch.Tensor, features: list[Feature], examples: list[Example]
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def calibrate(
        self, predictions: list[dict[str, Any]], examples: list[Example]
    ) -> list[dict[str, Any]]:
        """Fit decision parameters on dev (the multi-label threshold); default: none."""
        return predictions

    def metrics(self, predictions: list[dict[str, Any]], examples: list[Example]) -> dict:
        raise NotImplementedError

    def monitor_signal(self, prediction: dict[str, Any]) -> tuple[list[str], float | None]:
        """The labels and confidence one prediction adds to drift monitoring."""
        return [], None

    def counted_labels(self, prediction: dict[str, Any]) -> list[str]:
        """The labels one prediction adds to the service's label counters."""
        return []

    def feedback_label(self, label: Any, entities: list[dict] | None, text: str) -> Any:
        """A correction sent to the service, checked and made a stored label.

        Raises:
            ValueError: the correction does not fit this task (the service answers 422).
        """
        raise ValueError(f"task {self.name} takes no feedback corrections")

    def feedback_example(self, text: str, text_pair: str | None, label: Any) -> Example:
        """A checked correction (`feedback_label`'s label) as training will read it: the row
        `bridgetune feedback export` writes for it, read back by this task's reader. The
        service stores only what this reads, so every stored correction can be trained on.

        Raises:
            ValueError: the reader refuses the row; the message names the column, which is
                the request's field (text, text_pair, label).
        """
        if self.reader is None:  # a task without a reader: nothing to read it back with
            return Example(text=text, text_pair=text_pair, label=label)
        fmt = "conll" if self.reader.tagged else "jsonl"
        return exported_example(self.reader, fmt, text, text_pair, label)


TASKS: Registry[type] = Registry("task")


def refuse_entities(entities: list[dict] | None, task: str) -> None:
    """Feedback with entities for a task that labels no spans: refused, not dropped silently.

    Raises:
        ValueError: `entities` were sent.
    """
    if entities is not None:
        raise ValueError(
            f"entities: this {task} model takes no entities (they are for NER models); send "
            "the correction as 'label'"
        )


def exported_example(
    reader: Any, fmt: str, text: str, text_pair: str | None, label: Any
) -> Example:
    """One correction written as `bridgetune feedback export` writes it (`fmt`: jsonl or conll)
    and read back by `reader`, the way `bridgetune train` reads the exported file.

    Raises:
        ValueError: the reader refuses it (the temporary file's name left out of the message).
    """
    row = FeedbackRow(
        id="", created="", model_version="", task="", text=text, text_pair=text_pair,
        predicted=None, label=label,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bridgetune-feedback-") as folder:
        path = Path(folder) / f"feedback.{fmt}"
        path.write_text(export_rows([row], fmt), encoding="utf-8")
        pair_column = "text_pair" if text_pair is not None else None
        try:
            examples = read_file(
                path, DataConfig(train=str(path), text_pair_column=pair_column), reader
            )
        except DataError as error:
            message = re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", str(error))
            message = message.replace(str(path), "the exported row")
            raise ValueError(f"training could not read this correction: {message}") from None
    if len(examples) != 1:
        raise ValueError(
            f"training would read this correction as {len(examples)} examples, not one"
        )
    return examples[0]


def pad_batch(
    features: list[Feature],
    pad_id: int,
    label_pad: int | None = None,
    label_dtype: torch.dtype = torch.long,
) -> dict[str, torch.Tensor]:
    """Pad input ids (and per-token labels) to the batch's longest, rounded up to 8.

    Rows are padded as Python lists and each tensor is made in one call: a tensor per row and
    a copy into a slice of the batch cost a millisecond a batch (on every training step)."""
    longest = max(len(f["input_ids"]) for f in features)
    width = padded(longest)
    sizes = [len(f["input_ids"]) for f in features]
    ids = torch.tensor(
        [list(f["input_ids"]) + [pad_id] * (width - n) for f, n in zip(features, sizes)],
        dtype=torch.long,
    )
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in sizes], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask}
    if any("token_type_ids" in f for f in features):
        batch["token_type_ids"] = torch.tensor(
            [list(f.get("token_type_ids", [0] * n)) + [0] * (width - n)
             for f, n in zip(features, sizes)],
            dtype=torch.long,
        )  # fmt: skip
    if features[0].get("labels") is not None:
        if label_pad is None:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=label_dtype)
        else:
            batch["labels"] = torch.tensor(
                [list(f["labels"]) + [label_pad] * (width - len(f["labels"])) for f in features],
                dtype=label_dtype,
            )
    return batch
