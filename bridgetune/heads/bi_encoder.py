"""The bi-encoder of `task: embedding` (bridgetune.tasks.embedding): one shared encoder, its
token states pooled (mean over the attention mask, or [CLS]) and normalized.

The model takes the queries' inputs (`input_ids`, `attention_mask`) and, when training or
evaluating, the passages' (`passage_input_ids`, `passage_attention_mask`), and returns the
queries' embeddings followed by the passages' as one (queries + passages, hidden) tensor: the
task's loss scores them against each other, its decoding splits them again. No parameters beyond
the encoder's: the head is the pooling.

A model directory is a transformers one (the encoder, `AutoModel` loads it) and a
sentence-transformers one (`modules.json`, `sentence_bert_config.json`, `1_Pooling/config.json`,
`2_Normalize`; the query and passage prefixes as its prompts), so `SentenceTransformer(directory)`
gives the same vectors (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bridgetune.heads import HEADS, HeadOutput
from bridgetune.heads.embedding import mean_pool
from bridgetune.lifecycle.atomic import atomic_write_text

POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Sentence embeddings of token states `hidden` (fp32): the mean over the tokens `mask`
    keeps, or the first token's state; unit length when `normalize`."""
    hidden = hidden.float()
    pooled = hidden[:, 0] if pooling == "cls" else mean_pool(hidden, mask)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


@HEADS.register("bi_encoder")
class BiEncoder(torch.nn.Module):
    """An encoder whose pooled, normalized states are the embeddings (module docstring)."""

    base_model_prefix = "encoder"

    def __init__(
        self,
        encoder: torch.nn.Module,
        pooling: str = "mean",
        normalize: bool = True,
        prompts: dict[str, str] | None = None,
        max_length: int | None = None,
    ) -> None:
        """`prompts`: the query and passage prefixes ({"query": "query: ", ...}) and
        `max_length`, written into the sentence-transformers files on save."""
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.encoder = encoder
        self.config = encoder.config
        self.pooling = pooling
        self.normalize = normalize
        self.prompts = dict(prompts or {})
        self.max_length = max_length

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return pool(hidden.last_hidden_state, attention_mask, self.pooling, self.normalize)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        passage_input_ids: torch.Tensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        passage_token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> HeadOutput:
        vectors = self.embed(input_ids, attention_mask, token_type_ids)
        if passage_input_ids is not None:
            assert passage_attention_mask is not None
            passages = self.embed(passage_input_ids, passage_attention_mask, passage_token_type_ids)
            vectors = torch.cat([vectors, passages])
        return HeadOutput(vectors)

    def head_modules(self) -> list[str]:
        """No layers of its own: pooling and normalization have no parameters."""
        return []

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.encoder.get_input_embeddings()

    def resize_token_embeddings(self, size: int, **kwargs: Any) -> Any:
        return self.encoder.resize_token_embeddings(size, **kwargs)

    def save(self, directory: Path) -> dict[str, Any]:
        """The encoder in transformers format and the sentence-transformers files around it."""
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        write_sentence_transformers(directory, self.config.hidden_size, self.pooling,
                                    self.normalize, self.prompts, self.max_length)  # fmt: skip
        pooler = "add_pooling_layer" if getattr(self.encoder, "pooler", 0) is None else None
        return {
            "type": "bi_encoder",
            "encoder_kwargs": {pooler: False} if pooler else {},
            "pooling": self.pooling,
            "normalize": self.normalize,
            "prompts": self.prompts,
            "max_length": self.max_length,
            "note": "plain transformers loads the encoder (AutoModel), sentence-transformers "
            "the whole model (modules.json): "
            + ("mean" if self.pooling == "mean" else "[CLS]")
            + " pooling"
            + (", normalized" if self.normalize else ""),
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> BiEncoder:
        from transformers import AutoModel

        from bridgetune.models.saved import load_saved_model

        encoder = load_saved_model(
            AutoModel, Path(directory), "embedding", labels, **head.get("encoder_kwargs", {})
        )
        return cls(encoder, head.get("pooling", "mean"), bool(head.get("normalize", True)),
                   head.get("prompts"), head.get("max_length"))  # fmt: skip


def write_sentence_transformers(
    directory: Path,
    hidden: int,
    pooling: str,
    normalize: bool,
    prompts: dict[str, str],
    max_length: int | None,
) -> None:
    """modules.json and the modules' configs in the layout sentence-transformers 2.x to 6.x
    reads (the module names of 2.x, which later versions still resolve)."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})  # fmt: skip
        (directory / "2_Normalize").mkdir(exist_ok=True)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    files = {
        "modules.json": modules,
        "1_Pooling/config.json": pooling_config,
        "sentence_bert_config.json": {"max_seq_length": max_length or 512, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {name: text for name, text in prompts.items() if text},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }
    for name, content in files.items():
        atomic_write_text(directory / name, json.dumps(content, indent=2) + "\n")
