"""Readers (CSV, TSV, JSONL, CoNLL), their error messages, label inference and the dev split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridgetune.config import DataConfig
from bridgetune.data.io import detect_format, fingerprint, join_tokens, load_examples, read_file
from bridgetune.data.schema import DataError, Example
from bridgetune.data.splits import load_splits
from bridgetune.data.tags import decode_spans
from bridgetune.tasks import reader_for


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict], ensure_ascii: bool = True) -> Path:
    lines = [json.dumps(row, ensure_ascii=ensure_ascii) for row in rows]
    return write(path, "\n".join(lines) + "\n")


def read(path: Path, task: str = "classification", **options: object) -> list[Example]:
    return read_file(path, DataConfig(train=str(path), **options), reader_for(task))


def data_error(path: Path, line: int | None, *fragments: str) -> _DataErrorCheck:
    """Context manager: DataError whose message names `path` (and `path:line`) and fragments."""
    return _DataErrorCheck(path, line, fragments)


class _DataErrorCheck:
    def __init__(self, path: Path, line: int | None, fragments: tuple[str, ...]) -> None:
        self.path, self.line, self.fragments = path, line, fragments
        self._raises = pytest.raises(DataError)

    def __enter__(self):
        self.info = self._raises.__enter__()
        return self.info

    def __exit__(self, *exc_info) -> bool:
        suppressed = self._raises.__exit__(*exc_info)
        message = str(self.info.value)
        assert str(self.path) in message, message
        if self.line is not None:
            assert f"{self.path}:{self.line}:" in message, message
        for fragment in self.fragments:
            assert fragment in message, message
        return suppressed


SENTIMENT_ROWS = [
    ("my order is late", "negative"),
    ("great service, thanks", "positive"),
    ("terrible slow delivery", "negative"),
    ("love this phone", "positive"),
]


# --- text formats --------------------------------------------------------------------------


def test_read_csv_single_label(tmp_path: Path) -> None:
    body = "".join(f'"{text}",{label}\n' for text, label in SENTIMENT_ROWS)
    path = write(tmp_path / "train.csv", "text,label\n" + body)
    examples = read(path)
    assert [(e.text, e.label) for e in examples] == SENTIMENT_ROWS
    assert [e.source for e in examples] == [f"{path}:{n}" for n in range(2, 6)]
    assert all(e.text_pair is None and e.tokens is None for e in examples)


def test_read_csv_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("\ufefftext,label\r\nhello,a\r\nworld,b\r\n".encode())
    examples = read(path)
    assert [(e.text, e.label) for e in examples] == [("hello", "a"), ("world", "b")]


def test_read_csv_multiline_field_keeps_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", 'text,label\n"two\nlines",a\nnext,b\n" ",c\n')
    with data_error(path, 5, "empty text"):
        read(path)
    path = write(tmp_path / "ok.csv", 'text,label\n"two\nlines",a\nnext,b\n')
    assert [e.source for e in read(path)] == [f"{path}:2", f"{path}:4"]


def test_read_tsv(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "label\ttext\npos\tgood, fast, cheap\nneg\tslow\n")
    examples = read(path)
    assert [(e.text, e.label) for e in examples] == [("good, fast, cheap", "pos"), ("slow", "neg")]


def test_read_jsonl_single_label(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.jsonl",
        '{"text": "hello", "label": 1}\n\n{"text": "bye", "label": "0", "extra": [1]}\n',
    )
    examples = read(path)
    assert [(e.text, e.label) for e in examples] == [("hello", "1"), ("bye", "0")]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:3"]


def test_read_json_extension_as_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.json", [{"text": "a", "label": "x"}])
    assert detect_format(path, "auto", tagged=False) == "jsonl"
    assert read(path)[0].label == "x"


def test_read_multilabel_csv_with_separator(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.csv",
        "text,label\nlate refund,billing|delivery\nreset,account\nboth, a | b |\n",
    )
    examples = read(path, "multilabel")
    assert [e.label for e in examples] == [["billing", "delivery"], ["account"], ["a", "b"]]


def test_read_multilabel_custom_separator(tmp_path: Path) -> None:
    path = write(tmp_path / "train.tsv", "text\tlabel\nx\tbilling;delivery\n")
    examples = read(path, "multilabel", label_separator=";")
    assert examples[0].label == ["billing", "delivery"]


def test_read_multilabel_jsonl_lists(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "late refund", "label": ["billing", "delivery"]},
            {"text": "reset", "label": ["account"]},
            {"text": "string form", "label": "a|b"},
        ],
    )
    examples = read(path, "multilabel")
    assert [e.label for e in examples] == [["billing", "delivery"], ["account"], ["a", "b"]]


def test_read_sentence_pairs(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pairs.csv",
        "question1,question2,label\n"
        "how do i reset,how to change,same\n"
        "where is it,refund,different\n",
    )
    examples = read(path, "pair", text_column="question1", text_pair_column="question2")
    assert [(e.text, e.text_pair, e.label) for e in examples] == [
        ("how do i reset", "how to change", "same"),
        ("where is it", "refund", "different"),
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"text": "a", "text_b": "b", "label": "same"}])
    example = read(path, "pair", text_pair_column="text_b")[0]
    assert (example.text, example.text_pair) == ("a", "b")


def test_empty_pair_text(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.csv", "text,text_b,label\na,b,same\nc,,different\n")
    with data_error(path, 3, "text_b"):
        read(path, "pair", text_pair_column="text_b")


def test_column_map_renames_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "sentence,category\nhello,a\nworld,b\n")
    examples = read(path, column_map={"sentence": "text", "category": "label"})
    assert [(e.text, e.label) for e in examples] == [("hello", "a"), ("world", "b")]


def test_column_map_and_custom_columns_in_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"content": "hi", "y": 2}])
    examples = read(path, column_map={"content": "body"}, text_column="body", label_column="y")
    assert (examples[0].text, examples[0].label) == ("hi", "2")


# --- token formats -------------------------------------------------------------------------

CONLL_IOB1 = """\
-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
Smith NNP I-NP B-PER
said VBD B-VP O


-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O"""


def test_read_conll_iob1(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conll", CONLL_IOB1)
    examples = read(path, "ner", tag_scheme="IOB1")
    assert [e.tokens for e in examples] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn", "Smith", "said"],
        ["BRUSSELS", "1996-08-22"],
    ]
    assert examples[0].tags == ["I-ORG", "O", "I-MISC", "O", "O"]
    assert examples[1].tags == ["I-PER", "I-PER", "B-PER", "O"]
    assert [e.source for e in examples] == [f"{path}:3", f"{path}:9", f"{path}:17"]
    first = examples[0]
    assert first.text == "EU rejects German call ."
    assert first.offsets == [(0, 2), (3, 10), (11, 17), (18, 22), (23, 24)]
    assert all(first.text[a:b] == t for (a, b), t in zip(first.offsets, first.tokens, strict=True))
    assert first.label is None
    assert decode_spans(examples[1].tags, "IOB1") == [("PER", 0, 2), ("PER", 2, 3)]


def test_iob1_file_read_as_iob2_fails_on_first_token(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conll", CONLL_IOB1)
    with data_error(path, 3, "IOB2", "'EU'", "data.tag_scheme"):
        read(path, "ner", tag_scheme="IOB2")


def test_read_conll_iob2_three_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.txt",
        "John NNP B-PER\nSmith NNP I-PER\nvisited VBD O\nParis NNP B-LOC\n\n"
        "Acme NNP B-ORG\nCorp NNP I-ORG\n",
    )
    examples = read(path, "ner")
    assert [e.tags for e in examples] == [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG"]]
    assert examples[0].text == "John Smith visited Paris"
    assert examples[0].offsets == [(0, 4), (5, 10), (11, 18), (19, 24)]
    assert decode_spans(examples[0].tags, "IOB2") == [("PER", 0, 2), ("LOC", 3, 4)]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:6"]


def test_read_conll_bioes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.bioes",
        "New B-LOC\nYork I-LOC\nCity E-LOC\nis O\nbig O\n\nBob S-PER\nran O\n",
    )
    examples = read(path, "ner", tag_scheme="BIOES")
    assert examples[0].tags == ["B-LOC", "I-LOC", "E-LOC", "O", "O"]
    assert decode_spans(examples[0].tags, "BIOES") == [("LOC", 0, 3)]
    assert decode_spans(examples[1].tags, "BIOES") == [("PER", 0, 1)]


def test_read_chinese_bmes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "zh.bmes",
        "张 B-PER\n三 E-PER\n在 O\n北 B-LOC\n京 M-LOC\n市 E-LOC\n。 O\n\n我 S-PER\n好 O\n",
    )
    examples = read(path, "ner", tag_scheme="BMES")
    first = examples[0]
    assert first.tokens == list("张三在北京市。")
    assert first.text == "张三在北京市。"
    assert first.offsets == [(i, i + 1) for i in range(7)]
    assert decode_spans(first.tags, "BMES") == [("PER", 0, 2), ("LOC", 3, 6)]
    assert examples[1].text == "我好"
    assert examples[1].offsets == [(0, 1), (1, 2)]


def test_join_tokens() -> None:
    assert join_tokens(["我", "在", "A", "1"]) == ("我在A1", [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert join_tokens(["a", "b"]) == ("a b", [(0, 1), (2, 3)])
    assert join_tokens(["北京", "is"]) == ("北京 is", [(0, 2), (3, 5)])


def test_read_ner_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"tokens": ["John", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]},
            {"tokens": ["Hi"], "tags": ["O"]},
        ],
    )
    examples = read(path, "ner")
    assert examples[0].tokens == ["John", "lives", "in", "Paris"]
    assert examples[0].tags == ["B-PER", "O", "O", "B-LOC"]
    assert examples[0].text == "John lives in Paris"
    assert examples[0].offsets == [(0, 4), (5, 10), (11, 13), (14, 19)]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:2"]


def test_read_ner_jsonl_custom_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"tokens": ["Bob"], "ner_tags": ["B-PER"]}])
    assert read(path, "ner", label_column="ner_tags")[0].tags == ["B-PER"]
    path = write_jsonl(tmp_path / "b.jsonl", [{"words": ["Bob"], "ner": ["S-PER"]}])
    examples = read(path, "ner", tag_scheme="BIOES", column_map={"words": "tokens", "ner": "tags"})
    assert examples[0].tokens == ["Bob"] and examples[0].tags == ["S-PER"]


# --- bad input: DataError names file and line ----------------------------------------------


def test_misspelled_column_suggests_close_name(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "txt,label\nhello,a\n")
    with data_error(path, 2, "'text'", "Did you mean 'txt'?"):
        read(path)


def test_misspelled_label_column_in_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": "a", "label": "x"}, {"text": "b", "lable": "y"}],
    )
    with data_error(path, 2, "'label'", "Did you mean 'lable'?"):
        read(path)


def test_missing_column_without_close_name(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "body,label\nhello,a\n")
    with data_error(path, 2, "column 'text' not found", "data.column_map") as info:
        read(path)
    assert "Did you mean" not in str(info.value)


def test_missing_tokens_column_in_ner_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"token": ["a"], "tags": ["O"]}])
    with data_error(path, 1, "'tokens'", "Did you mean 'token'?"):
        read(path, "ner")


def test_empty_text(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "text,label\nhello,a\n   ,b\n")
    with data_error(path, 3, "empty text"):
        read(path)
    path = write_jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"label": "y", "text": ""}]
    )
    with data_error(path, 2, "empty text"):
        read(path)


def test_empty_text_after_blank_line_names_its_line(tmp_path: Path) -> None:
    # line 3 is blank (skipped by the csv module), the bad row is on line 4
    path = write(tmp_path / "train.csv", "text,label\nhello,a\n\n   ,b\n")
    with data_error(path, 4, "empty text"):
        read(path)


def test_empty_label(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "text,label\nhello,a\nworld\n")
    with data_error(path, 3, "empty label"):
        read(path)
    path = write(tmp_path / "multi.csv", "text,label\nhello,a|b\nworld,|\n")
    with data_error(path, 3, "empty label"):
        read(path, "multilabel")


def test_more_fields_than_header(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", "text,label\nhello,a\nhello, world,b\n")
    with data_error(path, 3, "more fields"):
        read(path)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", '{"text": "a", "label": "x"}\n{"text": "b",\n')
    with data_error(path, 2, "not valid JSON"):
        read(path)
    path = write(tmp_path / "list.jsonl", '{"text": "a", "label": "x"}\n\n["b", "y"]\n')
    with data_error(path, 3, "JSON object"):
        read(path)


def test_jsonl_line_separator_inside_string_is_not_a_line_break(tmp_path: Path) -> None:
    # json.dumps(ensure_ascii=False) writes U+2028/U+0085 raw; JSON Lines only splits on \n
    rows = [{"text": "first\u2028part", "label": "x"}, {"text": "caf\u0085e", "label": "y"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows, ensure_ascii=False)
    examples = read(path)
    assert [e.text for e in examples] == ["first\u2028part", "caf\u0085e"]
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:2"]


def test_label_in_dev_unseen_in_train(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,pos\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,pos\ne,neutral\n")
    with data_error(dev, 3, "'neutral'", "dev", "train"):
        load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("classification"))


def test_tag_in_dev_unseen_in_train(tmp_path: Path) -> None:
    train = write(tmp_path / "train.conll", "John B-PER\nran O\n")
    dev = write(tmp_path / "dev.conll", "Bob B-PER\n\nParis B-LOC\n")
    with data_error(dev, 3, "'B-LOC'"):
        load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("ner"))


def test_train_label_outside_configured_labels(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,meh\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,pos\n")
    with data_error(train, 4, "'meh'", "data.labels"):
        load_splits(
            DataConfig(train=str(train), dev=str(dev), labels=["neg", "pos"]),
            reader_for("classification"),
        )


def test_single_class_is_rejected(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,pos\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,pos\n")
    with data_error(train, None, "two classes"):
        load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("classification"))


def test_token_line_without_tag(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conll", "EU B-ORG\nrejects O\n\nGerman\ncall O\n")
    with data_error(path, 4, "one column", "'German'"):
        read(path, "ner")


def test_jsonl_tokens_tags_length_mismatch(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b", "c"], "tags": ["O", "O"]}],
    )
    with data_error(path, 2, "3 tokens but 2 tags"):
        read(path, "ner")


def test_jsonl_empty_token_list(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"tokens": [], "tags": []}])
    with data_error(path, 1, "empty token list"):
        read(path, "ner")


def test_invalid_iob2_sequence_names_token_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conll", "John B-PER\nlives O\n\nin O\nParis I-LOC\n")
    with data_error(path, 5, "invalid IOB2", "'Paris'", "B-LOC"):
        read(path, "ner")


def test_unclosed_bioes_entity_names_last_token_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.bioes", "-DOCSTART- O\n\nNew B-LOC\nYork I-LOC\n")
    with data_error(path, 4, "invalid BIOES", "'York'"):
        read(path, "ner", tag_scheme="BIOES")


def test_invalid_bmes_tag(tmp_path: Path) -> None:
    path = write(tmp_path / "zh.bmes", "北 B-LOC\n京 I-LOC\n")
    with data_error(path, 2, "invalid BMES", "'京'"):
        read(path, "ner", tag_scheme="BMES")


def test_invalid_sequence_in_ner_jsonl_names_row(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O", "I-PER"]}],
    )
    with data_error(path, 2, "invalid IOB2", "'b'"):
        read(path, "ner")


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\nhello,a\ncaf\xe9 au lait,b\n")
    with data_error(path, 3, "0xe9", "UTF-8"):
        read(path)
    path = tmp_path / "train.conll"
    path.write_bytes(b"EU B-ORG\n\nrejects O\nCaf\xc3 O\n")
    with data_error(path, 4, "0xc3", "UTF-8"):
        read(path, "ner")


@pytest.mark.parametrize(
    ("name", "text", "task"),
    [
        ("empty.csv", "", "classification"),
        ("header.csv", "text,label\n", "classification"),
        ("empty.jsonl", "\n\n", "classification"),
        ("empty.conll", "-DOCSTART- -X- O\n\n\n", "ner"),
        ("empty_ner.jsonl", "", "ner"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, text: str, task: str) -> None:
    path = write(tmp_path / name, text)
    with data_error(path, None, "no examples"):
        read(path, task)


def test_empty_dev_split(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\n")
    with data_error(dev, None, "empty"):
        load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("classification"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with data_error(path, None, "does not exist"):
        read(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "train.xlsx", "x")
    with data_error(path, None, "data.format"):
        read(path)
    # an explicit format overrides the extension
    path = write(tmp_path / "train.data", "text,label\na,b\n")
    assert read(path, format="csv")[0].label == "b"


def test_token_file_cannot_feed_text_task(tmp_path: Path) -> None:
    path = write(tmp_path / "train.conll", "a O\n")
    with data_error(path, None, "token file"):
        read(path)


def test_single_example_label_with_stratified_split(tmp_path: Path) -> None:
    rows = [f"a{i},pos\n" for i in range(5)] + ["solo,rare\n"] + [f"b{i},neg\n" for i in range(5)]
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(rows))
    # the lonely example is on line 7 (header on 1, five 'pos' rows on 2-6)
    with data_error(train, 7, "'rare'", "single example", "data.dev"):
        load_splits(DataConfig(train=str(train)), reader_for("classification"))


def test_too_few_examples_to_split(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,pos\n")
    with data_error(train, None, "too few"):
        load_splits(DataConfig(train=str(train)), reader_for("classification"))


# --- labels --------------------------------------------------------------------------------


def test_labels_inferred_sorted(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\nc,neutral\nd,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,pos\n")
    splits = load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("classification"))
    assert splits.labels == ["neg", "neutral", "pos"]
    assert len(splits.train) == 4 and len(splits.dev) == 1 and splits.test is None


def test_numeric_labels_sorted_numerically(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,10\nb,2\nc,1\nd,-3\ne,2\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,10\n")
    splits = load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("classification"))
    assert splits.labels == ["-3", "1", "2", "10"]


def test_multilabel_labels_inferred(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,b|a\nb,c\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,a|c\n")
    splits = load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("multilabel"))
    assert splits.labels == ["a", "b", "c"]


def test_tag_labels_put_o_first(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.conll",
        "John B-PER\nSmith I-PER\nin O\nParis B-LOC\n\nAcme B-ORG\nCorp I-ORG\n",
    )
    dev = write(tmp_path / "dev.conll", "Bob B-PER\n")
    splits = load_splits(DataConfig(train=str(train), dev=str(dev)), reader_for("ner"))
    assert splits.labels[0] == "O"
    assert splits.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_infer_labels_directly() -> None:
    examples = [Example(text="x", tags=["B-X", "E-X", "S-A"]), Example(text="y", tags=["O"])]
    assert reader_for("ner").infer_labels(examples, None) == ["O", "S-A", "B-X", "E-X"]
    examples = [Example(text="x", label="b"), Example(text="y", label="A")]
    assert reader_for("classification").infer_labels(examples, None) == ["A", "b"]


def test_configured_labels_keep_their_order(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nd,pos\n")
    cfg = DataConfig(train=str(train), dev=str(dev), labels=["pos", "neg", "neutral"])
    assert load_splits(cfg, reader_for("classification")).labels == ["pos", "neg", "neutral"]


# --- dev split and limits ------------------------------------------------------------------


def write_classes(path: Path, counts: dict[str, int]) -> Path:
    rows = [f"{label} example {i},{label}\n" for label, n in counts.items() for i in range(n)]
    return write(path, "text,label\n" + "".join(rows))


def split_texts(cfg: DataConfig) -> tuple[list[str], list[str]]:
    splits = load_splits(cfg, reader_for("classification"))
    return [e.text for e in splits.train], [e.text for e in splits.dev]


def test_stratified_split_is_deterministic_and_keeps_every_class(tmp_path: Path) -> None:
    train = write_classes(tmp_path / "train.csv", {"a": 12, "b": 10, "c": 8})
    cfg = DataConfig(train=str(train), dev_fraction=0.2, split_seed=7)
    first = split_texts(cfg)
    assert split_texts(cfg) == first
    train_texts, dev_texts = first
    assert len(dev_texts) == 6 and len(train_texts) == 24
    assert sorted(train_texts + dev_texts) == sorted(e.text for e in read(train))
    assert not set(train_texts) & set(dev_texts)
    dev_labels = [text.split()[0] for text in dev_texts]
    assert set(dev_labels) == {"a", "b", "c"}
    assert set(text.split()[0] for text in train_texts) == {"a", "b", "c"}
    # another seed gives another split
    other = split_texts(DataConfig(train=str(train), dev_fraction=0.2, split_seed=8))
    assert sorted(other[1]) != sorted(dev_texts)


def test_stratified_split_holds_out_at_least_one_per_class(tmp_path: Path) -> None:
    # 10% of 12 rounds to 1, but 3 classes need 3 dev examples
    train = write_classes(tmp_path / "train.csv", {"a": 4, "b": 4, "c": 4})
    train_texts, dev_texts = split_texts(DataConfig(train=str(train), split_seed=1))
    assert len(dev_texts) == 3
    assert {text.split()[0] for text in dev_texts} == {"a", "b", "c"}


def test_ner_split_without_stratification(tmp_path: Path) -> None:
    blocks = [f"w{i} B-PER\nx{i} O" for i in range(10)]
    train = write(tmp_path / "train.conll", "\n\n".join(blocks) + "\n")
    splits = load_splits(DataConfig(train=str(train), split_seed=3), reader_for("ner"))
    again = load_splits(DataConfig(train=str(train), split_seed=3), reader_for("ner"))
    assert len(splits.dev) == 1 and len(splits.train) == 9
    assert [e.text for e in splits.dev] == [e.text for e in again.dev]


def test_max_train_examples_with_dev_file(tmp_path: Path) -> None:
    train = write_classes(tmp_path / "train.csv", {"a": 5, "b": 5})
    dev = write_classes(tmp_path / "dev.csv", {"a": 3, "b": 3})
    cfg = DataConfig(train=str(train), dev=str(dev), max_train_examples=7, max_eval_examples=2)
    splits = load_splits(cfg, reader_for("classification"))
    assert [e.text for e in splits.train] == [e.text for e in read(train)][:7]
    assert len(splits.dev) == 2


def test_max_train_examples_before_split(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.csv",
        "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(40)),
    )
    splits = load_splits(
        DataConfig(train=str(train), max_train_examples=20), reader_for("classification")
    )
    texts = {e.text for e in splits.train} | {e.text for e in splits.dev}
    assert texts == {f"t{i}" for i in range(20)}
    assert len(splits.dev) == 2


def test_load_examples_limits_by_role(tmp_path: Path) -> None:
    path = write_classes(tmp_path / "data.csv", {"a": 3, "b": 3})
    cfg = DataConfig(train=str(path), max_train_examples=4, max_eval_examples=1)
    assert len(load_examples(str(path), cfg, reader_for("classification"), "train")) == 4
    assert len(load_examples(str(path), cfg, reader_for("classification"), "dev")) == 1
    assert len(load_examples(str(path), cfg, reader_for("classification"), "test")) == 1


def test_fingerprint_tracks_file_bytes(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", "text,label\nx,y\n")
    first = fingerprint([str(a), None, "hf:imdb"])
    assert first == fingerprint([str(a), None, "hf:imdb"])
    write(a, "text,label\nx,z\n")
    assert fingerprint([str(a), None, "hf:imdb"]) != first


def test_inferred_tags_are_completed_per_scheme():
    from bridgetune.data.schema import Example

    examples = [Example(text="a b", tokens=["a", "b"], tags=["B-ORDER", "O"])]
    assert reader_for("ner").infer_labels(examples, "IOB2") == ["O", "B-ORDER", "I-ORDER"]
    chars = [Example(text="ab", tokens=["a", "b"], tags=["B_X", "E_X"])]
    assert reader_for("ner").infer_labels(chars, "BMES") == ["O", "B_X", "E_X", "M_X", "S_X"]


def test_a_csv_field_over_the_csv_module_limit_is_read(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200,000 characters: over the csv module's 131,072 default
    path = write(tmp_path / "long.csv", f'text,label\n"{long}",positive\nshort,negative\n')
    examples = read(path)
    assert len(examples[0].text) == len(long) and examples[1].label == "negative"


def test_a_json_array_file_is_read_as_rows_with_their_lines(tmp_path):
    from bridgetune.data.io import read_records

    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": "b",\n   "label": "y"}\n]\n')
    assert list(read_records(path, "jsonl")) == [
        (2, {"text": "a", "label": "x"}),
        (3, {"text": "b", "label": "y"}),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(DataError, match=r"broken.json:3: not valid JSON"):
        list(read_records(broken, "jsonl"))
    numbers = tmp_path / "numbers.json"
    numbers.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"numbers.json:1: each element of the array must be"):
        list(read_records(numbers, "jsonl"))


def test_invalid_rows_can_be_skipped_and_are_listed(tmp_path, capsys):
    from bridgetune.config import DataConfig
    from bridgetune.data.readers import TextReader

    path = tmp_path / "rows.csv"
    path.write_text("text,label\ngood,a\n,b\nfine,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"rows.csv:3: empty text"):
        TextReader().read_file(path, DataConfig(train=str(path)), True)
    kept = TextReader().read_file(path, DataConfig(train=str(path), invalid_rows="skip"), True)
    assert [e.text for e in kept] == ["good", "fine"]
    said = " ".join(capsys.readouterr().err.split())
    assert "1 invalid rows skipped (data.invalid_rows: skip)" in said and "rows.csv:3" in said
