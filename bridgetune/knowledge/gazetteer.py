"""Gazetteer features (`knowledge.gazetteers`): dictionary matches as extra inputs of the head.

A gazetteer maps a type (PER, LOC, a product line, a sentiment word list) to names. Every text
is matched against all of them, word by word (a CJK character is a word, so Chinese names match
character runs; English names match whole words), and the matches become features:

- NER (SoftLexicon-style; Ma et al., 2020): for every word and type, four flags: the word
  Begins, is in the Middle of, Ends, or is a Single-word match of a name of that type
  (4 x types features per word, shared by the word's sub-tokens);
- classification and pairs: per type, log(1 + the number of matches in the text) (a lexicon
  or keyword feature).

A linear map of the features (one vector per flag or type, trained with the model) is added to
the input of the model's classifier layer: the encoder itself is unchanged. The model directory
keeps the transformers model as it is (plain transformers loads it and predicts without the
features), `lexicon.safetensors` with the map, `gazetteers.json` with the names (the task's
settings in bridgetune.json name it) and bridgetune.json a "lexicon" head entry.

A gazetteer is a list of names, a file of names (one per line), or `jieba:<tags>`: the words of
jieba's bundled dictionary with those part-of-speech tags (`jieba:nr` person names, `ns` places,
`nt` organizations, `nz` other proper nouns; several as `jieba:ns,nt`), an offline Chinese
dictionary of ~100,000 names.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from bridgetune.heads import HEADS
from bridgetune.knowledge import crf  # noqa: F401  (registers the CRF head a lexicon may wrap)
from bridgetune.knowledge.words import read_word_list

FILE = "lexicon.safetensors"
JIEBA = "jieba:"
FLAGS = "BMES"  # per type: begins, middle, ends, single-word match
_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u9fff\uf900-\ufaff]+|[^\s\w]")
LONGEST = 32  # characters: longer names are not matched
INIT_STD = 0.5


def jieba_names(tags: str) -> list[str]:
    """Words of jieba's bundled dictionary (dict.txt: word, frequency, part of speech) whose
    part-of-speech tag is one of the comma-separated `tags`."""
    import jieba

    wanted = {tag.strip() for tag in tags.split(",") if tag.strip()}
    if not wanted:
        raise ValueError(f"{JIEBA}{tags}: name part-of-speech tags, e.g. jieba:nr or jieba:ns,nt")
    path = Path(jieba.__file__).parent / "dict.txt"
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in wanted:
            names.append(parts[0])
    if not names:
        raise ValueError(f"{JIEBA}{tags}: jieba's dictionary has no word tagged {sorted(wanted)}")
    return names


def load_gazetteers(spec: dict[str, Any], min_chars: int = 2) -> dict[str, str]:
    """Each type's names (a list, a file, or jieba:<tags>), as one newline-joined string per
    type (what a model directory keeps); names shorter than `min_chars` characters are dropped.

    Raises:
        DataError: a gazetteer file that does not exist.
        ValueError: an empty gazetteer.
    """
    loaded = {}
    for kind, source in spec.items():
        if isinstance(source, str) and source.startswith(JIEBA):
            names = jieba_names(source[len(JIEBA) :])
        elif isinstance(source, str):
            missing = f"does not exist (knowledge.gazetteers.{kind}: a file of names, one per line)"
            names = [name for _, name in read_word_list(source, missing)]
        else:
            names = [str(name).strip() for name in source]
        kept = sorted({n for n in names if len(n.replace(" ", "")) >= min_chars})
        if not kept:
            raise ValueError(
                f"knowledge.gazetteers.{kind}: no name of at least {min_chars} characters "
                "(knowledge.min_chars)"
            )
        loaded[kind] = "\n".join(kept)
    return loaded


class Gazetteer:
    """Matches of typed names in word sequences and texts."""

    def __init__(self, gazetteers: dict[str, str]) -> None:
        self.types = sorted(gazetteers)
        self.lookup: dict[str, list[int]] = {}
        for index, kind in enumerate(self.types):
            for name in gazetteers[kind].split("\n"):
                key = "".join(name.split())
                if key and len(key) <= LONGEST:
                    self.lookup.setdefault(key, []).append(index)
        # every proper prefix of a name: a run of words that is none can stop growing
        self.prefixes = {key[:n] for key in self.lookup for n in range(1, len(key))}

    @property
    def token_size(self) -> int:
        return len(FLAGS) * len(self.types)

    def matches(self, words: list[str]) -> list[tuple[int, int, int]]:
        """(first word, end word, type index) of every name that a run of `words` spells."""
        found = []
        for start in range(len(words)):
            key = ""
            for end in range(start, len(words)):
                key += "".join(words[end].split())
                for kind in self.lookup.get(key, ()):
                    found.append((start, end + 1, kind))
                if key not in self.prefixes:
                    break
        return found

    def word_flags(self, words: list[str]) -> list[tuple[int, int]]:
        """(word, feature) pairs that are 1 (feature = 4 x type + B/M/E/S)."""
        flags = set()
        for start, end, kind in self.matches(words):
            base = len(FLAGS) * kind
            if end - start == 1:
                flags.add((start, base + 3))
                continue
            flags.add((start, base))
            flags.add((end - 1, base + 2))
            flags.update((word, base + 1) for word in range(start + 1, end - 1))
        return sorted(flags)

    def counts(self, *texts: str | None) -> list[float]:
        """Per type, log(1 + matches) over `texts` (a CJK character or a run of letters and
        digits is a word)."""
        totals = [0] * len(self.types)
        for text in texts:
            if text:
                for _, _, kind in self.matches(_WORD.findall(text)):
                    totals[kind] += 1
        return [round(math.log1p(total), 6) for total in totals]


def token_lexicon(flags: list[tuple[int, int]], word_ids: list[int | None]) -> list[list[int]]:
    """Per sub-token position, (position, feature) pairs from the words' flags."""
    by_word: dict[int, list[int]] = {}
    for word, feature in flags:
        by_word.setdefault(word, []).append(feature)
    return [
        [position, feature]
        for position, word in enumerate(word_ids)
        if word is not None
        for feature in by_word.get(word, ())
    ]


def collate_lexicon(features: list[dict], width: int, size: int) -> torch.Tensor:
    """The batch's (batch, width, size) token features from each feature's (position, index)
    pairs."""
    batch = torch.zeros(len(features), width, size)
    for row, feature in enumerate(features):
        for position, index in feature["lexicon"]:
            if position < width:
                batch[row, position, index] = 1.0
    return batch


def classifier_module(model: torch.nn.Module) -> torch.nn.Module:
    """The layer that turns representations into labels (its input gets the features)."""
    from bridgetune.methods.base import head_modules

    inner = getattr(model, "tagger", model)  # a CRF tagger wraps the token classifier
    names = [name for name in head_modules(inner) if "." not in name]
    if not names:
        raise ValueError(f"{type(inner).__name__}: no classifier layer for gazetteer features")
    return inner.get_submodule(names[-1])


@HEADS.register("lexicon")
class LexiconModel(torch.nn.Module):
    """A classifier or tagger whose classifier layer also reads gazetteer features."""

    def __init__(self, model: torch.nn.Module, size: int, auto_class: str) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.auto_class = auto_class
        self.lexicon = torch.nn.Linear(size, model.config.hidden_size, bias=False)
        # an embedding per flag at about the scale of a normalized hidden state's entries, so
        # the (fresh) classifier sees the matches from the first step
        torch.nn.init.normal_(self.lexicon.weight, std=INIT_STD)
        self._features: torch.Tensor | None = None
        classifier_module(model).register_forward_pre_hook(self._add_features)

    def _add_features(self, module: torch.nn.Module, args: tuple) -> tuple | None:
        if self._features is None:
            return None
        hidden = args[0]
        added = self.lexicon(self._features.to(dtype=self.lexicon.weight.dtype))
        if hidden.dim() == 3 and added.dim() == 2:  # per-text features, per-token classifier
            added = added[:, None]
        elif hidden.dim() == 3 and added.shape[1] != hidden.shape[1]:
            added = added[:, : hidden.shape[1]]
        return (hidden + added.to(hidden.dtype), *args[1:])

    def forward(self, lexicon: torch.Tensor | None = None, **inputs: Any) -> Any:
        self._features = lexicon
        try:
            return self.model(**inputs)
        finally:
            self._features = None

    def head_modules(self) -> list[str]:
        """The wrapped model's own head (its classifier; a CRF tagger's classifier and CRF) and
        the feature vectors: the encoder inside is the body (train.head_lr must not reach it)."""
        from bridgetune.methods.base import head_modules

        return [f"model.{name}" for name in head_modules(self.model)] + ["lexicon"]

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def resize_token_embeddings(self, size: int, **kwargs: Any) -> Any:
        return self.model.resize_token_embeddings(size, **kwargs)

    def save(self, directory: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        inner = self.model.save(directory) if hasattr(self.model, "save") else None
        if inner is None:
            self.model.save_pretrained(directory)
        weight = self.lexicon.weight.detach().contiguous()
        save_file({"weight": weight}, str(Path(directory) / FILE))
        return {
            "type": "lexicon",
            "file": FILE,
            "size": self.lexicon.in_features,
            "auto_class": self.auto_class,
            "inner": inner,
            "note": "gazetteer features added to the classifier's input: plain transformers "
            "loads the model without them (its predictions then differ)",
        }

    @classmethod
    def load(
        cls, directory: Path, head: dict[str, Any], labels: list[str], multilabel: bool
    ) -> LexiconModel:
        import transformers
        from safetensors.torch import load_file

        from bridgetune.heads import load_head

        inner = head.get("inner")
        if inner:  # e.g. a CRF tagger
            model = load_head(directory, inner, labels, multilabel)
        else:
            auto = getattr(transformers, head["auto_class"])
            model = auto.from_pretrained(directory, use_safetensors=True)
        wrapped = cls(model, int(head["size"]), head["auto_class"])
        state = load_file(str(Path(directory) / head.get("file", FILE)))
        wrapped.lexicon.load_state_dict(state)
        return wrapped
