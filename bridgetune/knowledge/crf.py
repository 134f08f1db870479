"""A linear-chain CRF over the word tags of a token classifier (`task.crf: true`).

The tagger's per-word scores (emissions) get learned transition scores between tags, and the
best tag sequence is found by Viterbi instead of an arg-max per word. Transitions that the tag
scheme forbids (I-X after O in IOB2, anything but I-X/E-X after B-X in BIOES/BMES, ...) are
fixed at a large negative score, so the decoded sequence is always valid.

So that the loss stays the task's one loss computed from logits (bridgetune.tasks.losses), the CRF
model's logits are the emissions (batch, tokens, tags) followed by L + 2 parameter rows:
the transitions (row = previous tag, column = next tag), the start scores and the end scores.
The loss ("crf": negative log-likelihood of the gold tags, per word) and the task's decoder
(Viterbi) read both from that one tensor. The CRF runs over the words' first sub-tokens (the
positions whose label is not IGNORE).

A model directory keeps the token classifier in transformers format: plain transformers loads
it (and decodes per word without the CRF); bridgetune.json's "head" says so, and the CRF's
parameters are in crf.safetensors beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bridgetune.data.tags import _transition_error, split_tag
from bridgetune.heads import HEADS

FORBIDDEN = -1e4  # the score of a transition the scheme does not allow
FILE = "crf.safetensors"


def allowed(labels: list[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(transitions [L, L], start [L], end [L]) as booleans: what the tag scheme allows."""
    tags = [split_tag(label) for label in labels]
    size = len(labels)
    moves = torch.ones(size, size, dtype=torch.bool)
    for i, previous in enumerate(tags):
        for j, current in enumerate(tags):
            moves[i, j] = _transition_error(previous, current, scheme) is None
    start = torch.tensor([_transition_error(("O", None), t, scheme) is None for t in tags])
    inside = "M" if scheme == "BMES" else "I"
    closing = scheme in ("BIOES", "BMES")
    end = torch.tensor([not (closing and t[0] in ("B", inside)) for t in tags])
    return moves, start, end


class CRF(torch.nn.Module):
    """Transition, start and end scores of `labels`, with the scheme's forbidden moves."""

    def __init__(self, labels: list[str], scheme: str) -> None:
        super().__init__()
        size = len(labels)
        self.transitions = torch.nn.Parameter(torch.zeros(size, size))
        self.start = torch.nn.Parameter(torch.zeros(size))
        self.end = torch.nn.Parameter(torch.zeros(size))
        moves, start, end = allowed(labels, scheme)
        self.register_buffer("penalty", (~moves).float() * FORBIDDEN, persistent=False)
        self.register_buffer("start_penalty", (~start).float() * FORBIDDEN, persistent=False)
        self.register_buffer("end_penalty", (~end).float() * FORBIDDEN, persistent=False)

    def rows(self) -> torch.Tensor:
        """The L + 2 parameter rows appended to the emissions (penalties included)."""
        return torch.cat(
            [
                self.transitions + self.penalty,
                (self.start + self.start_penalty)[None],
                (self.end + self.end_penalty)[None],
            ]
        )


def unpack(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(emissions [B, T, L], transitions [L, L], start [L], end [L]) of a CRF model's logits."""
    size = logits.shape[-1]
    emissions, params = logits[:, : -(size + 2)], logits[0, -(size + 2) :]
    return emissions, params[:size], params[size], params[size + 1]


def word_positions(labels: torch.Tensor, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [B, W], mask [B, W]): each row's labelled positions, left-aligned."""
    mask = labels != ignore
    counts = mask.sum(1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~mask).int(), dim=1, stable=True)[:, :width]
    keep = torch.arange(width, device=labels.device)[None] < counts[:, None]
    return order, keep


def nll(logits: torch.Tensor, labels: torch.Tensor, ignore: int) -> torch.Tensor:
    """Negative log-likelihood of the gold tags under the CRF, per labelled word."""
    precise = logits if logits.dtype == torch.float64 else logits.float()
    emissions, transitions, start, end = unpack(precise)
    index, mask = word_positions(labels, ignore)
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None]
    scores = emissions[rows, index]  # [B, W, L]
    gold = labels[rows, index].clamp(min=0) * mask  # [B, W]
    has_words = mask[:, 0]
    # the gold path's score
    emitted = scores.gather(-1, gold[..., None]).squeeze(-1) * mask
    moved = transitions[gold[:, :-1], gold[:, 1:]] * mask[:, 1:]
    last = gold.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
    path = start[gold[:, 0]] + emitted.sum(1) + moved.sum(1) + end[last]
    # the partition function, by the forward algorithm
    alpha = start[None] + scores[:, 0]
    for step in range(1, scores.shape[1]):
        following = torch.logsumexp(alpha[:, :, None] + transitions[None], dim=1) + scores[:, step]
        alpha = torch.where(mask[:, step, None], following, alpha)
    partition = torch.logsumexp(alpha + end[None], dim=-1)
    total = ((partition - path) * has_words).sum()
    return total / mask.sum().clamp(min=1)


def viterbi(emissions: torch.Tensor, transitions: torch.Tensor, start: torch.Tensor,
            end: torch.Tensor) -> list[int]:  # fmt: skip
    """The best tag sequence for one sentence's word emissions [W, L]."""
    if emissions.shape[0] == 0:
        return []
    emissions, transitions = emissions.float(), transitions.float()
    score = start.float() + emissions[0]
    back = []
    for step in range(1, emissions.shape[0]):
        total = score[:, None] + transitions
        score, best = total.max(0)
        score = score + emissions[step]
        back.append(best)
    tag = int((score + end.float()).argmax())
    path = [tag]
    for best in reversed(back):
        tag = int(best[tag])
        path.append(tag)
    return path[::-1]


@HEADS.register("crf")
class CRFTagger(torch.nn.Module):
    """A token classifier with a CRF on top (see the module docstring)."""

    def __init__(self, tagger: torch.nn.Module, labels: list[str], scheme: str) -> None:
        super().__init__()
        self.tagger = tagger
        self.crf = CRF(labels, scheme)
        self.config = tagger.config
        self.scheme = scheme

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        from transformers.modeling_outputs import TokenClassifierOutput

        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        emissions = self.tagger(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
        rows = self.crf.rows().to(emissions.dtype)
        packed = torch.cat([emissions, rows[None].expand(emissions.shape[0], -1, -1)], dim=1)
        return TokenClassifierOutput(logits=packed)

    def head_modules(self) -> list[str]:
        """The tagger's own head (its classifier) and the CRF: the encoder inside the tagger is
        the body (train.head_lr must not reach it)."""
        from bridgetune.methods.base import head_modules

        return [f"tagger.{name}" for name in head_modules(self.tagger)] + ["crf"]

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.tagger.get_input_embeddings()

    def resize_token_embeddings(self, size: int, **kwargs: Any) -> Any:
        return self.tagger.resize_token_embeddings(size, **kwargs)

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        self.tagger.save_pretrained(directory)
        state = {k: v.detach().contiguous() for k, v in self.crf.state_dict().items()}
        save_file(state, str(Path(directory) / FILE))
        return {
            "type": "crf",
            "file": FILE,
            "scheme": self.scheme,
            "note": "a CRF over the tags: plain transformers loads the tagger without it "
            "(per-word arg-max); bridgetune decodes with the CRF (Viterbi)",
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> CRFTagger:
        from safetensors.torch import load_file
        from transformers import AutoModelForTokenClassification

        tagger = AutoModelForTokenClassification.from_pretrained(directory, use_safetensors=True)
        model = cls(tagger, labels, head.get("scheme", "IOB2"))
        model.crf.load_state_dict(load_file(str(Path(directory) / head.get("file", FILE))))
        return model
