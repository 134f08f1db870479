"""Extractive QA: SQuAD-style data read and checked, long contexts in windows, answers mapped
back to characters, SQuAD/CMRC exact match and F1, unanswerable questions, predict and serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import bridgetune
from bridgetune.config import DataConfig
from bridgetune.data.schema import DataError, Example
from bridgetune.serve import create_app
from bridgetune.tasks import build_task
from bridgetune.tasks.qa import QAReader, answer_scores, qa_metrics
from tests.conftest import tiny_config, tiny_unigram_tokenizer

ARTICLES = [
    (
        "my order is late, the delivery is slow",
        [("what is late", "my order"), ("what is slow", "the delivery")],
    ),
    ("great phone and great service thanks", [("what is great", "great phone")]),
    ("张三在上海买的耳机还没到", [("谁买的耳机", "张三"), ("在哪里买的", "上海")]),
]


def span(context: str, answer: str) -> dict:
    return {"text": answer, "answer_start": context.index(answer)}


def squad(articles=ARTICLES, impossible: str | None = None) -> dict:
    data = []
    for number, (context, questions) in enumerate(articles):
        qas = [
            {"id": f"q{number}-{i}", "question": q, "answers": [span(context, a)]}
            for i, (q, a) in enumerate(questions)
        ]
        if impossible and number == 0:
            qas.append({"id": "none", "question": impossible, "answers": [], "is_impossible": True})
        data.append({"title": str(number), "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "test", "data": data}


def write_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def read(path: Path, **extra) -> list[Example]:
    return QAReader().read_file(path, DataConfig(train=str(path), **extra), True)


def test_squad_json_is_read_with_line_numbers_and_ids(tmp_path):
    examples = read(write_json(tmp_path / "qa.json", squad()))
    assert [e.id for e in examples] == ["q0-0", "q0-1", "q1-0", "q2-0", "q2-1"]
    assert examples[3].text == "谁买的耳机" and examples[3].label == [{"text": "张三", "start": 0}]
    raw = (tmp_path / "qa.json").read_text(encoding="utf-8").split("\n")
    line = int(examples[2].source.rsplit(":", 1)[1])
    assert '"q1-0"' in raw[line - 1]


def test_an_answer_that_is_not_in_its_context_names_file_line_and_question(tmp_path):
    document = squad()
    qas = document["data"][1]["paragraphs"][0]["qas"]
    qas[0]["answers"] = [{"text": "bad phone", "answer_start": 0}]
    path = write_json(tmp_path / "qa.json", document)
    raw = path.read_text(encoding="utf-8").split("\n")
    line = next(i for i, text in enumerate(raw, 1) if '"q1-0"' in text)
    message = rf"qa.json:{line}: question 'q1-0': the answer 'bad phone' is not a span"
    with pytest.raises(DataError, match=message):
        read(path)


def test_wrong_offsets_move_and_extra_references_need_not_be_spans(tmp_path):
    rows = [
        {"id": "a", "question": "what is slow", "context": "slow slow delivery",
         "answers": {"text": ["slow", "slow-ish"], "answer_start": [4, -1]}},
        {"id": "b", "question": "what is late", "context": "my order is late", "answers": []},
        {"text": "what is great", "text_pair": "great phone", "label": "great phone"},
    ]  # fmt: skip
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    examples = read(path)
    assert examples[0].label == [{"text": "slow", "start": 5}, {"text": "slow-ish", "start": None}]
    assert examples[1].label == [] and examples[2].label == [{"text": "great phone", "start": 0}]


def test_exact_match_and_f1_follow_squad_for_english_and_cmrc_for_chinese():
    assert answer_scores("The Delivery!", "delivery") == (1.0, 1.0)  # articles, case, punct
    assert answer_scores("slow delivery today", "the slow delivery")[1] == pytest.approx(0.8)
    # Chinese: characters are tokens, F1 of the longest common subsequence
    exact, f1 = answer_scores("上海市", "上海")
    assert exact == 0.0 and f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert answer_scores("张三。", "张三") == (1.0, 1.0)  # Chinese punctuation dropped
    metrics = qa_metrics([["a b"], [], []], ["a b", "", "x"])
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert metrics["no_answer_accuracy"] == 0.5 and metrics["has_answer_f1"] == 1.0


def test_long_contexts_are_windows_whose_labels_point_at_the_answer(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    context = "great phone " * 12 + "my order is late " + "thanks " * 12
    answer = {"text": "order", "start": context.index("order")}
    example = Example(text="what is late", text_pair=context, label=[answer])
    feature = build_task("qa", ["start", "end"]).encode([example], tokenizer, 24)[0]
    assert len(feature["rows"]) > 2 and feature["length"] >= 24
    inside = [row for row in feature["rows"] if row["labels"] != [0, 0]]
    assert inside, "the answer is whole in at least one window"
    for row in inside:
        first, last = row["labels"]
        assert context[row["offsets"][first][0] : row["offsets"][last][1]] == "order"


def gold_answer(task, feature: dict, example: Example) -> dict:
    """What `decode` answers for logits that put each window's start and end on its labels."""
    rows = feature["rows"]
    logits = torch.full((len(rows), max(len(r["input_ids"]) for r in rows), 2), -9.0)
    for row, window in enumerate(rows):
        first, last = window["labels"]
        logits[row, first, 0] = logits[row, last, 1] = 9.0 if first else 0.0
    return task.decode(
        logits, [feature], [Example(text=example.text, text_pair=example.text_pair)]
    )[0]


# a Chinese context of 19 characters, 上海 at 12..14; max_length 20 leaves 12 context tokens per
# window after the question (5 tokens, or 4 for the Unigram tokenizer, which writes 张三 as one
# piece) and the special tokens ([CLS] q [SEP] c [SEP], or <s> q </s></s> c </s>); windows
# overlap by 20 // 4 = 5 tokens, so the second one starts at the 8th context token
ZH_CONTEXT = "李四买的还没到很好坏了在" + "上海" + "买了很好的"
ZH_WINDOWS = {
    # WordPiece: one token per character: context tokens 0..11 and 7..18
    "wordpiece": (["李四买的还没到很好坏了在", "很好坏了在上海买了很好的"], ["上", "海"], [12, 13]),
    # Unigram: a bare ▁ starts the context (no character of its own: never an answer token),
    # 上海 is one piece: context tokens 0..11 (▁ 李 ... 了) and 7..18 (到 ... 的)
    "unigram": (["李四买的还没到很好坏了", "到很好坏了在上海买了很好的"], ["上海"], [13, 13]),
}


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_chinese_windows_by_hand_the_answer_in_the_second(kind, tiny_bert):
    from transformers import AutoTokenizer

    if kind == "wordpiece":
        tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    else:
        tokenizer = tiny_unigram_tokenizer()
    texts, pieces, labels = ZH_WINDOWS[kind]
    task = build_task("qa", ["start", "end"])
    answer = {"text": "上海", "start": 12}
    example = Example(text="张三在哪里", text_pair=ZH_CONTEXT, label=[answer])
    feature = task.encode([example], tokenizer, 20)[0]
    rows = feature["rows"]
    assert [len(row["input_ids"]) for row in rows] == [20, 20]
    spans = [[span for span in row["offsets"] if span is not None] for row in rows]
    assert [ZH_CONTEXT[inside[0][0] : inside[-1][1]] for inside in spans] == texts
    assert all(
        ZH_CONTEXT[a:b].strip() == ZH_CONTEXT[a:b] != "" for inside in spans for a, b in inside
    )
    assert [row["labels"] for row in rows] == [[0, 0], labels]  # not in the first window
    first, last = labels
    assert tokenizer.convert_ids_to_tokens(rows[1]["input_ids"][first : last + 1]) == pieces
    decoded = gold_answer(task, feature, example)
    assert (decoded["answer"], decoded["start"], decoded["end"]) == ("上海", 12, 14)
    # an answer at the context's first character: its own piece, not the bare ▁ before it
    opening = Example(text="谁", text_pair=ZH_CONTEXT, label=[{"text": "李四", "start": 0}])
    start = task.encode([opening], tokenizer, 20)[0]
    window = start["rows"][0]
    first, last = window["labels"]
    assert "".join(tokenizer.convert_ids_to_tokens(window["input_ids"][first : last + 1])) == "李四"
    assert gold_answer(task, start, opening)["answer"] == "李四"


def test_sentencepiece_answers_after_a_space_have_no_leading_space():
    """XLM-R's ▁ pieces carry the space before them in their offsets (▁john over " john"): the
    answer's span and text start at its first letter, and the bare ▁ pieces between spaced
    words are never an answer's end."""
    tokenizer = tiny_unigram_tokenizer()
    context = "bob 在 北京 买的 手机 还没到 , john smith 在 上海 买了 耳机"
    start = context.index("john smith")
    example = Example(
        text="what", text_pair=context, label=[{"text": "john smith", "start": start}]
    )
    task = build_task("qa", ["start", "end"])
    feature = task.encode([example], tokenizer, 20)[0]
    rows = feature["rows"]
    # 27 context pieces, 15 per window after <s> ▁what </s></s> ... </s>, 5 overlapping: windows
    # over pieces 0..14, 10..24 and 20..26
    texts = [
        context[spans[0][0] : spans[-1][1]]
        for spans in ([s for s in row["offsets"] if s is not None] for row in rows)
    ]
    assert texts == [
        "bob 在 北京 买的 手机 还没到",
        "还没到 , john smith 在 上海 买了",
        "上海 买了 耳机",
    ]
    assert [row["labels"] for row in rows] == [[0, 0], [10, 11], [0, 0]]
    pieces = tokenizer.convert_ids_to_tokens(rows[1]["input_ids"])
    assert pieces[10:12] == ["▁john", "▁smith"]
    assert rows[1]["offsets"][10:12] == [(start, start + 4), (start + 5, start + 10)]
    assert all(span is None for piece, span in zip(pieces, rows[1]["offsets"]) if piece == "▁")
    decoded = gold_answer(task, feature, example)
    assert (decoded["answer"], decoded["start"], decoded["end"]) == (
        "john smith",
        start,
        start + 10,
    )


def test_qa_trains_predicts_offsets_and_serves(tiny_bert, tmp_path):
    data = write_json(tmp_path / "qa.json", squad())
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="qa",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 40, "lr": 3e-3},
    )
    result = bridgetune.train(config)
    # a 32-wide random model learns where answers sit, not yet which question asks for which
    assert result.metrics["f1"] > 0.5
    predictor = bridgetune.load(result.model_dir)
    examples = read(data)
    for example, answer in zip(examples, predictor.predict(examples)):
        assert (
            answer["answer"]
            and example.text_pair[answer["start"] : answer["end"]] == answer["answer"]
        )
    assert bridgetune.evaluate(result.model_dir, data)["f1"] == result.metrics["f1"]
    from transformers import AutoModelForQuestionAnswering

    plain = AutoModelForQuestionAnswering.from_pretrained(result.model_dir)
    assert plain.config.num_labels == 2
    context = ARTICLES[2][0]
    local = predictor.predict([("谁买的耳机", context)])[0]
    with TestClient(create_app(predictor)) as client:
        assert client.get("/v1/info").json()["output"] == "answer"
        body = {"texts": ["谁买的耳机"], "text_pairs": [context]}
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 200, response.text
        served = response.json()["predictions"][0]
        assert (served["answer"], served["start"], served["end"]) == (
            local["answer"],
            local["start"],
            local["end"],
        )
        assert context[served["start"] : served["end"]] == served["answer"]
        missing = client.post("/v1/predict", json={"texts": ["谁买的耳机"]})
        assert missing.status_code == 422


def test_the_best_span_over_all_windows_is_mapped_to_characters(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    context = "great phone " * 12 + "my order is late " + "thanks " * 12
    example = Example(text="what is late", text_pair=context)
    task = build_task("qa", ["start", "end"])
    feature = task.encode([example], tokenizer, 24)[0]
    rows = feature["rows"]
    logits = torch.zeros(len(rows), 24, 2)
    target = next(
        i
        for i, row in enumerate(rows)
        if row["offsets"].count(None) < 24
        and any(
            span is not None and context[span[0] : span[1]] == "order" for span in row["offsets"]
        )
    )
    position = next(
        i
        for i, span in enumerate(rows[target]["offsets"])
        if span is not None and context[span[0] : span[1]] == "order"
    )
    logits[target, position, 0] = logits[target, position + 2, 1] = 9.0  # "order is late"
    logits[0, 1, 0] = logits[0, 1, 1] = 20.0  # a question token: never an answer
    answer = task.decode(logits, [feature], [example])[0]
    assert answer["answer"] == "order is late"
    assert context[answer["start"] : answer["end"]] == "order is late"
    assert answer["score"] == pytest.approx(18.0)


def test_unanswerable_questions_get_a_threshold_tuned_on_dev():
    task = build_task("qa", ["start", "end"])
    predictions = [
        {"answer": "x", "start": 0, "end": 1, "score": 5.0, "null_score": 1.0},
        {"answer": "y", "start": 0, "end": 1, "score": 1.0, "null_score": 4.0},
    ]
    examples = [
        Example(text="q", text_pair="x", label=[{"text": "x", "start": 0}]),
        Example(text="q", text_pair="y", label=[]),
    ]
    decided = task.calibrate(predictions, examples)
    assert [p["answer"] for p in decided] == ["x", ""]
    assert decided[1]["best_span"] == {"text": "y", "start": 0, "end": 1}
    assert task.threshold is not None and -4.0 <= task.threshold < 3.0
    assert task.metrics(decided, examples)["f1"] == 1.0
    answerable_only = build_task("qa", ["start", "end"])
    assert answerable_only.calibrate(predictions, examples[:1] * 2)[1]["answer"] == "y"
    assert answerable_only.threshold is None  # trained without unanswerable: always answers


def test_options_qa_cannot_take_are_refused(tiny_bert, tmp_path):
    from bridgetune.config import ConfigError

    data = write_json(tmp_path / "qa.json", squad())
    config = tiny_config(tiny_bert, tmp_path / "runs", task="qa", data={"train": str(data)})
    with pytest.raises(ConfigError, match="prepends virtual tokens"):
        bridgetune.as_config({**config, "method": {"name": "prompt"}})
    with pytest.raises(ConfigError, match="apply to classification, not question answering"):
        bridgetune.as_config({**config, "train": {**config["train"], "label_smoothing": 0.1}})


def test_answer_feedback_exports_as_training_data_the_reader_takes(tmp_path):
    from bridgetune.lifecycle.store import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.db")
    task = build_task("qa", ["start", "end"])
    context = "the delivery is slow"
    for question, answer in (("what is slow", "the delivery"), ("who called", "")):
        label = task.feedback_label(answer, None, question)
        store.add(text=question, text_pair=context, label=label, task="qa", model_version="v1")
    store.close()
    with pytest.raises(ValueError, match="correct answer text"):
        task.feedback_label(None, None, "q")
    exported = tmp_path / "more.jsonl"
    assert bridgetune.export_feedback(tmp_path / "feedback.db", exported) == 2
    examples = read(exported)
    assert examples[0].label == [{"text": "the delivery", "start": 0}]
    assert examples[1].label == []  # the correction says: no answer in this context
