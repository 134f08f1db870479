"""Sentence embeddings (mean pooling, L2-normalized, as sentence-transformers does for MiniLM)
with a linear layer on top: the model of contrastive few-shot and of zero-shot from label
descriptions. The encoder is saved in transformers format, the layer in head.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bridgetune.heads import HEADS, HeadOutput

HEAD_WEIGHTS = "head.safetensors"


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the attention mask marks as real."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class SentenceEncoder(torch.nn.Module):
    """A transformers encoder turned into one vector per text."""

    def __init__(self, encoder: torch.nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = mean_pool(hidden.last_hidden_state, attention_mask)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


@HEADS.register("embedding")
class EmbeddingClassifier(torch.nn.Module):
    """logits = scale * (embedding @ weight.T) + bias, one row of `weight` per label."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        scale: float = 1.0,
        normalize: bool = True,
        multilabel: bool = False,
    ) -> None:
        super().__init__()
        self.embed = SentenceEncoder(encoder, normalize)
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias if bias is not None else torch.zeros(weight.shape[0]))
        self.scale = scale
        self.multilabel = multilabel

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        embeddings = self.embed(input_ids, attention_mask, token_type_ids)
        logits = self.linear(embeddings.to(self.linear.weight.dtype) * self.scale)
        return HeadOutput(logits)

    def save(self, directory: Path) -> dict[str, Any]:
        """Encoder in transformers format plus head.safetensors; returns the head's meta."""
        self.embed.encoder.save_pretrained(directory)
        tensors = {
            "weight": self.linear.weight.detach().float().cpu().contiguous(),
            "bias": self.linear.bias.detach().float().cpu().contiguous(),
        }
        save_file(tensors, str(Path(directory) / HEAD_WEIGHTS))
        return {
            "type": "embedding",
            "pooling": "mean",
            "normalize": self.embed.normalize,
            "scale": self.scale,
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> EmbeddingClassifier:
        from transformers import AutoModel

        encoder = AutoModel.from_pretrained(directory, use_safetensors=True)
        tensors = load_file(str(Path(directory) / HEAD_WEIGHTS))
        if tensors["weight"].shape[0] != len(labels):
            raise ValueError(
                f"{directory}: {HEAD_WEIGHTS} has {tensors['weight'].shape[0]} rows for "
                f"{len(labels)} labels"
            )
        return cls(
            encoder,
            tensors["weight"],
            tensors["bias"],
            float(head.get("scale", 1.0)),
            bool(head.get("normalize", True)),
            multilabel,
        )


class ContrastiveModel(torch.nn.Module):
    """Pairs of texts through one encoder; loss = MSE between their cosine and the target
    (sentence-transformers' CosineSimilarityLoss, as SetFit trains its body). The batch holds
    each distinct text once; `first` and `second` pick the rows of every pair."""

    def __init__(self, encoder: torch.nn.Module, chunk: int = 16) -> None:
        super().__init__()
        self.embed = SentenceEncoder(encoder, normalize=True)
        self.chunk = chunk

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        first: torch.Tensor,
        second: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadOutput:
        embeddings = self.embed_sorted(input_ids, attention_mask, token_type_ids)
        cosine = (embeddings[first] * embeddings[second]).sum(-1)
        return HeadOutput(cosine.unsqueeze(-1))  # the loss is the task's (PairSimilarityTask)

    def embed_sorted(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Embeddings of the rows, encoded in length-sorted chunks cut to their own longest.

        A batch holds up to twice `chunk` distinct texts; padding them all to the longest wastes
        work that chunks of similar lengths do not (the result is the same: padding is masked).
        """
        lengths = attention_mask.sum(-1)
        order = torch.argsort(lengths, descending=True)
        parts = []
        for start in range(0, len(order), self.chunk):
            rows = order[start : start + self.chunk]
            width = int(lengths[rows].max())
            types = None if token_type_ids is None else token_type_ids[rows, :width]
            parts.append(self.embed(input_ids[rows, :width], attention_mask[rows, :width], types))
        return torch.cat(parts)[torch.argsort(order)]  # back to the rows' order


@torch.inference_mode()
def embed_texts(
    encoder: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int, batch: int = 64
) -> torch.Tensor:
    """Normalized mean-pooled embeddings of `texts` (fp32, on the CPU)."""
    embed = SentenceEncoder(encoder).eval()
    device = next(encoder.parameters()).device
    rows = []
    for start in range(0, len(texts), batch):
        inputs = tokenizer(
            texts[start : start + batch],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        rows.append(embed(**inputs).float().cpu())
    return torch.cat(rows)
