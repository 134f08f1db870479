"""Every encoder task with a BERT that reads XLM-R's SentencePiece vocabulary (the shape of
multilingual-e5-small: `<s>`=0, `<pad>`=1, `</s>`=2, no token types), on Chinese data: the
tasks encode with the tokenizer's own special tokens and padding; each task trains, saves and
loads back (Predictor, and plain transformers on the tokenizer's own encoding); NER with a CRF,
gazetteer features and rules on Chinese sentences; question answering over windows of long
contexts answers exact substrings; contrastive few-shot and zero-shot embed with it. (The
method x task matrix on this model is in tests/test_methods.py, the NER alignment in
tests/test_ner_alignment.py, the hand-checked QA windows in tests/test_qa.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bridgetune
from bridgetune.data.schema import Example
from bridgetune.heads import output_logits
from bridgetune.tasks import TASKS, build_task
from tests.conftest import ZH_SENTENCES, tiny_config, tiny_unigram_tokenizer, write_csv

# Chinese from the characters of the tiny SentencePiece vocabulary (tests/conftest.py: CJK)
SENTIMENT = [
    ("耳机很好", "positive"),
    ("手机坏了", "negative"),
    ("今天买的手机很好", "positive"),
    ("耳机还没到", "negative"),
    ("在上海买的耳机很好", "positive"),
    ("北京的手机坏了", "negative"),
]
PAIRS = [
    ("手机坏了", "耳机坏了", "same"),
    ("手机还没到", "耳机还没到", "same"),
    ("今天很好", "明天很好", "same"),
    ("手机坏了", "今天很好", "different"),
    ("耳机还没到", "张三在上海", "different"),
    ("明天很好", "李四的手机坏了", "different"),
]
TOPICS = [
    ("手机坏了", "product"),
    ("今天还没到", "delivery"),
    ("坏了的耳机还没到", "delivery|product"),
    ("耳机坏了", "product"),
    ("手机还没到", "delivery"),
    ("买的手机坏了还没到", "delivery|product"),
]
SCORES = [(a, b, 4.0 if label == "same" else 0.5) for a, b, label in PAIRS]
GROUPS = [
    ("q1", "手机", "手机坏了", 1),
    ("q1", "手机", "今天很好", 0),
    ("q2", "上海", "张三在上海", 1),
    ("q2", "上海", "耳机坏了", 0),
]
PAIR_COLUMNS = {"text_column": "a", "text_pair_column": "b"}
# task: (rows, header, data options)
DATA = {
    "classification": (SENTIMENT, ["text", "label"], {}),
    "pair": (PAIRS, ["a", "b", "label"], PAIR_COLUMNS),
    "multilabel": (TOPICS, ["text", "label"], {}),
    "regression": (SCORES, ["a", "b", "score"], {**PAIR_COLUMNS, "label_column": "score"}),
    "ranking": (
        GROUPS,
        ["qid", "query", "item", "rel"],
        {
            "text_column": "query",
            "text_pair_column": "item",
            "label_column": "rel",
            "group_column": "qid",
        },
    ),
}
ENCODER_TASKS = ["classification", "pair", "multilabel", "regression", "ranking", "ner", "qa"]


def sample(task: str) -> list[Example]:
    """A Chinese and an English input of task `task`."""
    if task == "ner":
        return [Example(text="张三在上海买的耳机"), Example(text="john smith visited paris")]
    if task == "ranking":
        return [Example(text="手机", candidates=["手机坏了", "今天很好"]),
                Example(text="my order", candidates=["my order is late"])]  # fmt: skip
    pair = TASKS.get(task).takes_pairs
    return [
        Example(text="耳机还没到", text_pair="手机坏了" if pair else None),
        Example(text="my order is late", text_pair="the delivery is slow" if pair else None),
    ]


@pytest.mark.parametrize("task", ENCODER_TASKS)
def test_tasks_encode_with_the_tokenizers_special_tokens_padding_and_no_token_types(task):
    """XLM-R's layout, not BERT's: `<s> A </s>` and `<s> A </s></s> B </s>`, padded with 1
    (a pad of 0 would be `<s>`), no token_type_ids (BERT's embeddings then use type 0)."""
    tokenizer = tiny_unigram_tokenizer()
    labels = ["O", "B-X", "I-X"] if task == "ner" else ["start", "end"] if task == "qa" else ["a"]
    kind = build_task(task, labels)
    features = kind.encode(sample(task), tokenizer, 32)
    batch = kind.collate(features, tokenizer.pad_token_id)
    assert "token_type_ids" not in batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (ids[mask == 0] == 1).all() and (mask == 0).any()  # padded, with <pad>
    for row, length in zip(ids.tolist(), mask.sum(1).tolist()):
        real = row[:length]
        assert real[0] == 0 and real[-1] == 2 and 1 not in real  # <s> ... </s>
        separators = [i for i, token in enumerate(real) if token == 2]
        if TASKS.get(task).takes_pairs or task == "ranking":
            assert len(separators) == 3 and separators[1] == separators[0] + 1  # </s></s>
        else:
            assert separators == [length - 1]


def plain_logits_match(model_dir: Path, examples: list[Example]) -> None:
    """The saved directory in plain transformers, fed by the saved tokenizer's own encoding
    (no token_type_ids), gives the logits of bridgetune's loaded model."""
    import transformers

    predictor = bridgetune.load(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples] if examples[0].text_pair is not None else None
    batch = tokenizer(texts, pairs, padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}
    auto_class = getattr(transformers, predictor.task.auto_class)
    plain = auto_class.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ours = output_logits(predictor.model(**batch))
        assert torch.allclose(output_logits(plain(**batch)), ours, atol=1e-5)


@pytest.mark.parametrize("task", list(DATA))
def test_each_text_task_trains_saves_and_loads_back(task, tiny_xlmr_bert, tmp_path):
    rows, header, options = DATA[task]
    path = write_csv(tmp_path / f"{task}.csv", header, rows)
    data = {"train": str(path), "dev": str(path), **options}
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task=task, data=data,
                         train={"epochs": 6, "lr": 1e-2})  # fmt: skip
    result = bridgetune.train(config)
    metric = TASKS.get(task).default_metric
    assert bridgetune.evaluate(result.model_dir, path)[metric] == result.metrics[metric]
    if task == "ranking":  # (query, candidate) rows
        examples = [Example(text=query, text_pair=item) for _, query, item, _ in rows]
        inputs = sample(task)[:1]
    else:
        examples = [Example(text=r[0], text_pair=r[1] if options else None) for r in rows]
        inputs = examples[:1]
    plain_logits_match(result.model_dir, examples)
    predictions = bridgetune.load(result.model_dir).predict(inputs)
    TASKS.get(task).prediction.model_validate(predictions[0])


def zh_texts() -> list[str]:
    return ["".join(ch for ch, _ in sentence) for sentence in ZH_SENTENCES]


def test_chinese_ner_with_a_crf_trains_and_reloads(tiny_xlmr_bert, zh_bmes, tmp_path):
    data = {"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"}
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task={"name": "ner", "crf": True},
                         data=data, train={"epochs": 40, "lr": 5e-3})  # fmt: skip
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] == 1.0  # whole pieces (上海) under the CRF's transitions
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["head"]["type"] == "crf"
    predictions = bridgetune.predict(result.model_dir, zh_texts())
    assert bridgetune.load(result.model_dir).predict(zh_texts()) == predictions
    city = [(e["type"], e["text"], e["start"]) for e in predictions[0]["entities"]]
    assert ("CITY", "上海", 2) in city and predictions[0]["tags"][2:4] == ["B-CITY", "E-CITY"]
    assert bridgetune.evaluate(result.model_dir, zh_bmes)["entity_f1"] == 1.0


def test_gazetteer_flags_reach_whole_pieces_by_hand():
    """A SentencePiece piece over several characters carries the flags of all of them: 上海 as
    a whole name is B and E of CITY (a piece that only begins a longer name would lack E)."""
    tokenizer = tiny_unigram_tokenizer()
    labels = ["O", "B-CITY", "E-CITY", "B-PRODUCT", "E-PRODUCT"]
    lexicon = {"CITY": "上海\n北京", "PRODUCT": "耳机"}
    task = build_task("ner", labels, tag_scheme="BMES", lexicon=lexicon)
    [feature] = task.encode([Example(text="我在上海买的耳机")], tokenizer, 32)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert pieces == ["<s>", "▁我", "在", "上海", "买", "的", "耳机", "</s>"]
    # CITY's flags are 0..3 (B, M, E, S), PRODUCT's 4..7
    assert feature["lexicon"] == [[3, 0], [3, 2], [6, 4], [6, 6]]


def test_chinese_ner_with_gazetteers_and_rules(tiny_xlmr_bert, zh_bmes, tmp_path):
    from fastapi.testclient import TestClient

    from bridgetune.serve import create_app

    data = {"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"}
    gazetteers = {"CITY": ["上海", "北京"], "PRODUCT": ["耳机"]}
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task="ner", data=data,
                         train={"epochs": 30, "lr": 5e-3},
                         knowledge={"gazetteers": gazetteers})  # fmt: skip
    config["rules"] = [
        {"action": "override", "type": "PERSON", "words": ["李四"], "name": "people"},
        {"action": "veto", "type": "CITY", "words": ["北京"], "name": "not_beijing"},
    ]
    result = bridgetune.train(config)
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["head"]["type"] == "lexicon" and meta["settings"]["rules"][0]["name"] == "people"
    text = "李四在北京买的耳机"
    [predicted] = bridgetune.load(result.model_dir).predict([text])
    found = {(e["type"], e["start"], e["end"], e["source"]) for e in predicted["entities"]}
    assert ("PERSON", 0, 2, "rule") in found  # the rule, on the characters of the text
    assert not any(kind == "CITY" and start == 3 for kind, start, *_ in found)  # vetoed
    assert predicted["tags"][:2] == ["B-PERSON", "E-PERSON"] and len(predicted["tags"]) == 9
    assert all(text[e["start"] : e["end"]] == e["text"] for e in predicted["entities"])
    with TestClient(create_app(bridgetune.load(result.model_dir))) as client:
        served = client.post("/v1/predict", json={"texts": [text]}).json()["predictions"][0]
    assert served["entities"] == predicted["entities"]
    assert (
        bridgetune.evaluate(result.model_dir, zh_bmes)["entity_f1"] == result.metrics["entity_f1"]
    )


# long contexts (40-69 characters) read in 2-3 windows of max_length 32: the answers sit in the
# first, the second and third, or the first and second window; one among spaced English words
QA = [
    ("我的手机还没到很好。" * 3 + "张三今天在上海买了耳机。", "张三在哪里买了耳机", "上海"),
    ("李四在北京买了手机。" + "我的耳机还没到很好。" * 3, "李四在哪里买了手机", "北京"),
    ("我的耳机还没到很好。" * 2 + "张三明天在北京买手机。" + "我的手机很好。" * 2,
     "张三在哪里买手机", "北京"),
    ("我的手机还没到 , bob visited paris on monday and the phone was late , 我的耳机很好",
     "bob 在哪里", "paris"),
]  # fmt: skip


def test_qa_over_windows_of_long_chinese_contexts(tiny_xlmr_bert, tmp_path):
    paragraphs = [
        {"context": context, "qas": [{"id": f"q{i}", "question": question,
                                      "answers": [{"text": answer,
                                                   "answer_start": context.index(answer)}]}]}
        for i, (context, question, answer) in enumerate(QA)
    ]  # fmt: skip
    path = tmp_path / "qa.json"
    path.write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}, ensure_ascii=False), "utf-8")
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task="qa",
                         data={"train": str(path), "dev": str(path)},
                         train={"epochs": 20, "lr": 5e-3})  # fmt: skip
    result = bridgetune.train(config)
    assert result.metrics["exact_match"] == 1.0
    predictor = bridgetune.load(result.model_dir)
    examples = [Example(text=question, text_pair=context) for context, question, _ in QA]
    windows = [len(f["rows"]) for f in predictor.task.encode(examples, predictor.tokenizer, 32)]
    assert windows == [3, 3, 3, 2]
    answers = predictor.predict([(question, context) for context, question, _ in QA])
    for (context, _, gold), answer in zip(QA, answers):  # exact characters, no ▁'s space
        assert answer["answer"] == gold == context[answer["start"] : answer["end"]]
    assert bridgetune.evaluate(result.model_dir, path)["f1"] == result.metrics["f1"]
    plain_logits_match(result.model_dir, examples[3:])


def test_contrastive_fewshot_and_zeroshot_embed_with_the_sentencepiece_encoder(
    tiny_xlmr_bert, tmp_path
):
    """multilingual-e5 is an embedding model: its few-shot (SetFit-style) and zero-shot heads
    mean-pool the encoder over the tokenizer's own encoding (no token types)."""
    from bridgetune.heads.embedding import embed_texts

    path = write_csv(tmp_path / "zh.csv", ["text", "label"], SENTIMENT)
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs",
                         data={"train": str(path), "dev": str(path)},
                         train={"epochs": 2, "lr": 5e-3, "batch_size": 8},
                         fewshot={"iterations": 4})  # fmt: skip
    result = bridgetune.fewshot(config)
    texts = [text for text, _ in SENTIMENT]
    loaded = bridgetune.load(result.model_dir).predict(texts)
    right = sum(p["label"] == gold for p, (_, gold) in zip(loaded, SENTIMENT))
    assert right / len(texts) == pytest.approx(result.metrics["accuracy"])
    descriptions = {"negative": "坏了 还没到", "positive": "很好"}
    directory = bridgetune.zeroshot(
        ["negative", "positive"], tmp_path / "zs", model=str(tiny_xlmr_bert),
        descriptions=descriptions,
    )  # fmt: skip
    predictor = bridgetune.load(directory)
    encoder = predictor.model.embed.encoder
    rows = embed_texts(encoder, predictor.tokenizer, list(descriptions.values()), 128)
    cosine = embed_texts(encoder, predictor.tokenizer, texts, 128) @ rows.T
    expected = [["negative", "positive"][i] for i in cosine.argmax(-1).tolist()]
    assert [p["label"] for p in predictor.predict(texts)] == expected
