"""task: relation — readers (inline markers, FinRE rows, JSONL spans), markers and entity-start
pooling on hand-checked positions, SemEval-2010 Task 8's official score on a hand-computed
confusion matrix, direction handling, and train/save/reload/predict/serve with plain
transformers loading the encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bridgetune
from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks import build_task
from bridgetune.tasks.metrics import relation_metrics
from bridgetune.tasks.relation import window
from bridgetune.tasks.relation_reader import RelationReader, locate, parse_marked
from tests.conftest import tiny_config

READER = RelationReader()


def read(path: Path, **data) -> list[Example]:
    return READER.read_file(path, DataConfig(train=str(path), **data), labelled=True)


# -- reading ----------------------------------------------------------------------------------


def test_inline_markers_give_the_plain_sentence_and_both_spans():
    text, (head, tail) = parse_marked(
        "The system as described above has its greatest application in an arrayed <e1> "
        "configuration </e1> of antenna <e2> elements </e2>.", "f:1"
    )  # fmt: skip
    assert text == (
        "The system as described above has its greatest application in an arrayed "
        "configuration of antenna elements."
    )
    assert text[head["start"] : head["end"]] == "configuration"
    assert text[tail["start"] : tail["end"]] == "elements"
    text, (head, tail) = parse_marked("The <e1> student </e1> <e2> association </e2> is", "f")
    assert text == "The student association is"
    assert (text[head["start"] : head["end"]], text[tail["start"] : tail["end"]]) == (
        "student",
        "association",
    )
    text, (head, tail) = parse_marked("<e2>北京</e2>是<e1>张三</e1>的家乡", "f")  # tail first
    assert text == "北京是张三的家乡" and (head["start"], tail["start"]) == (3, 0)
    _, (head, tail) = parse_marked("<e1:PER>张三</e1:PER>在<e2:LOC>北京</e2>", "f")  # typed
    assert (head["type"], tail["type"]) == ("PER", "LOC")


@pytest.mark.parametrize(
    ("marked", "message"),
    [
        ("<e1>a</e1> b", "f:3: no <e2> mention"),
        ("<e1>a <e2>b</e2></e1>", "f:3: <e2> inside <e1>: entities may not nest"),
        ("<e1>a</e1> <e1>b</e1> <e2>c</e2>", "f:3: <e1> marked twice"),
        ("<e1>a</e1> <e2>b", "f:3: <e2> is never closed with </e2>"),
        ("<e1>a</e1> b</e2>", "f:3: </e2> closes no open <e2>"),
        ("<e1></e1> <e2>b</e2>", "f:3: <e1></e1> marks an empty mention"),
    ],
)
def test_bad_markers_are_errors_at_the_line(marked, message):
    with pytest.raises(DataError, match=message):
        parse_marked(marked, "f:3")


def test_semeval_tsv_finre_rows_and_jsonl_spans(tmp_path):
    semeval = tmp_path / "semeval.tsv"
    semeval.write_text(
        "Cause-Effect(e2,e1)\tThe <e1> fire </e1> was caused by <e2> lightning </e2>.\n"
        "Other\tA misty <e1> ridge </e1> uprises from the <e2> surge </e2>.\n",
        encoding="utf-8",
    )
    first, second = read(semeval)
    assert first.label == "Cause-Effect(e2,e1)" and first.source.endswith("semeval.tsv:1")
    assert first.text[first.mentions[1]["start"] : first.mentions[1]["end"]] == "lightning"
    finre = tmp_path / "finre.txt"
    finre.write_text(
        "东方航空\t上航\t合并\t东方航空AH股临时停牌传将与上航合并\n\n"
        "京东方\t深圳光电\t被分析\t深圳光电显示周期间,京东方发布规划,京东方布局\n",
        encoding="utf-8",
    )
    merged, analysed = read(finre)
    assert (merged.label, merged.mentions[0]["start"], merged.mentions[1]["start"]) == (
        "合并",
        0,
        14,
    )
    # 京东方 occurs twice: the occurrence nearest to 深圳光电 is taken
    assert analysed.mentions[0]["start"] == analysed.text.index("京东方")
    jsonl = tmp_path / "rows.jsonl"
    rows = [
        {"text": "Acme bought Widgets Inc.", "head": {"start": 0, "end": 4, "type": "ORG"},
         "tail": {"start": 12, "end": 24, "type": "ORG"}, "label": "acquired"},
        {"text": "阿里巴巴投资了小红书", "head": {"text": "阿里巴巴", "type": "ORG"},
         "tail": {"text": "小红书", "type": "ORG"}, "label": "投资"},
        {"text": "<e1>Bob</e1> met <e2>Ann</e2>", "label": "no_relation"},
    ]  # fmt: skip
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    bought, invested, met = read(jsonl)
    assert bought.mentions == [
        {"start": 0, "end": 4, "type": "ORG"},
        {"start": 12, "end": 24, "type": "ORG"},
    ]
    assert invested.mentions[1] == {"start": 7, "end": 10, "type": "ORG"}
    assert met.text == "Bob met Ann" and met.mentions[0]["type"] is None


def test_missing_ambiguous_and_wrong_spans_are_errors_or_skipped(tmp_path, capsys):
    finre = tmp_path / "finre.txt"
    finre.write_text(
        "甲\t乙\t合作\t甲和乙合作\n"
        "丙\t乙\t合作\t甲和乙合作\n"  # 丙 is not in the sentence
        "甲\t乙\t合作\t甲乙甲\n",  # 乙 equally near both 甲
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"finre.txt:2: the head '丙' does not occur"):
        read(finre)
    kept = read(finre, invalid_rows="skip")
    assert len(kept) == 1
    assert "2 invalid rows skipped" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(DataError, match="equally near"):
        locate("甲乙甲", "甲", "乙", "x")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(
        json.dumps({"text": "Acme", "head": {"start": 0, "end": 9}, "tail": {"start": 0,
                    "end": 1}, "label": "x"}) + "\n", "utf-8")  # fmt: skip
    with pytest.raises(DataError, match=r"bad.jsonl:1: head span \[0, 9\) is not inside"):
        read(jsonl)
    jsonl.write_text(
        json.dumps({"text": "Acme Co", "head": {"start": 0, "end": 4, "text": "Acm"},
                    "tail": {"start": 5, "end": 7}, "label": "x"}) + "\n", "utf-8")  # fmt: skip
    with pytest.raises(DataError, match="reads 'Acme', not its text 'Acm'"):
        read(jsonl)


# -- markers and pooling ----------------------------------------------------------------------


def test_typed_markers_are_single_tokens_and_the_head_reads_their_positions(tiny_bert):
    from bridgetune.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_bert))
    task = build_task("relation", ["no_relation", "works_for"], entity_types=["ORG", "PER"],
                      type_pairs=[["PER", "ORG"]])  # fmt: skip
    added = task.prepare_tokenizer(tokenizer)
    assert added[:4] == ["<e1>", "</e1>", "<e2>", "</e2>"] and "<e1:PER>" in added
    example = Example(
        text="bob works for acme",
        mentions=[{"start": 0, "end": 3, "type": "PER"}, {"start": 14, "end": 18, "type": "ORG"}],
    )
    assert task.marked(example) == "<e1:PER>bob</e1:PER> works for <e2:ORG>acme</e2:ORG>"
    (feature,) = task.encode([example], tokenizer, 32)
    tokens = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert tokens[:4] == ["[CLS]", "<e1:PER>", "bob", "</e1:PER>"] and tokens[-1] == "[SEP]"
    head_at, tail_at = tokens.index("<e1:PER>"), tokens.index("<e2:ORG>")
    untyped = Example(text="<e1>bob</e1> x <e2>acme</e2>")  # a type never seen: plain markers
    assert (
        tokenizer.convert_ids_to_tokens(task.encode([untyped], tokenizer, 32)[0]["input_ids"])[1]
        == "<e1>"
    )

    model = task.build_model(str(tiny_bert))
    model.resize_token_embeddings(len(tokenizer))
    ids = torch.tensor([feature["input_ids"]])
    hidden = model.encoder(input_ids=ids).last_hidden_state
    pooled = model.pooled(hidden, ids)
    expected = torch.cat([hidden[0, head_at], hidden[0, tail_at]])
    assert torch.equal(pooled[0], expected)
    assert task.allowed_pair("PER", "ORG") and not task.allowed_pair("ORG", "PER")
    assert task.allowed_pair(None, "ORG")


def test_a_long_sentence_keeps_both_entities_markers():
    markers = {901, 902, 903, 904}
    ids = list(range(100)) + [901, 5, 902] + list(range(100)) + [903, 6, 904] + list(range(50))
    near = window(ids, 210, markers)
    assert len(near) == 210 and all(m in near for m in markers)
    far = window(ids, 20, markers)
    assert len(far) == 20 and {901, 903} <= set(far) and far[0] == 901


# -- the official score -----------------------------------------------------------------------


def test_the_official_score_on_a_hand_computed_confusion_matrix():
    gold = ["C-E(e1,e2)", "C-E(e1,e2)", "C-E(e2,e1)", "M-C(e1,e2)", "M-C(e1,e2)", "Other", "Other"]
    pred = ["C-E(e1,e2)", "C-E(e2,e1)", "C-E(e2,e1)", "M-C(e1,e2)", "Other", "M-C(e1,e2)", "Other"]
    labels = sorted(set(gold))
    m = relation_metrics(gold, pred, labels, "Other")
    # C-E: 2 right (direction counts), 4 predicted as C-E (one in the wrong direction), 3 gold
    ce = m["per_relation_type"]["C-E"]
    assert (ce["correct"], ce["proposed"], ce["gold"], ce["wrong_direction"]) == (2, 3, 3, 1)
    assert ce["precision"] == pytest.approx(2 / 3) and ce["recall"] == pytest.approx(2 / 3)
    # M-C: 1 right, 2 predicted (one was Other), 2 gold
    mc = m["per_relation_type"]["M-C"]
    assert (mc["precision"], mc["recall"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["micro_precision"] == pytest.approx(3 / 5) and m["micro_recall"] == pytest.approx(
        3 / 5
    )
    assert "Other" not in m["per_relation_type"] and m["accuracy"] == pytest.approx(4 / 7)
    # every predicted right but a direction: the direction-blind score would be perfect
    flipped = relation_metrics(["C-E(e1,e2)", "Other"], ["C-E(e2,e1)", "Other"],
                               ["C-E(e1,e2)", "C-E(e2,e1)", "Other"], "Other")  # fmt: skip
    assert flipped["macro_f1"] == 0.0


# -- end to end -------------------------------------------------------------------------------

ROWS = [
    ("<e1>alice</e1> works for <e2>acme corp</e2>", "employer(e1,e2)"),
    ("<e2>acme</e2> employs <e1>carol</e1>", "employer(e1,e2)"),
    ("<e1>acme</e1> employs <e2>dave</e2>", "employer(e2,e1)"),
    ("<e1>bob</e1> visited <e2>paris</e2>", "visited(e1,e2)"),
    ("<e1>john smith</e1> visited <e2>london</e2>", "visited(e1,e2)"),
    ("<e1>张三</e1>在<e2>北京</e2>", "visited(e1,e2)"),
    ("<e1>bob</e1> and <e2>ann</e2> smiled", "Other"),
    ("<e1>李四</e1>和<e2>王五</e2>", "Other"),
]


def relation_config(model: Path, tmp_path: Path, **task) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "relations.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n"
                            for t, y in ROWS), encoding="utf-8")  # fmt: skip
    config = tiny_config(model, tmp_path / "runs", data={"train": str(data), "dev": str(data)})
    config["task"] = {"name": "relation", **task}
    config["train"]["epochs"] = 40
    return config


def test_train_save_reload_predict_and_serve(tiny_bert, tmp_path):
    from fastapi.testclient import TestClient
    from transformers import AutoModel, AutoTokenizer

    from bridgetune.config import ServeConfig
    from bridgetune.serve import create_app

    result = bridgetune.train(relation_config(tiny_bert, tmp_path))
    assert result.metrics["macro_f1"] == 1.0 and result.metrics["accuracy"] == 1.0
    meta = json.loads((result.model_dir / "bridgetune.json").read_text())
    assert meta["task"] == "relation" and meta["head"]["type"] == "relation"
    assert meta["settings"]["no_relation"] == "Other"
    assert (result.model_dir / "relation_head.safetensors").is_file()
    # plain transformers: the encoder and the tokenizer with the markers as single tokens
    encoder = AutoModel.from_pretrained(result.model_dir, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.tokenize("<e1>bob</e1>")[0] == "<e1>"
    assert encoder.get_input_embeddings().weight.shape[0] == len(tokenizer)
    texts = [t for t, _ in ROWS]
    predicted = bridgetune.predict(result.model_dir, texts)
    assert [p["label"] for p in predicted] == [y for _, y in ROWS]  # directions included
    spans = Example(text="bob visited paris",
                    mentions=[{"start": 0, "end": 3}, {"start": 12, "end": 17}])  # fmt: skip
    assert bridgetune.predict(result.model_dir, [spans])[0]["label"] == "visited(e1,e2)"
    with pytest.raises(DataError, match="no <e1> or <e2> mention"):
        bridgetune.predict(result.model_dir, ["alice visited london"])
    served = ServeConfig(feedback_db=str(tmp_path / "feedback.db"))
    with TestClient(create_app(bridgetune.load(result.model_dir), served)) as client:
        answer = client.post("/v1/predict", json={"texts": texts[:3]})
        assert answer.status_code == 200, answer.text
        assert [p["label"] for p in answer.json()["predictions"]] == [y for _, y in ROWS[:3]]
        correction = {"text": texts[6], "label": "visited(e1,e2)", "predicted": "Other"}
        assert client.post("/v1/feedback", json=correction).status_code == 201
        unknown = {"text": texts[6], "label": "founded", "predicted": "Other"}
        assert client.post("/v1/feedback", json=unknown).status_code == 422
    report = result.run_dir / "dev_confusion_matrix.png"
    assert report.is_file()


@pytest.mark.slow  # ~7 s: two more relation runs (the default suite was over 5 min)
def test_cls_pooling_and_lora(tiny_bert, tmp_path):
    cls = bridgetune.train(relation_config(tiny_bert, tmp_path / "cls", pooling="cls"))
    meta = json.loads((cls.model_dir / "bridgetune.json").read_text())
    assert meta["head"]["pooling"] == "cls"
    config = relation_config(tiny_bert, tmp_path / "lora")
    config["method"] = {"name": "lora", "r": 4}
    lora = bridgetune.train(config)
    assert lora.metrics["macro_f1"] > 0.5
    again = bridgetune.predict(lora.model_dir, [t for t, _ in ROWS])
    assert [p["label"] for p in again] == [
        p["label"] for p in bridgetune.load(lora.model_dir).predict([t for t, _ in ROWS])
    ]


def test_the_semeval_and_finre_configs_on_files_of_their_layouts(tiny_bert, tiny_xlmr_bert,
                                                                  tmp_path):  # fmt: skip
    from tests.test_examples import ROOT, _tiny

    semeval = tmp_path / "train.tsv"
    semeval.write_text("".join(
        f"{label}\tThe <e1> {a} </e1> of the <e2> {b} </e2>.\n"
        for label, a, b in [("Component-Whole(e1,e2)", "wheel", "car"),
                            ("Component-Whole(e2,e1)", "car", "wheel"), ("Other", "man", "dog")] * 8
    ), encoding="utf-8")  # fmt: skip
    result = bridgetune.train(
        ROOT / "examples/configs/semeval2010_task8.yaml",
        [*_tiny(tiny_bert, tmp_path / "semeval"), f"data.train={semeval}"],
    )
    assert "macro_f1" in result.metrics and result.metrics["no_relation"] == "Other"
    finre = tmp_path / "finre.txt"
    finre.write_text("".join(
        f"{h}\t{t}\t{r}\t{s}\n\n" for h, t, r, s in [
            ("东方航空", "上航", "合并", "东方航空AH股临时停牌传将与上航合并"),
            ("京东方", "深圳光电", "unknown", "京东方在深圳光电显示周发布规划"),
            ("甲", "乙", "合作", "甲乙甲")]  # equally near twice: skipped (invalid_rows: skip)
        * 6), encoding="utf-8")  # fmt: skip
    result = bridgetune.train(ROOT / "examples/configs/finre.yaml",
                              [*_tiny(tiny_xlmr_bert, tmp_path / "finre"),
                               f"data.train={finre}", f"data.dev={finre}",
                               "model.max_length=64"])  # fmt: skip
    assert result.metrics["no_relation"] == "unknown"
    assert set(result.metrics["per_relation_type"]) == {"合并"}
    report = (result.run_dir / "dev_report.md").read_text("utf-8")
    assert "| 合并 |" in report  # the official score's row per relation type
    from bridgetune.lifecycle.reports import cjk_font

    # Chinese labels: drawn in a Chinese font where one is installed, else by number
    assert ("#2 = 合并" in report) == (cjk_font() is None)


def test_a_corrected_relation_is_stored_as_training_reads_it():
    task = build_task("relation", ["Other", "visited(e1,e2)"])
    example = task.feedback_example("<e1:PER>张三</e1:PER>在<e2>北京</e2>", None, "visited(e1,e2)")
    assert example.text == "张三在北京" and example.label == "visited(e1,e2)"
    assert example.mentions == [
        {"start": 0, "end": 2, "type": "PER"},
        {"start": 3, "end": 5, "type": None},
    ]
    with pytest.raises(ValueError, match="no <e2> mention"):
        task.feedback_example("<e1>张三</e1>在北京", None, "visited(e1,e2)")
    with pytest.raises(ValueError, match="unknown relation 'founded'"):
        task.feedback_label("founded", None, "<e1>a</e1> <e2>b</e2>")


def test_a_carved_dev_split_pools_the_directions_of_a_relation():
    """SemEval's train set has a single Entity-Destination(e2,e1): stratified by the relation
    type, the split still holds the classes' proportions and refuses nothing."""
    assert READER.stratum(Example(text="x", label="Entity-Destination(e2,e1)")) == (
        "Entity-Destination"
    )
    assert READER.stratum(Example(text="x", label="被拥有")) == "被拥有"
