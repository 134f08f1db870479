"""The model-directory contract (bridgetune.modeldir): bridgetune.json written and read back,
the gazetteers' file beside it, directories from before the format version was recorded, and
directories from a newer format refused with what to do."""

from __future__ import annotations

import json

import pytest

from bridgetune.modeldir import (
    FORMAT_VERSION,
    GAZETTEERS_FILE,
    META_FILE,
    ModelDirectoryError,
    read_meta,
    read_settings,
    saved_task_options,
    write_meta,
)
from bridgetune.recipes.evaluate import saved_data_config


def test_meta_round_trips_with_its_format_version_and_gazetteers(tmp_path):
    meta = {
        "task": "ner",
        "labels": ["O", "B-人名"],
        "settings": {"lexicon": {"人名": "张三\n李四"}},
    }
    write_meta(tmp_path, meta, head={"type": "lexicon"})
    written = json.loads((tmp_path / META_FILE).read_text(encoding="utf-8"))
    assert written["format_version"] == FORMAT_VERSION and written["head"] == {"type": "lexicon"}
    assert written["settings"]["lexicon"] == GAZETTEERS_FILE  # names live in their own file
    read = read_meta(tmp_path)
    assert read_settings(tmp_path, read)["lexicon"] == {"人名": "张三\n李四"}


def test_a_directory_from_before_the_format_version_still_reads(tmp_path):
    (tmp_path / META_FILE).write_text(json.dumps({"task": "classification", "labels": ["a"]}))
    assert read_meta(tmp_path)["labels"] == ["a"]  # version 0: the first directories


def test_a_newer_format_is_refused_with_what_to_do(tmp_path):
    meta = {"task": "classification", "labels": ["a"], "format_version": FORMAT_VERSION + 1,
            "bridgetune_version": "9.0.0"}  # fmt: skip
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelDirectoryError, match="written by bridgetune 9.0.0.*upgrade"):
        read_meta(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ('{"task": "ner"}', "has no 'labels'"), ("[1]", "has no")],
)
def test_damaged_meta_names_the_file(tmp_path, content, message):
    (tmp_path / META_FILE).write_text(content)
    with pytest.raises(ModelDirectoryError, match=message):
        read_meta(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a bridgetune model directory"):
        read_meta(tmp_path / "elsewhere")


def test_task_options_older_directories_kept_under_data_are_task_settings(tmp_path):
    older = {
        "task": "causal_lm",
        "labels": [],
        "settings": {"chat": True},
        "data": {"text_column": "text", "prompt_template": "总结：{prompt}", "as_chat": True},
    }
    assert saved_task_options(older) == {"prompt_template": "总结：{prompt}", "as_chat": True,
                                         "chat": True}  # fmt: skip
    data = saved_data_config(older, "dev.jsonl")  # the data options only: it still reads
    assert data.train == "dev.jsonl" and data.text_column == "text"
