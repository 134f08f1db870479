"""Rules at prediction time (bridgetune.knowledge.rules): what regexes and word lists match,
add/override/veto of entities and labels on hand-made predictions, their precedence (top to
bottom), and models trained with rules that apply them in predict and serve, saying `source`."""

from __future__ import annotations

import json

import pytest

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.knowledge.rules import apply_to_entities, apply_to_label, loaded, matches
from tests.conftest import tiny_config

TEXT = "订单#48213的耳机在上海仓库"


def entity(kind: str, start: int, end: int) -> dict:
    return {"type": kind, "start": start, "end": end, "text": TEXT[start:end]}


def test_patterns_and_words_match_longest_first_without_overlaps(tmp_path):
    words = tmp_path / "cities.txt"
    words.write_text("# cities\n上海\n上海仓库\n", "utf-8")
    cities = {"action": "add", "type": "CITY", "words_file": str(words), "name": "cities"}
    rules = loaded([{"action": "add", "type": "ORDER", "pattern": r"#\d+"}, cities])
    assert rules[0]["name"] == "rules[0]" and rules[1]["words"] == ["上海仓库", "上海"]
    assert matches(rules[0], TEXT) == [(2, 8)]
    assert matches(rules[1], TEXT) == [(12, 16)]  # the longer phrase wins the overlap
    with pytest.raises(ValueError, match="does not exist"):
        loaded([{"action": "add", "type": "X", "words_file": str(tmp_path / "none.txt")}])


def test_add_override_and_veto_entities_in_list_order():
    model = [entity("PRODUCT", 9, 11), entity("ORDER", 2, 5)]  # the order number cut short
    rules = loaded([
        {"action": "add", "type": "CITY", "words": ["上海"]},          # nothing there: added
        {"action": "add", "type": "ORDER", "pattern": r"#\d+"},       # overlaps: not added
        {"action": "override", "type": "ORDER", "pattern": r"#\d+", "name": "orders"},
        {"action": "veto", "type": "PRODUCT", "words": ["耳机"]},      # removed
    ])  # fmt: skip
    found = apply_to_entities(rules, TEXT, model)
    assert [(e["type"], e["text"], e["source"], e.get("rule")) for e in found] == [
        ("ORDER", "#48213", "rule", "orders"),
        ("CITY", "上海", "rule", "rules[0]"),
    ]
    # precedence: a veto first, then an add of the same words, puts it back as a rule entity
    reordered = loaded([{"action": "veto", "words": ["耳机"]},
                        {"action": "add", "type": "PRODUCT", "words": ["耳机"]}])  # fmt: skip
    again = apply_to_entities(reordered, TEXT, model)
    assert [(e["type"], e["source"]) for e in again] == [("ORDER", "model"), ("PRODUCT", "rule")]


def test_override_and_veto_labels():
    prediction = {"label": "refund", "score": 0.6, "truncated": False,
                  "scores": {"refund": 0.6, "shipping": 0.3, "other": 0.1}}  # fmt: skip
    rules = loaded([{"action": "override", "label": "shipping", "pattern": "物流|快递"}])
    moved = apply_to_label(rules, "我的快递到哪了", prediction)
    assert (moved["label"], moved["score"], moved["source"]) == ("shipping", 0.3, "rule")
    assert apply_to_label(rules, "退款", prediction)["source"] == "model"
    veto = loaded([{"action": "veto", "label": "refund", "words": ["不要退款"]}])
    kept = apply_to_label(veto, "我不要退款，只想换货", prediction)
    assert (kept["label"], kept["rule"]) == ("shipping", "rules[0]")


def test_a_ner_model_with_rules_applies_them_in_predict_and_serve(tiny_bert, ner_conll, tmp_path):
    from fastapi.testclient import TestClient

    from bridgetune.config import ServeConfig
    from bridgetune.serve.app import create_app

    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(ner_conll), "dev": str(ner_conll)},
                         train={"epochs": 2})  # fmt: skip
    config["rules"] = [{"action": "override", "type": "LOC", "words": ["atlantis"],
                        "name": "places"}]  # fmt: skip
    result = bridgetune.train(config)
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["settings"]["rules"][0]["name"] == "places"
    predicted = bridgetune.load(result.model_dir).predict(["bob visited atlantis"])[0]
    place = [e for e in predicted["entities"] if e["text"] == "atlantis"]
    assert place == [{"type": "LOC", "start": 12, "end": 20, "text": "atlantis",
                      "source": "rule", "rule": "places"}]  # fmt: skip
    assert predicted["tags"][2] == "B-LOC"
    assert all(e["source"] in ("model", "rule") for e in predicted["entities"])
    app = create_app(
        bridgetune.load(result.model_dir), ServeConfig(feedback_db=str(tmp_path / "f.db"))
    )
    with TestClient(app) as client:
        served = client.post("/v1/predict", json={"texts": ["bob visited atlantis"]}).json()
    assert served["predictions"][0]["entities"] == predicted["entities"]


def test_classification_rules_and_the_mistakes_a_config_can_make(
    tiny_bert, sentiment_csv, tmp_path
):
    config = tiny_config(tiny_bert, tmp_path / "runs",
                         data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
                         train={"epochs": 1})  # fmt: skip
    config["rules"] = [{"action": "override", "label": "negative", "pattern": "broken"}]
    result = bridgetune.train(config)
    predicted = bridgetune.load(result.model_dir).predict(["it arrived broken", "fine"])
    assert predicted[0]["label"] == "negative" and predicted[0]["source"] == "rule"
    assert predicted[1]["source"] == "model"

    mistakes = {
        "a rule needs a pattern": [{"action": "override", "label": "negative"}],
        "is not a valid regex": [{"action": "override", "label": "negative", "pattern": "("}],
    }
    for message, rules in mistakes.items():
        with pytest.raises(ConfigError, match=message):
            bridgetune.train({**config, "rules": rules, "name": "bad"})
    with pytest.raises(ValueError, match="overrides or vetoes one of the labels"):
        bridgetune.train({**config, "name": "bad", "rules": [{"action": "add", "label": "negative",
                                                       "words": ["x"]}]})  # fmt: skip
    with pytest.raises(ConfigError, match="does not take rules"):
        bridgetune.train({**config, "name": "bad", "task": "multilabel"})
