"""Readers for Chinese NER data: CLUENER2020's span JSON (and `entities` span lists) tagged by
character in any scheme, Weibo NER's character+position-digit files, repair or skip of
ill-formed tag sequences; bad input at its file and line; a tiny model trains on span files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError
from bridgetune.tasks.token import TokenReader
from tests.conftest import tiny_config


def read(path: Path, labelled: bool = True, **data) -> list:
    return TokenReader().read_file(path, DataConfig(train=str(path), **data), labelled)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


CLUENER = [
    {"text": "浙商银行企业信贷部叶老桂博士则从另一个角度",
     "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}},
    {"text": "自此CPL2011第一阶段", "label": {"organization": {"CPL": [[2, 4]]}}},
    {"text": "《招商银行年报》发布", "label": {"book": {"《招商银行年报》": [[0, 7]]},
                                     "company": {"招商银行": [[1, 4]]}}},
    {"text": "今天 没有 实体"},
]  # fmt: skip


def test_cluener_spans_become_character_tags_in_every_scheme(tmp_path, capsys):
    path = write_jsonl(tmp_path / "train.json", CLUENER)
    first, latin, nested, empty = read(path)
    assert first.text == CLUENER[0]["text"] and first.tokens == list(first.text)
    assert first.tags[:5] == ["B-company", "I-company", "I-company", "I-company", "O"]
    assert first.tags[9:13] == ["B-name", "I-name", "I-name", "O"]
    assert first.offsets[9] == (9, 10) and first.source.endswith("train.json:1")
    # a letter/digit run is one token, cut where an entity ends inside it
    assert latin.tokens == ["自", "此", "CPL", "2011", "第", "一", "阶", "段"]
    assert latin.tags[2:4] == ["B-organization", "O"] and latin.offsets[3] == (5, 9)
    # an entity inside another: the outer one is kept, and the warning says so
    assert nested.tags[:8] == ["B-book"] + ["I-book"] * 7
    warned = " ".join(capsys.readouterr().err.split())
    assert "1 entities inside other entities were left out" in warned
    # spaces stay in the text, no token holds one
    assert empty.text == "今天 没有 实体" and empty.tokens == list("今天没有实体")
    assert set(empty.tags) == {"O"}

    bioes = read(path, tag_scheme="BIOES")[0].tags
    assert bioes[:4] == ["B-company", "I-company", "I-company", "E-company"]
    bmes = read(path, tag_scheme="BMES")[0].tags
    assert bmes[9:12] == ["B-name", "M-name", "E-name"]
    one = {"text": "李明", "label": {"name": {"李": [[0, 0]]}}}
    single = write_jsonl(tmp_path / "one.json", [one])
    assert read(single, tag_scheme="BMES")[0].tags == ["S-name", "O"]
    # prediction input: the text alone
    unlabelled = read(path, labelled=False)[0]
    assert unlabelled.tags is None and unlabelled.tokens == first.tokens


def test_entity_lists_with_exclusive_ends_and_english_words(tmp_path):
    rows = [{"text": "John Smith visited Paris, France.",
             "entities": [{"type": "PER", "start": 0, "end": 10},
                          {"type": "LOC", "start": 19, "end": 24, "text": "Paris"}]}]  # fmt: skip
    example = read(write_jsonl(tmp_path / "en.jsonl", rows))[0]
    assert example.tokens == ["John", "Smith", "visited", "Paris", ",", "France", "."]
    assert example.tags == ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "浙商银行", "label": {"company": {"浙商银": [[0, 3]]}}},
         "train.json:1: the company span 0-4 holds '浙商银行', not '浙商银'"),
        ({"text": "浙商银行", "label": {"company": {"浙商银行": [[2, 9]]}}},
         "train.json:1: the company span 2-10 is outside the text"),
        ({"text": "浙商银行", "label": {"company": {"浙商": [[0, 1]]}, "name": {"商银": [[1, 2]]}}},
         "overlaps the company span '浙商' without being inside it"),
        ({"text": "ab cd", "entities": [{"type": "X", "start": 2, "end": 5}]},
         "starts or ends in white space"),
        ({"text": "浙商银行", "label": ["company"]}, "entities are `label`"),
        ({"text": "  "}, "needs a non-empty 'text'"),
    ],
)  # fmt: skip
def test_bad_span_records_name_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "train.json", [row])
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read(path)


WEIBO = "科0\tO\n技1\tO\n叶0\tB-PER.NAM\n老1\tI-PER.NAM\n\n小0\tI-PER.NOM\n朋1\tI-PER.NOM\n"


def test_weibo_files_drop_the_position_digit_and_repair_or_skip_bad_sequences(tmp_path, capsys):
    path = tmp_path / "weibo.txt"
    path.write_text(WEIBO, "utf-8")
    with pytest.raises(DataError, match=r"weibo.txt:6: invalid IOB2 sequence at token '小'"):
        read(path, format="conll", char_position_digits=True)
    first, second = read(path, format="conll", char_position_digits=True, invalid_rows="repair")
    assert first.text == "科技叶老" and first.tags == ["O", "O", "B-PER.NAM", "I-PER.NAM"]
    assert second.tokens == ["小", "朋"] and second.tags == ["B-PER.NOM", "I-PER.NOM"]
    assert "1 sentences with invalid tags repaired" in " ".join(capsys.readouterr().err.split())
    kept = read(path, format="conll", char_position_digits=True, invalid_rows="skip")
    assert [e.text for e in kept] == ["科技叶老"]
    assert read(path, False, format="conll", char_position_digits=True)[1].text == "小朋"

    path.write_text("科0\tO\n技\tO\n", "utf-8")
    with pytest.raises(DataError, match=r"weibo.txt:2: '技' has no position digit"):
        read(path, format="conll", char_position_digits=True)
    path.write_text("科0\tO\n技1\n", "utf-8")
    with pytest.raises(DataError, match=r"weibo.txt:2: expected 'TOKEN \[...\] TAG'"):
        read(path, format="conll", char_position_digits=True)


def test_a_tiny_model_trains_on_span_files_and_predicts_character_offsets(tiny_bert, tmp_path):
    import bridgetune

    rows = [{"text": "张三在上海买的耳机", "label": {"name": {"张三": [[0, 1]]},
                                              "address": {"上海": [[3, 4]]}}},
            {"text": "李四在北京买的手机", "label": {"name": {"李四": [[0, 1]]},
                                              "address": {"北京": [[3, 4]]}}}] * 4  # fmt: skip
    data = write_jsonl(tmp_path / "train.json", rows)
    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(data), "dev": str(data)},
                         train={"epochs": 40, "lr": 5e-3})  # fmt: skip
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] == 1.0
    predicted = bridgetune.load(result.model_dir).predict(["张三在北京买的手机"])[0]["entities"]
    assert [(e["type"], e["start"], e["end"]) for e in predicted] == [
        ("name", 0, 2), ("address", 3, 5)
    ]  # fmt: skip
