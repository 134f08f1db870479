"""Every module that defines a head type (bridgetune.heads.HEADS), imported so a saved directory
of any type loads: the few-/zero-shot heads, the adapter and prefix models, the CRF, the
gazetteer features and the relation classifier. Imported by the Predictor when it loads a
directory with a "head" entry."""

from bridgetune.heads import embedding, nli, prompt, relation
from bridgetune.knowledge import crf, gazetteer
from bridgetune.methods import peft, prefix

__all__ = ["crf", "embedding", "gazetteer", "nli", "peft", "prefix", "prompt", "relation"]
