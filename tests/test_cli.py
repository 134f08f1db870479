"""The CLI end to end on a tiny model: config, validate-data, train, predict, evaluate."""

from __future__ import annotations

import json

import yaml
from conftest import SENTIMENT, tiny_config, write_config
from typer.testing import CliRunner

from bridgetune.cli import app

runner = CliRunner()


def _write_config(tmp_path, tiny_bert, sentiment_csv, **extra):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        train={"epochs": 3},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        **extra,
    )
    return write_config(config, tmp_path)


def test_train_predict_evaluate(tiny_bert, sentiment_csv, tmp_path):
    config = _write_config(tmp_path, tiny_bert, sentiment_csv)
    trained = runner.invoke(app, ["train", str(config), "train.epochs=2", "name=cli"])
    assert trained.exit_code == 0, trained.output
    model_dir = tmp_path / "runs" / "cli" / "model"
    assert (model_dir / "bridgetune.json").is_file()

    by_args = runner.invoke(app, ["predict", str(model_dir), "my order is late", "love this"])
    rows = [json.loads(line) for line in by_args.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["my order is late", "love this"]
    assert all(r["label"] in ("negative", "positive") and "scores" in r for r in rows)

    texts = tmp_path / "texts.txt"
    texts.write_text("my order is late\n\nlove this\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    by_file = runner.invoke(
        app, ["predict", str(model_dir), "--file", str(texts), "--output", str(out)]
    )
    assert by_file.exit_code == 0, by_file.output
    assert [json.loads(x)["label"] for x in out.read_text().splitlines()] == [
        r["label"] for r in rows
    ]

    by_csv = runner.invoke(app, ["predict", str(model_dir), "--file", str(sentiment_csv)])
    assert len(by_csv.stdout.splitlines()) == len(SENTIMENT)

    by_stdin = runner.invoke(app, ["predict", str(model_dir)], input="my order is late\n")
    assert json.loads(by_stdin.stdout)["label"] == rows[0]["label"]

    evaluated = runner.invoke(
        app, ["evaluate", str(model_dir), str(sentiment_csv), "--output", str(tmp_path / "eval")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy" in json.loads(evaluated.stdout.splitlines()[-1])


def test_validate_data_reports_counts_and_overlap(tiny_bert, sentiment_csv, tmp_path):
    config = _write_config(tmp_path, tiny_bert, sentiment_csv)
    result = runner.invoke(app, ["validate-data", str(config), "model.max_length=4"])
    assert result.exit_code == 0, result.output
    assert "label distribution" in result.stdout
    assert "dev examples also in train: 10" in result.stdout
    assert "> max_length 4" in result.stdout


def test_config_schema_and_errors(tiny_bert, sentiment_csv, tmp_path):
    schema = runner.invoke(app, ["config", "--schema"])
    assert schema.exit_code == 0 and "train.lr" in schema.stdout
    config = _write_config(tmp_path, tiny_bert, sentiment_csv)
    shown = runner.invoke(app, ["config", str(config), "train.lr=0.1"])
    assert yaml.safe_load(shown.stdout)["train"]["lr"] == 0.1
    typo = runner.invoke(app, ["train", str(config), "train.lrr=0.1"])
    assert typo.exit_code == 2
    assert "did you mean 'train.lr'" in typo.output
    missing = runner.invoke(app, ["train", str(config), "model.name=./no/such/model"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    too_long = runner.invoke(app, ["train", str(config), "model.max_length=4096"])
    assert too_long.exit_code == 2 and "max_length" in too_long.output
    no_input = runner.invoke(app, ["predict", str(tmp_path)], input="")
    assert no_input.exit_code == 2


def test_bad_data_fails_before_anything_is_written(tiny_bert, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("txt,label\nhello,a\nworld,b\n", encoding="utf-8")
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(bad)})
    path = write_config(config, tmp_path)
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())  # rich wraps long lines at spaces
    assert f"{bad}:2: column 'text' not found" in flat
    assert "Did you mean 'txt'?" in result.output
    assert not (tmp_path / "runs").exists()


def test_predict_ner_on_untagged_token_file(tiny_bert, ner_conll, tmp_path):
    from conftest import NER_SENTENCES

    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="ner",
        train={"epochs": 2},
        data={"train": str(ner_conll), "dev": str(ner_conll)},
    )
    path = write_config(config, tmp_path)
    assert runner.invoke(app, ["train", str(path)]).exit_code == 0
    words = tmp_path / "words.conll"
    words.write_text("\n\n".join("\n".join(w for w, _ in s) for s in NER_SENTENCES) + "\n")
    result = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "runs" / "tiny" / "model"),
            "--file",
            str(words),
            "--format",
            "conll",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(r["tags"]) for r in rows] == [len(s) for s in NER_SENTENCES]


def test_error_text_with_brackets_is_printed_verbatim(tiny_bert, tmp_path):
    bad = tmp_path / "bad.conll"
    bad.write_text("john B-PER\nsmith\n", encoding="utf-8")
    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner", data={"train": str(bad)})
    path = write_config(config, tmp_path)
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "expected 'TOKEN [...] TAG'" in result.output.replace("\n", "")


def test_augment_preview_command(tiny_bert, sentiment_csv, ner_conll, tmp_path):
    config = write_config(
        tiny_config(tiny_bert, tmp_path, data={"train": str(sentiment_csv)}), tmp_path
    )
    shown = runner.invoke(app, ["augment", str(config), "augment.ops=[swap]", "--show", "3"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("swap") >= 3 and "augmented" in shown.output
    missing = runner.invoke(app, ["augment", str(config)])
    assert missing.exit_code != 0 and "augment.ops" in missing.output
    ner = tiny_config(tiny_bert, tmp_path, task="ner", data={"train": str(ner_conll)})
    ner_config = write_config(
        ner, tmp_path / "ner" if (tmp_path / "ner").mkdir() is None else tmp_path
    )
    mentions = runner.invoke(
        app, ["augment", str(ner_config), "augment.ops=[mention]", "--show", "2"]
    )
    assert mentions.exit_code == 0, mentions.output
    assert "/B-" in mentions.output  # entity words shown with their tags


def test_predict_names_the_stdin_line_that_is_not_utf8(served_classifier):
    result = runner.invoke(
        app, ["predict", str(served_classifier)], input=b"fine\n\xc4\xe3\xba\xc3 gbk\n"
    )
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "stdin:2: byte 0xc4 at column 1 is not valid UTF-8" in flat
    assert "iconv" in flat


def test_a_model_directory_without_labels_is_a_clear_error(served_classifier, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(served_classifier, broken)
    meta = json.loads((broken / "bridgetune.json").read_text())
    del meta["labels"]
    (broken / "bridgetune.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["predict", str(broken), "fine"])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "has no 'labels' (written by bridgetune" in flat and "retrain" in flat
