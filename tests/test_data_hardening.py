"""Data files as they come from elsewhere: labels of mixed JSON types, character-per-line NER
files (CRLF, a space as a line's character, BMES/BIOES sequences to repair or skip), CSV/TSV
with CR-only or mixed line ends, directories and UTF-16 where files belong, one huge row, and
CSV exports that spreadsheets would execute. Every file is written by the test itself."""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridgetune.config import ConfigError, DataConfig, load_config
from bridgetune.data.bounds import char_budget, clip_text
from bridgetune.data.io import escape_cell, read_file, read_records, unescape_cell
from bridgetune.data.schema import DataError, Example
from bridgetune.data.splits import load_splits
from bridgetune.data.tags import SCHEME_PREFIXES, check_sequence, check_tag, repair_tags
from bridgetune.lifecycle.store import FeedbackRow, export_rows
from bridgetune.tasks import reader_for
from bridgetune.tasks.token import TokenReader

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def read(path: Path, task: str = "classification", labelled: bool = True, **data) -> list[Example]:
    return read_file(path, DataConfig(train=str(path), **data), reader_for(task), labelled)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def said(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


# --- 1. labels of mixed JSON types ---------------------------------------------------------


def test_json_numbers_name_one_class_by_value(tmp_path):
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate([2, 2.0, "2", 1, 1.0, 0.5])]
    examples = read(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [e.label for e in examples] == ["2", "2", "2", "1", "1", "0.5"]
    splits = load_splits(
        DataConfig(train=str(tmp_path / "a.jsonl"), dev=str(tmp_path / "a.jsonl")),
        reader_for("classification"),
    )
    assert splits.labels == ["0.5", "1", "2"]  # three classes, in numeric order


def test_a_json_boolean_among_other_labels_is_refused_naming_both_rows(tmp_path):
    rows = [{"text": "a", "label": 2}, {"text": "b", "label": 2.0}, {"text": "c", "label": True}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataError) as info:
        read(path)
    message = str(info.value)
    assert f"{path}:3: label true is a JSON boolean" in message and f"{path}:1" in message
    only = write_jsonl(
        tmp_path / "flags.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": False}]
    )
    assert [e.label for e in read(only)] == ["true", "false"]


def test_one_number_written_two_ways_in_text_is_refused(tmp_path):
    path = tmp_path / "floats.csv"
    path.write_text("text,label\na,2\nb,2.0\nc,3\n", "utf-8")
    with pytest.raises(
        DataError,
        match=r"floats.csv:3: label '2.0' is the number of label '2' "
        r"at .*floats.csv:2",
    ):
        read(path)
    # a JSON 2.0 is the number 2; the text "2.0" is not the text "2"
    rows = [{"text": "a", "label": 2.0}, {"text": "b", "label": "2.0"}]
    with pytest.raises(DataError, match="written another way"):
        read(write_jsonl(tmp_path / "both.jsonl", rows))


@pytest.mark.parametrize(
    ("task", "options", "row", "message"),
    [
        ("classification", {}, {"text": "a", "label": ["x", "y"]}, "is a JSON list, not one class"),
        ("classification", {}, {"text": "a", "label": {"x": 1}}, "is a JSON object"),
        (
            "pair",
            {"text_pair_column": "b"},
            {"text": "a", "b": "c", "label": float("nan")},
            "label nan is not a class name",
        ),
        (
            "regression",
            {},
            {"text": "a", "label": True},
            "target true in column 'label' is a JSON boolean",
        ),
    ],
)
def test_label_values_a_task_cannot_read_are_errors_at_their_line(
    tmp_path, task, options, row, message
):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "b": "c", "label": "1"}, row])
    with pytest.raises(DataError, match=rf"bad.jsonl:2: .*{message}"):
        read(path, task, **options)


def test_multilabel_and_pair_and_regression_read_numbers_alike(tmp_path):
    rows = [{"text": "a", "b": "x", "label": [1, 2.0, "1"]}, {"text": "b", "b": "y", "label": 3.0}]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    assert [e.label for e in read(path, "multilabel")] == [["1", "2"], ["3"]]
    rows = [{"text": "a", "b": "x", "label": 1}, {"text": "b", "b": "y", "label": True}]
    with pytest.raises(DataError, match="JSON boolean"):
        read(write_jsonl(tmp_path / "p.jsonl", rows), "pair", text_pair_column="b")
    rows = [{"text": "a", "label": "2"}, {"text": "b", "label": 2.5}, {"text": "c", "label": 3}]
    assert [e.label for e in read(write_jsonl(tmp_path / "r.jsonl", rows), "regression")] == [
        [2.0],
        [2.5],
        [3.0],
    ]


@PROPERTY
@given(st.lists(st.integers(-5, 5), min_size=1, max_size=12), st.randoms())
def test_integers_and_their_floats_are_one_class(tmp_path_factory, values, random):
    path = tmp_path_factory.mktemp("labels") / "l.jsonl"
    written = [v if random.random() < 0.5 else float(v) for v in values]
    write_jsonl(path, [{"text": f"t{i}", "label": v} for i, v in enumerate(written)])
    assert [e.label for e in read(path)] == [str(v) for v in values]
    written[random.randrange(len(written))] = random.choice([True, False])
    if len(values) > 1:  # a boolean beside numbers: always refused
        with pytest.raises(DataError, match="JSON boolean"):
            read(write_jsonl(path, [{"text": "t", "label": v} for v in written]))


# --- 2. character-per-line NER files -------------------------------------------------------


def read_tokens(path: Path, labelled: bool = True, **data) -> list[Example]:
    return TokenReader().read_file(
        path, DataConfig(train=str(path), format="conll", **data), labelled
    )


def test_crlf_and_cr_line_ends_read_like_lf(tmp_path):
    lines = ["上\tB-LOC", "海\tI-LOC", "", "李\tB-PER", "四\tI-PER", ""]
    expected = None
    for end in ("\n", "\r\n", "\r"):
        path = tmp_path / "zh.txt"
        path.write_bytes(end.join(lines).encode("utf-8"))
        got = [(e.text, e.tokens, e.tags, e.source.rsplit(":", 1)[1]) for e in read_tokens(path)]
        expected = expected or got
        assert (
            got
            == expected
            == [
                ("上海", ["上", "海"], ["B-LOC", "I-LOC"], "1"),
                ("李四", ["李", "四"], ["B-PER", "I-PER"], "4"),
            ]
        )


@pytest.mark.parametrize("space", [" ", "\u3000", "\u00a0"])
@pytest.mark.parametrize("gap", [" ", "\t"])
def test_a_space_as_the_character_of_a_line_stays_in_the_text(tmp_path, space, gap):
    lines = [f"李{gap}B-PER", f"{space}{gap}I-PER", f"四{gap}I-PER", f"{space}{gap}O", f"在{gap}O"]
    path = tmp_path / "space.txt"
    path.write_text("\r\n".join(lines) + "\r\n", "utf-8")
    (example,) = read_tokens(path)
    assert example.text == f"李{space}四{space}在"
    assert example.tokens == ["李", "四", "在"] and example.tags == ["B-PER", "I-PER", "O"]
    assert [example.text[s:e] for s, e in example.offsets] == example.tokens
    unlabelled = read_tokens(path, labelled=False)[0]
    assert unlabelled.text == example.text and unlabelled.tags is None


def test_entities_are_tagged_again_around_white_space_in_every_scheme(tmp_path, capsys):
    cases = {
        "BMES": (["  B-PER", "李 M-PER", "四 E-PER", "  S-LOC", "在 O"], ["B-PER", "E-PER", "O"]),
        "BIOES": (["李 B-PER", "  E-PER", "在 O"], ["S-PER", "O"]),
        "IOB1": (["李 I-PER", "  I-PER", "王 B-PER", "在 O"], ["I-PER", "B-PER", "O"]),
        "IOB2": (["  B-PER", "李 I-PER", "在 O"], ["B-PER", "O"]),
    }
    for scheme, (lines, tags) in cases.items():
        path = tmp_path / f"{scheme}.txt"
        path.write_text("\n".join(lines) + "\n", "utf-8")
        (example,) = read_tokens(path, tag_scheme=scheme)
        assert example.tags == tags, scheme
        assert check_sequence(example.tags, scheme) is None
    assert "1 entities of white space only were left out" in said(capsys)  # BMES's S-LOC


def test_indented_lines_are_not_read_as_space_tokens(tmp_path):
    path = tmp_path / "indented.conll"
    path.write_text("EU NNP B-ORG\n  rejects VBZ O\n", "utf-8")
    assert read_tokens(path)[0].tokens == ["EU", "rejects"]


def bad_bmes(tmp_path: Path) -> Path:
    sentences = [
        ["上 B-LOC", "海 O", "很 O"],  # an entity left open
        ["北 M-LOC", "京 E-LOC"],  # a continuation that follows nothing
        ["张 B-PER", "三 B-PER"],  # B after B: the first one ends at its token
        ["好 O", "的 E-X"],  # a lone end
        ["李 S-PER", "四 O"],  # valid
    ]
    path = tmp_path / "bad.bmes"
    path.write_text("\r\n\r\n".join("\r\n".join(s) for s in sentences) + "\r\n", "utf-8")
    return path


def test_bmes_repair_mends_each_sequence_by_its_rule_and_reports(tmp_path, capsys):
    path = bad_bmes(tmp_path)
    with pytest.raises(DataError, match=r"bad.bmes:2: invalid BMES sequence at token '海'"):
        read_tokens(path, tag_scheme="BMES")
    examples = read_tokens(path, tag_scheme="BMES", invalid_rows="repair")
    assert [e.tags for e in examples] == [
        ["S-LOC", "O", "O"],
        ["B-LOC", "E-LOC"],
        ["S-PER", "S-PER"],
        ["O", "S-X"],
        ["S-PER", "O"],
    ]
    assert "4 sentences with invalid tags repaired" in said(capsys)
    kept = read_tokens(path, tag_scheme="BMES", invalid_rows="skip")
    assert [e.text for e in kept] == ["李四"]
    assert "4 sentences with invalid tags skipped" in said(capsys)


def test_bioes_repair_and_what_repair_cannot_mend(tmp_path):
    path = tmp_path / "bad.bioes"
    path.write_text("A B-ORG\nB I-ORG\nC I-LOC\nD O\n", "utf-8")
    (example,) = read_tokens(path, tag_scheme="BIOES", invalid_rows="repair")
    assert example.tags == ["B-ORG", "E-ORG", "S-LOC", "O"]
    path.write_text("A M-ORG\nB O\n", "utf-8")  # M is no BIOES tag: nothing to repair
    with pytest.raises(DataError, match="repair mends tag sequences, not a missing or unknown"):
        read_tokens(path, tag_scheme="BIOES", invalid_rows="repair")


def test_skip_leaves_out_a_line_without_tag_and_reads_on(tmp_path, capsys):
    path = tmp_path / "holes.txt"
    path.write_text("上 B-LOC\n海\n\n  O\n李 B-PER\n\n北 B-LOC\n", "utf-8")
    with pytest.raises(DataError, match=r"holes.txt:2: expected 'TOKEN \[...\] TAG'"):
        read_tokens(path)
    kept = read_tokens(path, invalid_rows="skip")
    assert [(e.text, e.tags) for e in kept] == [(" 李", ["B-PER"]), ("北", ["B-LOC"])]
    assert "1 sentences with invalid tags skipped" in said(capsys)
    with pytest.raises(DataError, match="holes.txt:2: .*repair mends tag sequences"):
        read_tokens(path, invalid_rows="repair")


def test_jsonl_token_rows_follow_invalid_rows_too(tmp_path, capsys):
    rows = [
        {"tokens": ["上", " ", "海"], "tags": ["B-LOC", "M-LOC", "O"]},
        {"tokens": ["a"], "tags": ["O", "O"]},
        {"tokens": ["北"], "tags": ["S-LOC"]},
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    examples = read(path, "ner", tag_scheme="BMES", invalid_rows="skip")
    assert [e.tags for e in examples] == [["S-LOC"]]
    assert "2 sentences with invalid tags skipped" in said(capsys)
    with pytest.raises(DataError, match="rows.jsonl:2: 1 tokens but 2 tags"):
        read(path, "ner", tag_scheme="BMES", invalid_rows="repair")
    del rows[1]
    repaired = read(write_jsonl(path, rows), "ner", tag_scheme="BMES", invalid_rows="repair")
    assert repaired[0].text == "上 海" and repaired[0].tags == ["S-LOC", "O"]


SCHEME_TAGS = {
    scheme: st.lists(
        st.sampled_from(["O"] + [f"{p}-{t}" for p in sorted(prefixes) for t in ("A", "B")]),
        max_size=12,
    )
    for scheme, prefixes in SCHEME_PREFIXES.items()
}


@PROPERTY
@given(
    st.sampled_from(sorted(SCHEME_PREFIXES)).flatmap(
        lambda s: st.tuples(st.just(s), SCHEME_TAGS[s])
    )
)
def test_repair_always_gives_a_valid_sequence_and_keeps_valid_ones(case):
    scheme, tags = case
    repaired = repair_tags(tags, scheme)
    assert len(repaired) == len(tags) and check_sequence(repaired, scheme) is None
    assert all(check_tag(tag, scheme) is None for tag in repaired)
    assert [t[2:] for t in repaired] == [t[2:] for t in tags]  # types stay
    if check_sequence(tags, scheme) is None:
        assert repaired == tags


CHARACTERS = st.sampled_from(list("上海北京张三李四在的") + [" ", "\u3000"])


@PROPERTY
@given(
    st.lists(st.lists(CHARACTERS, min_size=1, max_size=8), min_size=1, max_size=4),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from([" ", "\t"]),
)
def test_character_files_read_every_visible_character_at_its_offset(
    tmp_path_factory, sentences, end, gap
):
    sentences = [s for s in sentences if any(c.strip() for c in s)]
    path = tmp_path_factory.mktemp("zh") / "chars.txt"
    blocks = [end.join(f"{c}{gap}O" for c in sentence) for sentence in sentences]
    path.write_bytes((end * 2).join(blocks).encode("utf-8") + end.encode())
    examples = read_tokens(path) if sentences else []
    assert [e.text for e in examples] == ["".join(s) for s in sentences]
    for example, sentence in zip(examples, sentences):
        assert example.tokens == [c for c in sentence if c.strip()]
        assert [example.text[s:e] for s, e in example.offsets] == example.tokens


def test_words_the_tokenizer_gives_no_piece_keep_the_tags_after_them_in_place(tiny_bert):
    import torch
    from transformers import AutoTokenizer

    from bridgetune.data.io import token_example
    from bridgetune.tasks.token import TokenTask

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    labels = ["O", "B-PER", "M-PER", "E-PER", "S-PER"]
    task = TokenTask(labels, scheme="BMES")
    # U+FE0F (a variation selector) and U+200B are characters of the text with no piece
    tokens, tags = list("张\ufe0f三在\u200b北"), ["B-PER", "M-PER", "E-PER", "O", "O", "S-PER"]
    (feature,) = task.encode([token_example(tokens, tags, "x:1")], tokenizer, 32)
    assert feature["words"] == [0, 2, 3, 5] and not feature["truncated"]
    logits = torch.full((1, len(feature["input_ids"]), len(labels)), -9.0)
    for position, word in zip(feature["first"], feature["words"]):
        logits[0, position, labels.index(tags[word])] = 9.0
    assert task.word_tags(logits, [feature]) == [tags]  # the gap continues the entity


def test_a_tiny_model_trains_on_a_crlf_bmes_file_with_spaces(tiny_bert, tmp_path):
    import bridgetune
    from tests.conftest import tiny_config

    sentences = [
        ["张 B-PER", "三 E-PER", "  O", "在 O", "上 B-CITY", "海 E-CITY"],
        ["李 B-PER", "四 E-PER", "\u3000 O", "在 O", "北 B-CITY", "京 E-CITY"],
    ]
    path = tmp_path / "train.bmes"
    path.write_bytes("".join("\r\n".join(s) + "\r\n\r\n" for s in sentences * 4).encode())
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="ner",
        data={"train": str(path), "dev": str(path), "tag_scheme": "BMES"},
        train={"epochs": 40, "lr": 5e-3},
    )
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] == 1.0
    (prediction,) = bridgetune.load(result.model_dir).predict(["李四 在北京"])
    assert [(e["type"], e["start"], e["end"]) for e in prediction["entities"]] == [
        ("PER", 0, 2),
        ("CITY", 4, 6),
    ]


# --- 3. CSV/TSV line ends ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_cr_only_and_mixed_line_ends_are_read_with_their_line_numbers(tmp_path, fmt):
    gap = "," if fmt == "csv" else "\t"
    body = f'text{gap}label\r"a\r\nquoted"{gap}x\rplain{gap}y\r\nnext{gap}x\n{gap}y\r'
    path = tmp_path / f"mixed.{fmt}"
    path.write_bytes(body.encode("utf-8"))
    rows = list(read_records(path, fmt))
    assert [(n, r["text"]) for n, r in rows] == [
        (2, "a\r\nquoted"),
        (4, "plain"),
        (5, "next"),
        (6, ""),
    ]
    with pytest.raises(DataError, match=rf"mixed.{fmt}:6: empty text"):
        read(path)


LINE_ENDS = st.sampled_from(["\n", "\r\n", "\r"])
CELLS = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=20,
).filter(str.strip)


@PROPERTY
@given(st.lists(st.tuples(CELLS, LINE_ENDS), min_size=1, max_size=8), LINE_ENDS)
def test_csv_with_any_line_ends_reads_back_every_cell(tmp_path_factory, rows, header_end):
    buffer = io.StringIO()
    buffer.write("text,label" + header_end)
    expected, line = [], 2
    for text, end in rows:  # the csv module quotes only its terminator's characters
        quoting = csv.QUOTE_ALL if "\r" in text or "\n" in text else csv.QUOTE_MINIMAL
        writer = csv.writer(buffer, lineterminator=end, quoting=quoting)
        writer.writerow([text, "y"])
        expected.append((line, text))
        line += text.count("\n") + text.count("\r") - text.count("\r\n") + 1
    path = tmp_path_factory.mktemp("ends") / "rows.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    got = [(n, r["text"]) for n, r in read_records(path, "csv")]
    assert got == [(n, unescape_cell(t)) for n, t in expected]


def test_jsonl_and_json_arrays_with_cr_only_line_ends(tmp_path):
    path = tmp_path / "cr.jsonl"
    path.write_bytes(b'{"text": "a", "label": "x"}\r{"text": "b", "label": "y"}\r')
    assert [e.source[-1] for e in read(path)] == ["1", "2"]
    path.write_bytes(b'[\r{"text": "a", "label": "x"},\r{"text": "b" "label": "y"}]')
    with pytest.raises(DataError, match=r"cr.jsonl:3: not valid JSON"):
        read(path)


# --- 4. directories and encodings ----------------------------------------------------------


def test_a_directory_as_data_file_or_config_says_so_and_what_it_holds(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\na,x\n", "utf-8")
    with pytest.raises(
        DataError,
        match=r"data: is a directory, not a data file \(it holds "
        r"train.csv\); check the data path",
    ):
        read(folder)
    with pytest.raises(
        ConfigError,
        match=r"data: is a directory, not a config file \(it holds "
        r"train.csv\); give the path of a YAML file",
    ):
        load_config(folder)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_configs_and_data_with_a_byte_order_mark_are_read(tmp_path, encoding):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    data = tmp_path / "train.tsv"
    data.write_bytes(bom + "text\tlabel\n好的\tpos\n差\tneg\r\n".encode(encoding))
    config = tmp_path / "config.yaml"
    raw = yaml.safe_dump({"task": "classification", "data": {"train": "train.tsv"}})
    config.write_bytes(bom + raw.encode(encoding))
    cfg = load_config(config)
    assert Path(cfg.data.train) == data
    assert [(e.text, e.label) for e in read(data)] == [("好的", "pos"), ("差", "neg")]


def test_utf16_without_a_mark_and_broken_utf16_are_one_line_errors(tmp_path):
    path = tmp_path / "nomark.csv"
    path.write_bytes("text,label\na,x\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"nomark.csv:1: NUL bytes, so the file is UTF-16 without"):
        read(path)
    config = tmp_path / "nomark.yaml"
    config.write_bytes("data:\n  train: a.csv\n".encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"nomark.yaml:1: NUL bytes.*re-save it as UTF-8"):
        load_config(config)
    config.write_bytes(codecs.BOM_UTF16_LE + "data:\n".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(
        ConfigError,
        match=r"nomark.yaml:2: byte 0x00 at column 1 is not valid "
        r"UTF-16",
    ):
        load_config(config)


def test_yaml_errors_are_one_line_at_their_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  train: a.csv\n  dev: [b\n", "utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "\n" not in str(info.value) and f"{config}:" in str(info.value)


# --- 5. one huge row -----------------------------------------------------------------------


def test_clipping_keeps_what_the_model_sees_and_counts_the_truncation(tiny_bert):
    from transformers import AutoTokenizer

    from bridgetune.tasks.classification import ClassificationTask

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = ClassificationTask(["a", "b"])
    long = "my order is late and the package arrived broken " * 2000  # 96k characters
    assert len(long) > char_budget(32) and clip_text("short", 32) == "short"
    spaces = "x" + " " * (char_budget(32) + 10)  # past the bound, yet one token
    rows = [Example(text=t, label="a") for t in (long, "great service", spaces)]
    features = task.encode(rows, tokenizer, 32)
    full = tokenizer(long, truncation=True, max_length=32)["input_ids"]
    assert features[0]["input_ids"] == full and features[0]["truncated"]
    assert not features[1]["truncated"]
    assert features[2]["truncated"]  # cut by characters: counted as truncated


def test_token_tasks_bound_long_sentences_the_same_way(tiny_bert):
    from transformers import AutoTokenizer

    from bridgetune.data.io import token_example
    from bridgetune.tasks.token import TokenTask

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    task = TokenTask(["O", "B-LOC", "I-LOC"])
    words = ["上", "海"] * (char_budget(32) // 2 + 100)
    example = token_example(words, ["B-LOC", "I-LOC"] * (len(words) // 2), "x:1")
    (feature,) = task.encode([example], tokenizer, 32)
    full = tokenizer(words, is_split_into_words=True, truncation=True, max_length=32)
    assert feature["input_ids"] == full["input_ids"] and feature["truncated"]
    raw = Example(text="我在上海" * 5000)  # raw text for prediction: words of the bound only
    (predicted,) = task.encode([raw], tokenizer, 32)
    assert predicted["truncated"] and predicted["example"].text == raw.text


def test_validate_data_counts_a_huge_row_as_truncated(tiny_bert, tmp_path):
    import bridgetune
    from tests.conftest import SENTIMENT, tiny_config, write_csv

    huge = ("terrible slow delivery " * 200_000, "negative")  # 4.6 MB in one cell
    data = write_csv(tmp_path / "train.csv", ["text", "label"], [*SENTIMENT, huge])
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(data), "dev": str(data)})
    report = bridgetune.validate_data(config)
    train = report["splits"]["train"]
    assert train["truncated"] == 1 and train["tokens"]["max"] > 32


# --- 6. CSV exports that spreadsheets would execute ----------------------------------------


FORMULAS = ["=1+2", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=already", "''-x"]


def test_exported_formula_cells_are_escaped_and_read_back_unchanged(tmp_path):
    rows = [
        FeedbackRow(str(i), "", "v1", "classification", text, None, None, label)
        for i, (text, label) in enumerate(zip(FORMULAS, ["=bad", "-1", "ok"] * 3))
    ]
    exported = export_rows(rows, "csv")
    cells = list(csv.reader(io.StringIO(exported, newline="")))[1:]
    assert all(text.startswith("'") for text, _ in cells)
    assert [label for _, label in cells][:3] == ["'=bad", "-1", "ok"]  # a plain number stays
    path = tmp_path / "feedback.csv"
    path.write_text(exported, "utf-8")
    examples = read(path, invalid_rows="skip")  # "\rx" has text, "\tx" too: none is skipped
    assert [e.text for e in examples] == FORMULAS
    assert [e.label for e in examples] == [label.strip() for label in ["=bad", "-1", "ok"] * 3][
        : len(FORMULAS)
    ]


@PROPERTY
@given(st.lists(CELLS, min_size=1, max_size=6), st.lists(st.floats(-9, 9), min_size=1))
def test_csv_export_round_trip(tmp_path_factory, texts, values):
    rows = [
        FeedbackRow(str(i), "", "v1", "regression", text, None, None, [values[0], -1.5])
        for i, text in enumerate(texts)
    ]
    path = tmp_path_factory.mktemp("export") / "feedback.csv"
    path.write_text(export_rows(rows, "csv"), "utf-8")
    examples = read(path, "regression")
    assert [e.text for e in examples] == texts
    assert all(e.label == [values[0], -1.5] for e in examples)
    assert all(unescape_cell(escape_cell(t)) == t for t in texts)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_text_inputs_and_word_lists_read_every_line_end(end, tmp_path):
    from bridgetune.cli.core import read_candidates
    from bridgetune.knowledge.words import read_word_list

    path = tmp_path / "lines.txt"
    path.write_bytes(("\ufeff" + end.join(["上海", "# a comment", "", "北京"]) + end).encode())
    assert read_word_list(path, "missing") == [(1, "上海"), (4, "北京")]
    assert read_candidates(path, "text") == ["上海", "# a comment", "北京"]


def test_a_quote_closed_mid_cell_is_an_error_not_merged_rows(tmp_path):
    path = tmp_path / "merged.tsv"
    path.write_text('text\tlabel\n"so good\tpositive\nbad\tnegative\nhe said "fine\tpositive\n')
    with pytest.raises(DataError, match=r"merged.tsv:4: not valid TSV .*written twice"):
        read(path)
    fine = tmp_path / "fine.csv"  # quoted cells with line ends and doubled quotes still read
    fine.write_text('text,label\n"two\nlines, ""quoted""",pos\nplain,neg\n', "utf-8")
    assert [e.text for e in read(fine)] == ['two\nlines, "quoted"', "plain"]


def test_semicolon_csv_and_deeply_nested_json_rows_are_one_line_errors(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufefftext;label\r\n"late";neg\r\n"great";pos\r\n'.encode())
    with pytest.raises(DataError, match="separated by ';'"):
        read(path)
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "a", "label": "x"}\n{"text": ' + "[" * 50000 + "]" * 50000 + "}\n")
    with pytest.raises(DataError, match="deep.jsonl:2: JSON nested too deeply"):
        read(deep)


def test_configs_as_json_and_keys_given_twice(tmp_path):
    raw = {"name": "j", "data": {"train": "t.csv"}, "train": {"lr": 0.1, "epochs": 2}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw, indent="\t"), "utf-8")  # tabs: JSON, but not YAML
    assert load_config(path).train.lr == 0.1
    path.write_text(json.dumps(raw)[:-1] + ', "name": "other"}', "utf-8")
    with pytest.raises(ConfigError, match="'name' is given twice"):
        load_config(path)
    twice = tmp_path / "twice.yaml"
    twice.write_text("data: {train: t.csv}\ntrain:\n  lr: 0.1\nname: x\ntrain:\n  epochs: 1\n")
    with pytest.raises(
        ConfigError, match=r"twice.yaml:5: .*'train' is given twice \(also at line 2"
    ):
        load_config(twice)
    merged = tmp_path / "merged.yaml"  # a YAML merge key may repeat keys: that is its purpose
    merged.write_text("base: &b {lr: 0.1}\ndata: {train: t.csv}\ntrain:\n  <<: *b\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="base"):  # (an unknown section, not a key twice)
        load_config(merged)
    infinite = tmp_path / "infinite.yaml"
    for value in (".inf", ".nan"):
        infinite.write_text(f"data: {{train: t.csv}}\ntrain: {{epochs: {value}}}\n")
        with pytest.raises(ConfigError, match="train.epochs: Input should be a finite number"):
            load_config(infinite)
