"""`bridgetune models pull`: what a missing or unknown model says, and the GGUF conversion's
output is a plain transformers directory (the download itself is measured by hand: it needs
PyPI, which tests never reach)."""

from __future__ import annotations

import sys

import pytest

from bridgetune.models import ModelError, resolve_model
from bridgetune.models.pulled import PullError, pull, pulled_path


def test_a_model_not_pulled_yet_says_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path))
    assert pulled_path("smollm2") is None
    with pytest.raises(ModelError, match="run `bridgetune models pull smollm2` once"):
        resolve_model("smollm2")


def test_a_pulled_model_resolves_to_its_cache_directory(tmp_path, monkeypatch, tiny_llama):
    import shutil

    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path))
    target = tmp_path / "models" / "smollm2"
    shutil.copytree(tiny_llama, target)
    assert resolve_model("SmolLM2") == str(target)
    assert pull("smollm2", announce=lambda text: None) == target  # prepared: nothing to do


def test_unknown_names_and_a_missing_gguf_package_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGETUNE_CACHE", str(tmp_path))
    pullable = "e5, multilingual, multilingual-e5-small, smollm2"
    with pytest.raises(PullError, match=f"unknown model 'gpt5'; pullable: {pullable}"):
        pull("gpt5")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as when the package is not installed
    with pytest.raises(PullError, match=r"pip install 'bridgetune\[generation\]'"):
        pull("smollm2")
