"""The one inference path: evaluation during training, `bridgetune predict`, and serving.

`infer` runs a model over encoded features in length-sorted batches under inference mode and lets
the task decode them; `Predictor` wraps a saved model directory around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bridgetune.data.batching import LOSS_KEYS, eval_batches, feature_length
from bridgetune.data.schema import Example
from bridgetune.heads import output_logits
from bridgetune.modeldir import META_FILE, RESTORE, check_files, read_meta, read_settings
from bridgetune.models import ModelError
from bridgetune.models.saved import (
    check_vocabulary,
    first_line,
    load_saved_model,
    load_saved_tokenizer,
)
from bridgetune.tasks import TASKS, Task, build_task


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(
    device: torch.device, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """Autocast for `precision` (fp32|bf16|fp16); 'auto' is bf16 on GPUs that support it."""
    if precision == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        precision = "bf16" if bf16 else "fp32"
    if precision not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def infer(
    model: torch.nn.Module,
    task: Task,
    features: list[dict],
    examples: list[Example],
    pad_id: int,
    device: torch.device,
    batch_size: int = 64,
    precision: str = "auto",
    batch_tokens: int | None = None,
    observe: Callable[[torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
) -> list[dict[str, Any]]:
    """Predictions for `features`, in their order (batches are sorted by length inside).
    `observe(logits, inputs)`, when given, sees every batch's logits before decoding (the
    export's parity check compares them)."""
    was_training = model.training
    model.eval()
    lengths = [feature_length(f) for f in features]
    results: list[dict[str, Any] | None] = [None] * len(features)
    with torch.inference_mode(), autocast_for(device, precision):
        for batch in eval_batches(lengths, batch_size, batch_tokens):
            tensors = task.collate([features[i] for i in batch], pad_id)
            tensors = {
                k: v.to(device, non_blocking=True) for k, v in tensors.items() if k not in LOSS_KEYS
            }
            logits = output_logits(model(**tensors))
            if observe is not None:
                observe(logits, tensors)
            # a task whose features carry their example may cut one into several (mlm windows)
            batch_examples = [features[i].get("example") or examples[i] for i in batch]
            decoded = task.decode(logits, [features[i] for i in batch], batch_examples)
            for index, prediction in zip(batch, decoded):
                results[index] = prediction
    model.train(was_training)
    return results  # type: ignore[return-value]


def checked_meta(directory: Path) -> dict[str, Any]:
    """bridgetune.json of a model directory whose files keep the contract, and whose task this
    bridgetune knows: what can be checked without loading the model (`bridgetune serve` checks
    it before it starts).

    Raises:
        FileNotFoundError: `directory` is not a model directory.
        ValueError: a ModelError or ModelDirectoryError naming the file and what to do.
    """
    meta = read_meta(directory)
    try:
        TASKS.get(meta["task"])
    except KeyError as error:  # its message has "did you mean" and the known tasks
        raise ModelError(
            f"{Path(directory) / META_FILE}: {error.args[0]}; the file is damaged or from a "
            "bridgetune with more tasks: restore it, or upgrade bridgetune"
        ) from None
    check_files(directory, meta)
    return meta


def saved_task(directory: Path, meta: dict[str, Any]) -> Task:
    """The task of a model directory, rebuilt from its bridgetune.json.

    Raises:
        ModelError: the saved labels or settings do not make a task.
    """
    try:
        return build_task(
            meta["task"],
            meta["labels"],
            meta.get("tag_scheme", "IOB2"),
            meta.get("threshold"),
            pairs=bool((meta.get("data") or {}).get("text_pair_column")),
            **read_settings(directory, meta),
        )
    except (TypeError, ValueError, KeyError) as error:
        raise ModelError(
            f"{Path(directory) / META_FILE}: its task {meta['task']!r} cannot be rebuilt "
            f"({error}); the file is damaged: restore it, or retrain"
        ) from None


def load_head(directory: Path, meta: dict[str, Any], task: Task) -> torch.nn.Module | None:
    """The head model a directory saved (bridgetune.json "head"), or None for a plain one.

    Raises:
        ModelError: the head's files do not load.
    """
    from bridgetune.heads import load_head_model
    from bridgetune.inference import head_types  # noqa: F401  (registers every head type)

    try:
        return load_head_model(directory, meta, task.multilabel)
    except Exception as error:  # noqa: BLE001 - each head type loads its own files
        head = meta["head"] if isinstance(meta["head"], dict) else {}
        raise ModelError(
            f"{directory}: the saved {head.get('type', '?')} head does not load "
            f"({first_line(error)}); {RESTORE}"
        ) from None


class Predictor:
    """A loaded model directory: `Predictor.load(dir).predict(["text", ...])`."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        task: Task,
        meta: dict[str, Any],
        device: torch.device,
        directory: Path | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.directory = directory
        self.tokenizer = tokenizer
        self.task = task
        self.meta = meta
        self.device = device
        self.max_length = int(meta.get("max_length", 512))

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Predictor:
        """Load model, tokenizer and task from a directory written by `bridgetune train`.

        Raises:
            FileNotFoundError: `directory` is not a model directory.
            ValueError: a ModelError or ModelDirectoryError naming the damaged or missing file
                and what to do (nothing is loaded from a directory that breaks its contract).
        """
        import transformers

        directory = Path(directory)
        meta = checked_meta(directory)
        task = saved_task(directory, meta)
        tokenizer = load_saved_tokenizer(directory)
        if meta.get("runtime"):  # exported (bridgetune export): the graph, no torch weights
            from bridgetune.inference.runtimes import load_runtime

            if device not in ("auto", "cpu"):
                raise ValueError(
                    f"{directory} is exported for the {meta['runtime']['name']} runtime on CPU; "
                    f"device={device!r} needs the PyTorch model directory it came from "
                    f"({meta['runtime'].get('source', 'see bridgetune.json')})"
                )
            model = load_runtime(directory, meta["runtime"])
            return cls(model, tokenizer, task, meta, torch.device("cpu"), directory)
        model = load_head(directory, meta, task)
        if model is None:
            auto_class = getattr(transformers, task.auto_class)
            model = load_saved_model(auto_class, directory, task.name, task.labels)
        check_vocabulary(model, tokenizer, directory)
        return cls(model, tokenizer, task, meta, pick_device(device), directory)

    def to_examples(self, inputs: Sequence[str | tuple[str, str] | Example]) -> list[Example]:
        examples = []
        for item in inputs:
            if isinstance(item, Example):
                examples.append(item)
            elif isinstance(item, (tuple, list)):
                examples.append(Example(text=item[0], text_pair=item[1]))
            else:
                examples.append(Example(text=str(item)))
        if self.task.takes_pairs and any(e.text_pair is None for e in examples):
            raise ValueError(
                f"this {self.task.name} model reads {self.task.second_text}: give "
                "(text, text_pair) inputs"
            )
        if self.task.ranks and any(e.candidates is None for e in examples):
            raise ValueError(
                "this model ranks candidates: call rank(query, candidates), or give "
                "Example(text=query, candidates=[...])"
            )
        return examples

    def rank(
        self, query: str, candidates: Sequence[str], top_k: int | None = None
    ) -> list[dict[str, Any]]:
        """`candidates` sorted by their score against `query`, best first (ranking models):
        [{"index": position in `candidates`, "text", "score"}, ...], the first `top_k`."""
        if not self.task.ranks:
            raise ValueError(f"rank() needs a ranking model; this one is a {self.task.name} model")
        if not candidates:
            return []
        ranked = self.predict([Example(text=query, candidates=list(candidates))])[0]["ranking"]
        return [{**entry, "text": candidates[entry["index"]]} for entry in ranked[:top_k]]

    def embed(self, texts: Sequence[str], role: str = "query", batch_size: int = 64) -> np.ndarray:
        """Embeddings of `texts` (embedding models), one float32 row per text, read as
        queries or as passages (`role`: each gets the prefix the model was trained with)."""
        if not self.task.embeds:
            raise ValueError(
                f"embed() needs an embedding model; this one is a {self.task.name} model"
            )
        prefixed = self.task.prefixed(list(texts), role)  # type: ignore[attr-defined]
        if not prefixed:
            return np.zeros((0, int(self.model.config.hidden_size)), np.float32)
        rows = self.predict(prefixed, batch_size)
        return np.asarray([row["embedding"] for row in rows], dtype=np.float32)

    def predict(
        self, inputs: Sequence[str | tuple[str, str] | Example], batch_size: int = 64
    ) -> list[dict[str, Any]]:
        """Predictions for texts, text pairs or Examples (token Examples keep their words)."""
        if self.task.generative:
            raise ValueError(
                "this model generates text: call generate(prompts), or `bridgetune generate`"
            )
        examples = self.to_examples(inputs)
        if not examples:
            return []
        features = self.task.encode(examples, self.tokenizer, self.max_length)
        return infer(
            self.model,
            self.task,
            features,
            examples,
            self.tokenizer.pad_token_id,
            self.device,
            batch_size,
        )

    def generate(
        self,
        prompts: Sequence[str | list[dict[str, str]]],
        batch_size: int = 8,
        max_new_tokens: int | None = None,
        **decoding: Any,
    ) -> list[dict[str, Any]]:
        """Text generated for each prompt (generative models), in order: {"text", "tokens",
        "finished" (ended with EOS/end of turn), "truncated"}. A prompt is a string, or a
        conversation [{role, content}, ...]; a model trained on conversations formats both
        with its saved chat template. Decoding follows the model's generation config (the
        run's `generate:` section; greedy by default) unless `max_new_tokens` or `decoding`
        (do_sample, temperature, top_p, num_beams, repetition_penalty) say otherwise."""
        from bridgetune.inference.generation import generate_texts

        self._check_generative()
        return generate_texts(
            self.model,
            self.tokenizer,
            prompts,
            chat=self.task.chat,
            max_length=self.max_length,
            device=self.device,
            batch_size=batch_size,
            template=getattr(self.task, "prompt_template", None),
            max_new_tokens=max_new_tokens,
            **decoding,
        )

    def _check_generative(self) -> None:
        if not self.task.generative:
            raise ValueError(f"this needs a generative model; this is a {self.task.name} one")

    def prompt_text(self, prompt: str | list[dict[str, str]]) -> str:
        """The text a prompt becomes (bridgetune.inference.generation.prompt_text)."""
        from bridgetune.inference.generation import prompt_text

        return prompt_text(self.tokenizer, prompt, self.task.chat)

    def prompt_ids(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """The token ids of a prompt as `generate` encodes it: the chat or prompt template
        writes the control tokens, the content is text
        (bridgetune.inference.generation.prompts_ids)."""
        from bridgetune.inference.generation import prompts_ids

        template = getattr(self.task, "prompt_template", None)
        return prompts_ids(self.tokenizer, [prompt], self.task.chat, template)[0]

    def stream(
        self,
        prompt: str | list[dict[str, str]],
        max_new_tokens: int | None = None,
        stats: dict[str, Any] | None = None,
        **decoding: Any,
    ) -> Iterator[str]:
        """The text generated for one prompt, piece by piece as the tokens come (decoding as in
        `generate`); it stops at EOS/end of turn or after max_new_tokens. `stats`, when given,
        receives "tokens" (generated) and "finished" (EOS came first) at the end."""
        import threading

        from transformers import TextIteratorStreamer

        from bridgetune.inference.generation import default_new_tokens

        self._check_generative()
        tokenizer = self.tokenizer
        ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)
        encoded = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        stops = {tokenizer.eos_token_id}
        counted: dict[str, Any] = stats if stats is not None else {}
        counted.update(tokens=0, finished=False)

        class Streamer(TextIteratorStreamer):
            """Also counts the new tokens and sees EOS (the text alone hides both)."""

            started = False

            def put(self, value: torch.Tensor) -> None:
                if self.started or not self.skip_prompt:
                    ids = value.view(-1).tolist()
                    counted["tokens"] += sum(1 for i in ids if i not in stops)
                    counted["finished"] = counted["finished"] or any(i in stops for i in ids)
                self.started = True
                super().put(value)

        streamer = Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        model = getattr(self.model, "peft_model", self.model)
        decoding["max_new_tokens"] = max_new_tokens or default_new_tokens(model)
        arguments = {
            **encoded,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "streamer": streamer,
            "use_cache": True,
            **{k: v for k, v in decoding.items() if v is not None},
        }

        def run() -> None:
            with torch.inference_mode():
                model.generate(**arguments)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from streamer
        worker.join()

    def fit_history(self, messages: list[dict[str, str]], room: int) -> list[dict[str, str]]:
        """`messages` without their oldest exchanges (a system turn stays) until the prompt
        leaves `room` tokens for the answer within max_length."""
        kept = list(messages)
        budget = self.max_length - room

        def size(turns: list[dict[str, str]]) -> int:
            return len(self.prompt_ids(turns))

        while size(kept) > budget:
            first = 1 if kept and kept[0]["role"] == "system" else 0
            if len(kept) - first <= 1:
                break  # the newest user turn alone: generation truncates from the left
            del kept[first]
        return kept
