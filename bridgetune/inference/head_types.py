"""Every module that defines a head type (bridgetune.heads.HEADS), imported so a saved directory
of any type loads: the few-/zero-shot heads, the adapter and prefix models, the CRF, the
gazetteer features, the relation classifier and the bi-encoder. Imported by the Predictor when
it loads a directory with a "head" entry."""

from bridgetune.heads import bi_encoder, embedding, nli, prompt, relation
from bridgetune.knowledge import crf, gazetteer
from bridgetune.methods import peft, prefix

__all__ = [
    "bi_encoder",
    "crf",
    "embedding",
    "gazetteer",
    "nli",
    "peft",
    "prefix",
    "prompt",
    "relation",
]
