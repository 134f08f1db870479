"""Vocabulary pruning: a SentencePiece Unigram vocabulary cut to the pieces a run reads.

multilingual-e5-small reads with XLM-R's 250,037 pieces; its 250k x 384 word embedding is 96M of
its 118M parameters, so it dominates AdamW's time and memory and the saved model's size, while
a run's text uses a few thousand pieces. `model.prune_vocab` keeps:

- every piece the text of the loaded splits (train, dev, test, augmented copies) tokenizes to;
- every special and added token (the task's own, model.extend_vocab's), the bare word-start
  marker ▁, the lowest-scoring piece (Unigram scores an unknown character below the lowest
  score: kept, a segmentation with [UNK] stays the same) and byte-fallback pieces, if any;
- every single-character CJK piece (U+3400-U+9FFF, U+F900-U+FAFF): Chinese text never falls to
  [UNK] because of pruning;
- `prune_vocab_reserve` more pieces, highest Unigram score (the commonest) first, so unseen text
  at prediction time still tokenizes sensibly.

Kept ids stay in ascending order: the specials at 0..3 keep their ids. Text whose pieces were all
kept tokenizes to the same pieces: its best Unigram segmentation is still there and no other
path's score changes. The tokenizer is rebuilt from its tokenizer.json (the kept pieces, every
id remapped) as a plain fast tokenizer; the model's embedding rows (and an untied output
layer's) are sliced to the kept ids. Both are saved as usual: plain transformers loads them.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bridgetune.config import ConfigError, RunConfig
from bridgetune.data.splits import Splits
from bridgetune.knowledge.vocab import CJK, example_texts

AUTO_LEAST_PIECES = 60_000  # `auto` prunes a Unigram vocabulary larger than this
WORD_START = "\u2581"  # SentencePiece's ▁: a CJK character after it needs it as a piece
BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
CHUNK = 1000  # texts tokenized per call


@dataclass
class VocabPruning:
    """A pruned tokenizer and the old ids it keeps (`kept[i]` is new id i's old id), with the
    counts for the summary; `slice` cuts a model built for the old tokenizer to match."""

    tokenizer: Any
    kept: list[int]
    before: int  # pieces before
    used: int  # pieces the data's text uses
    cjk: int  # single-character CJK pieces
    reserve: int  # pieces kept beyond the data's, the CJK characters and the specials
    sizes: dict[str, int] = field(default_factory=dict)  # parameters and embedding bytes

    def slice(self, model: torch.nn.Module) -> None:
        """Keep only the kept rows of `model`'s input embeddings (and of an untied output layer
        of the vocabulary's size), in order; remap the token ids of its configs."""
        if not hasattr(model, "get_input_embeddings"):
            raise ConfigError(
                f"model.prune_vocab: the task's model ({type(model).__name__}) does not show "
                "its embeddings, so they cannot be cut to the pruned vocabulary; turn it off"
            )
        embeddings = model.get_input_embeddings()
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.sizes.update(_sizes(model, "before"))
        index = torch.tensor(self.kept, device=embeddings.weight.device)
        with torch.no_grad():  # kept rows first, then transformers cuts and reties the rest
            embeddings.weight[: len(self.kept)] = embeddings.weight[index]
            if output is not None and output.weight.shape[0] > self.kept[-1]:  # an LM head
                rows = index.to(output.weight.device)
                if output.weight is not embeddings.weight:  # untied
                    output.weight[: len(rows)] = output.weight[rows]
                if getattr(output, "bias", None) is not None:
                    output.bias[: len(rows)] = output.bias[rows]
        model.resize_token_embeddings(len(self.kept), mean_resizing=False)
        _remap_ids(model, {old: new for new, old in enumerate(self.kept)})
        self.sizes.update(_sizes(model, "after"))

    def summary(self) -> dict[str, Any]:
        """For bridgetune.json and vocab_pruning.json in the run."""
        return {
            "pieces_before": self.before,
            "pieces_after": len(self.kept),
            "pieces_used_by_data": self.used,
            "cjk_characters_kept": self.cjk,
            "reserve_kept": self.reserve,
            "parameters_before": self.sizes.get("parameters_before"),
            "parameters_after": self.sizes.get("parameters_after"),
            "embedding_mb_before": _mb(self.sizes.get("embedding_bytes_before")),
            "embedding_mb_after": _mb(self.sizes.get("embedding_bytes_after")),
        }

    def report(self) -> None:
        """One line for the log: pieces, parameters and embedding size before and after."""
        s = self.summary()
        _say(
            f"vocabulary pruned: {s['pieces_before']:,} -> {s['pieces_after']:,} pieces "
            f"({s['pieces_used_by_data']:,} used by the data, {s['cjk_characters_kept']:,} CJK "
            f"characters, {s['reserve_kept']:,} reserve); parameters "
            f"{s['parameters_before']:,} -> {s['parameters_after']:,}, word embeddings "
            f"{s['embedding_mb_before']} -> {s['embedding_mb_after']} MB"
        )


def _sizes(model: torch.nn.Module, when: str) -> dict[str, int]:
    weight = model.get_input_embeddings().weight
    return {
        f"parameters_{when}": sum(p.numel() for p in model.parameters()),
        f"embedding_bytes_{when}": weight.numel() * weight.element_size(),
    }


def _mb(size: int | None) -> float | None:
    return None if size is None else round(size / 1e6, 2)


def _remap_ids(model: torch.nn.Module, new_id: dict[int, int]) -> None:
    """The embeddings' padding row, the model's and generation config's token ids, and the ids
    a model keeps itself (`remap_token_ids`: the relation head's markers), in the new ids."""
    own = getattr(model, "remap_token_ids", None)
    if callable(own):
        own(new_id)
    layer = model.get_input_embeddings()
    if getattr(layer, "padding_idx", None) is not None:
        layer.padding_idx = new_id.get(layer.padding_idx)
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if config is not None:
            _remap_config(config, new_id)


def _remap_config(config: Any, new_id: dict[int, int]) -> None:
    """The `*_token_id` entries of a model or generation config, in the new ids."""
    for key, value in list(vars(config).items()):
        if not key.endswith("_token_id") or value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        missing = [i for i in ids if i not in new_id]
        if missing:
            raise ConfigError(
                f"model.prune_vocab: the model's config names token id {missing[0]} as {key}, "
                "which is no special token of its tokenizer, so pruning would drop it; add the "
                "token to the tokenizer's special tokens, or turn model.prune_vocab off"
            )
        mapped = [new_id[i] for i in ids]
        setattr(config, key, mapped if isinstance(value, list) else mapped[0])


def unprunable(tokenizer: Any) -> str | None:
    """Why `tokenizer` cannot be pruned (not a SentencePiece Unigram), or None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "it is a slow tokenizer without a tokenizer.json"
    kind = json.loads(backend.to_str())["model"]["type"]
    if kind != "Unigram":
        return f"it is a {kind} tokenizer, not a SentencePiece Unigram"
    return None


def prune_vocabulary(
    tokenizer: Any, texts: Iterable[str], limit: int | None = None, reserve: int = 8000
) -> VocabPruning:
    """A copy of `tokenizer` (a SentencePiece Unigram) that keeps the pieces `texts` use, the
    specials, the CJK characters and `reserve` more (module docstring), at most `limit` pieces.

    Raises:
        ConfigError: `limit` is below what the text, the CJK characters and the specials need.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    used = pieces_used(tokenizer, texts)
    cjk = {i for i, (piece, _) in enumerate(vocab) if CJK.fullmatch(piece)}
    needed = used | cjk | protected_ids(tokenizer, spec)
    if limit is not None and limit < len(needed):
        raise ConfigError(
            f"model.prune_vocab: {limit:,} pieces are fewer than the data needs: {len(needed):,} "
            f"({len(used):,} pieces of the train, dev and test text, {len(cjk):,} single CJK "
            f"characters, the special tokens); give at least {len(needed):,}, or auto"
        )
    room = reserve if limit is None else min(reserve, limit - len(needed))
    candidates = (i for i in range(len(vocab)) if i not in needed)
    extra = heapq.nlargest(room, candidates, key=lambda i: (vocab[i][1], -i))
    kept = sorted(needed.union(extra))
    pruned = _rebuilt(tokenizer, spec, kept)
    return VocabPruning(pruned, kept, len(tokenizer), len(used), len(cjk), len(extra))


def pieces_used(tokenizer: Any, texts: Iterable[str]) -> set[int]:
    """The ids `tokenizer` gives `texts` (no specials added), batched."""
    unique = list(dict.fromkeys(text for text in texts if text))
    used: set[int] = set()
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        for ids in tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]:
            used.update(ids)
    return used


def protected_ids(tokenizer: Any, spec: dict[str, Any]) -> set[int]:
    """Ids pruning always keeps: added and special tokens, those of the post-processor and the
    padding, [UNK], ▁, the lowest-scoring piece and byte-fallback pieces."""
    model = spec["model"]
    vocab = model["vocab"]
    ids = {token["id"] for token in spec.get("added_tokens") or []}
    ids.update(tokenizer.all_special_ids)
    ids.update(i for i, (piece, _) in enumerate(vocab) if piece == WORD_START)
    ids.add(min(range(len(vocab)), key=lambda i: vocab[i][1]))
    if model.get("unk_id") is not None:
        ids.add(model["unk_id"])
    if model.get("byte_fallback"):
        ids.update(i for i, (piece, _) in enumerate(vocab) if BYTE_PIECE.fullmatch(piece))
    if spec.get("padding"):
        ids.add(spec["padding"]["pad_id"])

    def keep(i: int) -> int:
        ids.add(i)
        return i

    _map_processor(spec.get("post_processor"), keep)
    return ids


def _map_processor(node: dict[str, Any] | None, new_id: Callable[[int], int]) -> None:
    """Map the token ids a post-processor adds (templates, BERT/RoBERTa's cls and sep) in place."""
    if not node:
        return
    kind = node.get("type")
    if kind == "Sequence":
        for inner in node.get("processors") or []:
            _map_processor(inner, new_id)
    elif kind == "TemplateProcessing":
        for special in node["special_tokens"].values():
            special["ids"] = [new_id(i) for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("cls", "sep"):
            token, old = node[key]
            node[key] = [token, new_id(old)]


def _rebuilt(tokenizer: Any, spec: dict[str, Any], kept: list[int]) -> Any:
    """`tokenizer` with only the `kept` pieces (old ids, ascending): tokenizer.json's vocabulary
    cut and every id in it remapped, wrapped with the same special tokens and settings."""
    from tokenizers import Tokenizer

    new_id = {old: new for new, old in enumerate(kept)}.__getitem__
    model = spec["model"]
    vocab = model["vocab"]
    model["vocab"] = [vocab[i] for i in kept if i < len(vocab)]  # added tokens come after
    if model.get("unk_id") is not None:
        model["unk_id"] = new_id(model["unk_id"])
    for token in spec.get("added_tokens") or []:
        token["id"] = new_id(token["id"])
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id(spec["padding"]["pad_id"])
    _map_processor(spec.get("post_processor"), new_id)
    return _wrapped(tokenizer, Tokenizer.from_str(json.dumps(spec)))


def _wrapped(tokenizer: Any, backend: Any) -> Any:
    """A plain fast tokenizer over `backend` with `tokenizer`'s special tokens (as its added
    tokens: a mask that strips the space before it keeps doing so) and settings."""
    from transformers import PreTrainedTokenizerFast

    added = {str(token): token for token in tokenizer.added_tokens_decoder.values()}
    specials = {key: added.get(value, value) for key, value in tokenizer.special_tokens_map.items()}
    extra = [added.get(str(token), token) for token in tokenizer.extra_special_tokens]
    template = getattr(tokenizer, "chat_template", None)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **specials,
        extra_special_tokens=extra,
        model_max_length=tokenizer.model_max_length,
        model_input_names=list(tokenizer.model_input_names),
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces,
        **({"chat_template": template} if template else {}),
    )


def data_texts(splits: Splits) -> Iterator[str]:
    """Every text of train, dev and test (each example's fields: `example_texts`), and the
    words of token examples on their own (as a tokenizer reading pre-split words sees them)."""
    for examples in (splits.train, splits.dev, splits.test or []):
        yield from example_texts(examples)
        for example in examples:
            yield from example.tokens or []


def pruned_vocabulary(
    cfg: RunConfig, tokenizer: Any, splits: Splits, extra: list[str] | None = None
) -> VocabPruning | None:
    """model.prune_vocab applied to a copy of `tokenizer` for the run's data and the texts the
    task adds to it (`extra`: an embedding model's query and passage prefixes); None when the
    config does not ask for it or `auto` finds nothing to prune (the log says why)."""
    setting = cfg.model.prune_vocab
    if setting is None:
        return None
    reason = unprunable(tokenizer)
    if setting == "auto":
        if reason is None and len(tokenizer) <= AUTO_LEAST_PIECES:
            reason = f"its {len(tokenizer):,} pieces are not over {AUTO_LEAST_PIECES:,}"
        if reason is not None:
            _say(f"vocabulary not pruned (model.prune_vocab: auto): {reason}")
            return None
    elif reason is not None:
        raise ConfigError(
            f"model.prune_vocab: {setting} needs a SentencePiece Unigram tokenizer (XLM-R's, "
            f"T5's); {cfg.model.name}'s cannot be pruned: {reason}"
        )
    limit = None if setting == "auto" else setting
    texts = itertools.chain(data_texts(splits), extra or [])
    return prune_vocabulary(tokenizer, texts, limit, cfg.model.prune_vocab_reserve)


def _say(text: str) -> None:
    from rich.console import Console

    from bridgetune.runtime.processes import is_launch_main

    if is_launch_main():  # one line per launch, not per process
        Console(stderr=True).print(text)
