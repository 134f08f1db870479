"""The relation classifier: an encoder, and a head over the hidden states of the two
entity-start markers (`task: relation`, bridgetune.tasks.relation).

The recipe relation extraction settled on (R-BERT, Wu & He 2019; "Matching the Blanks",
Baldini Soares et al. 2019; typed markers: Zhou & Chen 2022): the sentence is read with the
head and tail entities wrapped in marker tokens, and the relation is classified from the
concatenated hidden states at the head's and the tail's opening marker, not from [CLS] alone.
`pooling: cls` reads [CLS] instead (the ablation that shows what the markers buy).

The positions are found in `input_ids` (the first opening marker of each entity; the marker
ids are the head's settings), so the model takes the inputs every model takes and every loop,
method and runtime path serves it unchanged.

A model directory keeps the encoder in transformers format (plain transformers'
`AutoModel.from_pretrained(directory, add_pooling_layer=False)` loads it for BERT-style
encoders, which are saved without the unused pooler, with the tokenizer that holds the markers
as single tokens); the head's layers are in relation_head.safetensors, described by
bridgetune.json's "head": a dropout, a linear layer with tanh and the output layer, over the
concatenated marker states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bridgetune.heads import HEADS, HeadOutput

FILE = "relation_head.safetensors"
POOLINGS = ("entity_start", "cls")


def first_position(input_ids: torch.Tensor, marker_ids: torch.Tensor) -> torch.Tensor:
    """Per row, the first position holding one of `marker_ids` (0, [CLS], where none does)."""
    found = (input_ids[..., None] == marker_ids).any(dim=-1)  # not isin: ONNX has no export
    return found.int().argmax(dim=1)


@HEADS.register("relation")
class RelationModel(torch.nn.Module):
    """An encoder with the relation head (see the module docstring)."""

    base_model_prefix = "encoder"

    def __init__(
        self,
        encoder: torch.nn.Module,
        num_labels: int,
        head_markers: list[int],
        tail_markers: list[int],
        pooling: str = "entity_start",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.encoder = encoder
        self.config = encoder.config
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        width = 2 * hidden if pooling == "entity_start" else hidden
        self.dropout = torch.nn.Dropout(dropout)
        self.relation_dense = torch.nn.Linear(width, hidden)
        self.classifier = torch.nn.Linear(hidden, num_labels)
        self.register_buffer("head_markers", torch.tensor(head_markers), persistent=False)
        self.register_buffer("tail_markers", torch.tensor(tail_markers), persistent=False)

    def pooled(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """The representation the head classifies: [head marker; tail marker] or [CLS]."""
        if self.pooling == "cls":
            return hidden[:, 0]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        head = hidden[rows, first_position(input_ids, self.head_markers)]
        tail = hidden[rows, first_position(input_ids, self.tail_markers)]
        return torch.cat([head, tail], dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> HeadOutput:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = self.pooled(hidden.last_hidden_state, input_ids)
        features = torch.tanh(self.relation_dense(self.dropout(pooled)))
        return HeadOutput(self.classifier(self.dropout(features)))

    def head_modules(self) -> list[str]:
        """The head's layers (train.head_lr, the methods' trained-and-saved head)."""
        return ["relation_dense", "classifier"]  # names no encoder uses inside (peft matches
        # modules_to_save by suffix: "dense" would take every BERT layer's dense)

    def remap_token_ids(self, new_id: dict[int, int]) -> None:
        """The markers' ids in a pruned vocabulary's ids (bridgetune.knowledge.prune)."""
        for name in ("head_markers", "tail_markers"):
            ids = getattr(self, name)
            setattr(self, name, torch.tensor([new_id[int(i)] for i in ids], device=ids.device))

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.encoder.get_input_embeddings()

    def resize_token_embeddings(self, size: int, **kwargs: Any) -> Any:
        return self.encoder.resize_token_embeddings(size, **kwargs)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{key}": value.detach().contiguous()
            for name in self.head_modules()
            for key, value in getattr(self, name).state_dict().items()
        }

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(directory)
        save_file(self.head_state(), str(Path(directory) / FILE))
        pooler = "add_pooling_layer" if getattr(self.encoder, "pooler", 0) is None else None
        return {
            "type": "relation",
            "file": FILE,
            "encoder_kwargs": {pooler: False} if pooler else {},
            "pooling": self.pooling,
            "head_markers": self.head_markers.tolist(),
            "tail_markers": self.tail_markers.tolist(),
            "labels": self.classifier.out_features,
            "note": "plain transformers loads the encoder (AutoModel) and the tokenizer; the "
            "relation head (tanh(relation_dense(pooled)) -> classifier, pooled = the hidden "
            "states of the head's and the tail's first opening marker, concatenated) is in " + FILE,
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> RelationModel:
        from safetensors.torch import load_file
        from transformers import AutoModel

        from bridgetune.models.saved import load_saved_model

        encoder = load_saved_model(
            AutoModel, Path(directory), "relation", labels, **head.get("encoder_kwargs", {})
        )
        model = cls(
            encoder, len(labels), head["head_markers"], head["tail_markers"], head["pooling"]
        )
        state = load_file(str(Path(directory) / head.get("file", FILE)))
        for name in model.head_modules():
            part = {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}.")}
            getattr(model, name).load_state_dict(part)
        return model
