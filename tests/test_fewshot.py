"""Few-shot and zero-shot: k-shot sampling, pair generation, contrastive training, zero-shot from
label descriptions, and the model directories they write (predict, transformers, serve)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import SENTIMENT, tiny_config, write_csv

import bridgetune
from bridgetune.config import ConfigError
from bridgetune.data.fewshot import contrastive_pairs, jaccard, sample_k_shot
from bridgetune.data.schema import DataError, Example
from bridgetune.heads.embedding import embed_texts
from bridgetune.inference.predictor import Predictor
from bridgetune.recipes.fewshot import fewshot
from bridgetune.recipes.zeroshot import zeroshot

TOPICS = [
    ("my order is late", ["delivery"]),
    ("refund please", ["billing"]),
    ("refund for the late order", ["billing", "delivery"]),
    ("reset my password", ["account"]),
    ("change email and refund", ["account", "billing"]),
    ("package arrived broken", ["delivery"]),
    ("where is my refund", ["billing"]),
    ("password reset and late delivery", ["account", "delivery"]),
]


def _examples(rows: list[tuple[str, str]]) -> list[Example]:
    return [Example(text=text, label=label) for text, label in rows]


def test_k_shot_is_stratified_seeded_and_ordered() -> None:
    examples = _examples([(f"{text} {n}", label) for n in range(3) for text, label in SENTIMENT])
    first = sample_k_shot(examples, 4, seed=1)
    assert Counter(e.label for e in first) == {"negative": 4, "positive": 4}
    assert first == sample_k_shot(examples, 4, seed=1)
    assert first != sample_k_shot(examples, 4, seed=2)
    positions = [examples.index(e) for e in first]
    assert positions == sorted(positions)  # original order kept


def test_k_shot_multilabel_and_ner_cover_every_label() -> None:
    examples = [Example(text=t, label=labels) for t, labels in TOPICS]
    sample = sample_k_shot(examples, 2, seed=0)
    counts = Counter(label for e in sample for label in e.label)
    assert all(counts[label] >= 2 for label in ("account", "billing", "delivery"))
    sentences = [
        Example(text="a b", tokens=["a", "b"], tags=["B-PER", "O"]),
        Example(text="c d", tokens=["c", "d"], tags=["B-LOC", "O"]),
        Example(text="e f", tokens=["e", "f"], tags=["B-PER", "B-LOC"]),
        Example(text="g h", tokens=["g", "h"], tags=["O", "O"]),
    ]
    chosen = sample_k_shot(sentences, 1, seed=0)
    types = {tag[2:] for e in chosen for tag in e.tags if tag != "O"}
    assert types == {"PER", "LOC"} and len(chosen) <= 2


def test_k_larger_than_a_class_is_a_clear_error() -> None:
    examples = _examples([("a", "x"), ("b", "x"), ("c", "x"), ("d", "y")])
    with pytest.raises(DataError, match=r"few_shot_k=2: label 'y' has only 1 training example"):
        sample_k_shot(examples, 2, seed=0)


def test_contrastive_pairs_single_label() -> None:
    examples = _examples(SENTIMENT)
    pairs = contrastive_pairs(examples, iterations=3, seed=0)
    assert len(pairs) == 3 * 2 * len(examples)
    for i, j, target in pairs:
        same = examples[i].label == examples[j].label
        assert target == (1.0 if same else 0.0)
        assert i != j
    assert Counter(t for *_, t in pairs) == {1.0: 3 * len(examples), 0.0: 3 * len(examples)}
    assert pairs == contrastive_pairs(examples, iterations=3, seed=0)


def test_contrastive_pairs_use_every_distinct_pair_before_repeating_one() -> None:
    examples = _examples(SENTIMENT)  # 5 + 5: 20 distinct positive pairs, 25 negative ones
    pairs = contrastive_pairs(examples, iterations=2, seed=3)
    positives = {frozenset((i, j)) for i, j, target in pairs if target == 1.0}
    negatives = {frozenset((i, j)) for i, j, target in pairs if target == 0.0}
    assert len(positives) == 20 and len(negatives) == 20  # 20 wanted of each, none repeated


def test_contrastive_pairs_multilabel_targets_are_jaccard() -> None:
    examples = [Example(text=t, label=labels) for t, labels in TOPICS]
    for i, j, target in contrastive_pairs(examples, iterations=2, seed=0):
        assert target == jaccard(frozenset(examples[i].label), frozenset(examples[j].label))
    assert jaccard(frozenset({"a", "b"}), frozenset({"b"})) == 0.5
    with pytest.raises(DataError, match="at least two different labels"):
        contrastive_pairs(_examples([("a", "x"), ("b", "x")]), 1, 0)


def test_few_shot_k_works_with_full_fine_tuning(tiny_bert, sentiment_csv, tmp_path) -> None:
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv), "few_shot_k": 2},
        train={"epochs": 1},
    )
    steps: list[int] = []
    bridgetune.train(config, on_step=lambda state: steps.append(state.global_step))
    assert len(steps) == 1  # 4 examples in one batch of 4


def _fewshot_config(model: Path, tmp_path: Path, data: Path, **fewshot_keys) -> dict:
    config = tiny_config(
        model,
        tmp_path / "runs",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 2, "lr": 5e-3, "batch_size": 8},
        fewshot={"iterations": 4, **fewshot_keys},
    )
    config["name"] = "fewshot"
    return config


@pytest.mark.parametrize("head", ["logistic", "linear"])
def test_contrastive_fewshot_learns_and_round_trips(tiny_bert, sentiment_csv, tmp_path, head):
    from transformers import AutoModel

    result = fewshot(_fewshot_config(tiny_bert, tmp_path, sentiment_csv, head=head))
    assert result.metrics["accuracy"] >= 0.9
    meta = json.loads((result.model_dir / "bridgetune.json").read_text())
    assert meta["method"] == "contrastive" and meta["head"]["type"] == "embedding"
    assert (result.model_dir / "head.safetensors").is_file()
    texts = [text for text, _ in SENTIMENT]
    loaded = Predictor.load(result.model_dir).predict(texts)
    right = sum(p["label"] == gold for p, (_, gold) in zip(loaded, SENTIMENT))
    assert right / len(texts) == pytest.approx(result.metrics["accuracy"])  # dev is this data
    AutoModel.from_pretrained(result.model_dir)  # the encoder is plain transformers
    # `fewshot` has no --resume: its stages keep no checkpoints once they are done
    assert not list(result.run_dir.glob("checkpoint*"))


def test_contrastive_train_keys_left_unset_take_setfit_values(tiny_bert, sentiment_csv, tmp_path):
    import yaml

    from bridgetune.recipes.fewshot import CONTRASTIVE_TRAIN_DEFAULTS

    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        fewshot={"iterations": 2},
    )
    config["train"] = {"lr": 5e-3}  # set: kept; epochs, batch size, warmup, decay: SetFit's
    result = fewshot(config)
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]
    assert saved["lr"] == 5e-3
    assert {k: saved[k] for k in CONTRASTIVE_TRAIN_DEFAULTS if k != "lr"} == {
        "epochs": 1,
        "batch_size": 16,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
    }


def test_fewshot_interrupted_says_nothing_was_saved(tiny_bert, sentiment_csv, tmp_path):
    import os
    import signal

    from bridgetune.training.loop import Loop, TrainingInterrupted

    original = Loop.optimizer_step

    def step_then_ctrl_c(self):
        original(self)
        if self.state.global_step == self.steps_per_epoch + 1:
            # the first epoch's evaluation kept its best weights there
            assert (self.checkpoint_dir / "best.safetensors").is_file()
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, handled by the loop

    config = _fewshot_config(tiny_bert, tmp_path, sentiment_csv)
    with mock.patch.object(Loop, "optimizer_step", step_then_ctrl_c):
        with pytest.raises(TrainingInterrupted, match="nothing was saved") as stop:
            fewshot(config)
    assert stop.value.checkpoint is None
    assert not list((tmp_path / "runs").rglob("*.safetensors"))


def test_logistic_head_equals_sklearn(tiny_bert, sentiment_csv, tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    result = fewshot(_fewshot_config(tiny_bert, tmp_path, sentiment_csv))
    predictor = Predictor.load(result.model_dir)
    texts = [text for text, _ in SENTIMENT]
    embeddings = embed_texts(predictor.model.embed.encoder, predictor.tokenizer, texts, 32)
    labels = [predictor.task.labels.index(label) for _, label in SENTIMENT]
    reference = LogisticRegression(max_iter=1000, random_state=0).fit(embeddings.numpy(), labels)
    expected = reference.predict_proba(embeddings.numpy())
    predictions = predictor.predict(texts)
    got = [[p["scores"][label] for label in predictor.task.labels] for p in predictions]
    assert torch.tensor(got) == pytest.approx(torch.tensor(expected, dtype=torch.float), abs=1e-4)


def test_contrastive_multilabel(tiny_bert, tmp_path) -> None:
    data = write_csv(
        tmp_path / "topics.csv", ["text", "label"], [(t, "|".join(ls)) for t, ls in TOPICS]
    )
    config = _fewshot_config(tiny_bert, tmp_path, data)
    config["task"] = "multilabel"
    result = fewshot(config)
    predictions = Predictor.load(result.model_dir).predict(["refund please"])
    assert set(predictions[0]["scores"]) == {"account", "billing", "delivery"}
    assert "f1_micro" in result.metrics


def test_fewshot_rejects_ner(tiny_bert, ner_conll, tmp_path) -> None:
    config = _fewshot_config(tiny_bert, tmp_path, ner_conll)
    config["task"] = "ner"
    with pytest.raises(ConfigError, match="fewshot supports the tasks"):
        fewshot(config)


def test_zeroshot_from_label_descriptions(tiny_bert, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from bridgetune.config import ServeConfig
    from bridgetune.serve import create_app

    descriptions = {"negative": "broken bad late", "positive": "love good fast"}
    directory = zeroshot(
        ["negative", "positive"], tmp_path / "zs", model=str(tiny_bert), descriptions=descriptions
    )
    predictor = Predictor.load(directory)
    texts = [text for text, _ in SENTIMENT]
    encoder = predictor.model.embed.encoder
    rows = embed_texts(encoder, predictor.tokenizer, list(descriptions.values()), 128)
    cosine = embed_texts(encoder, predictor.tokenizer, texts, 128) @ rows.T
    expected = [["negative", "positive"][i] for i in cosine.argmax(-1).tolist()]
    assert [p["label"] for p in predictor.predict(texts)] == expected
    meta = json.loads((directory / "bridgetune.json").read_text())
    assert meta["zeroshot"]["descriptions"] == descriptions
    assert meta["label_distribution"] == {"negative": 0.5, "positive": 0.5}
    config = ServeConfig(feedback_db=str(tmp_path / "fb.db"))
    with TestClient(create_app(directory, config)) as client:  # serve accepts it
        for _ in range(100):
            if client.get("/ready").status_code == 200:
                break
            import time

            time.sleep(0.05)
        answer = client.post("/v1/predict", json={"texts": texts[:2]}).json()
    assert [p["label"] for p in answer["predictions"]] == expected[:2]


def test_zeroshot_errors(tiny_bert, tmp_path) -> None:
    with pytest.raises(ConfigError, match="two or more distinct labels"):
        zeroshot(["a"], tmp_path / "x", model=str(tiny_bert))
    with pytest.raises(ConfigError, match="multi-label zero-shot is done with method 'nli'"):
        zeroshot(["a", "b"], tmp_path / "x", model=str(tiny_bert), multilabel=True)
    with pytest.raises(ConfigError, match="unknown labels"):
        zeroshot(["a", "b"], tmp_path / "x", model=str(tiny_bert), descriptions={"c": "see"})


def test_cli_fewshot_and_zeroshot(tiny_bert, sentiment_csv, tmp_path) -> None:
    from conftest import write_config
    from typer.testing import CliRunner

    from bridgetune.cli import app

    runner = CliRunner()
    config = write_config(_fewshot_config(tiny_bert, tmp_path, sentiment_csv), tmp_path)
    trained = runner.invoke(app, ["fewshot", str(config), "fewshot.iterations=2"])
    assert trained.exit_code == 0, trained.output
    made = runner.invoke(
        app,
        [
            "zeroshot", "--labels", "negative,positive", "--model", str(tiny_bert),
            "--description", "negative=bad", "--output", str(tmp_path / "zs"),
            "--evaluate", str(sentiment_csv),
        ],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "accuracy" in made.output
    bad = runner.invoke(
        app, ["zeroshot", "--labels", "a,b", "--description", "oops", "--output", "x"]
    )
    assert bad.exit_code == 2 and "is not LABEL=VALUE" in bad.output


@pytest.fixture()
def mlm_dir(tiny_bert: Path, tmp_path: Path) -> Path:
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(AutoConfig.from_pretrained(tiny_bert)).save_pretrained(tmp_path / "mlm")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "mlm")
    return tmp_path / "mlm"


def test_prompt_fewshot_and_zeroshot_directories(mlm_dir, sentiment_csv, tmp_path) -> None:
    from transformers import pipeline

    words = {"negative": ["bad"], "positive": ["good"]}
    config = _fewshot_config(mlm_dir, tmp_path, sentiment_csv, mode="prompt", verbalizer=words)
    config["train"].update(epochs=30, lr=3e-3)
    result = fewshot(config)
    assert result.metrics["accuracy"] == 1.0
    predictor = Predictor.load(result.model_dir)
    assert predictor.meta["head"] == {
        "type": "prompt",
        "template": "{text} It was {mask}.",
        "verbalizer": words,
    }
    texts = [text for text, _ in SENTIMENT]
    assert [p["label"] for p in predictor.predict(texts)] == [label for _, label in SENTIMENT]
    fill = pipeline("fill-mask", model=str(result.model_dir))  # plain transformers loads it
    assert fill("love this phone it was [MASK].")
    zero = zeroshot(
        ["negative", "positive"], tmp_path / "zs", model=str(mlm_dir), method="prompt",
        verbalizer=words,
    )  # fmt: skip
    assert len(Predictor.load(zero).predict(texts)) == len(texts)
    config["fewshot"]["verbalizer"] = None
    with pytest.raises(ConfigError, match="needs fewshot.verbalizer"):
        fewshot(config)


def test_default_model_has_no_mlm_head_for_prompts(sentiment_csv, tmp_path) -> None:
    from bridgetune.heads.prompt import PromptError

    with pytest.raises(PromptError, match="masked-LM head"):
        zeroshot(["negative", "positive"], tmp_path / "zs", method="prompt",
                 verbalizer={"negative": ["bad"], "positive": ["good"]})  # fmt: skip


@pytest.mark.parametrize("multilabel", [False, True])
def test_zeroshot_nli_directory_round_trips(tiny_bert, tmp_path, multilabel) -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    labels = {0: "contradiction", 1: "neutral", 2: "entailment"}
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_bert, id2label=labels)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "nli")
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path / "nli")
    topics = ["delivery", "phone", "account"]
    directory = zeroshot(
        topics, tmp_path / "zs", model=str(tmp_path / "nli"), method="nli", multilabel=multilabel
    )
    predictor = Predictor.load(directory)
    assert predictor.meta["head"]["type"] == "nli"
    prediction = predictor.predict(["my package is late"])[0]
    assert set(prediction["scores"]) == set(topics)
    if not multilabel:
        assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-4)


def test_shipped_fewshot_config_runs(tiny_bert, tmp_path) -> None:
    root = Path(__file__).resolve().parents[1]
    result = fewshot(
        root / "examples" / "fewshot" / "support_intent_8shot.yaml",
        [f"model.name={tiny_bert}", f"output_dir={tmp_path}", "fewshot.iterations=1",
         "data.few_shot_k=2", "data.max_eval_examples=12"],
    )  # fmt: skip
    assert (result.model_dir / "head.safetensors").is_file()


def test_pair_batches_encode_each_text_once(tiny_bert) -> None:
    from transformers import AutoModel

    from bridgetune.heads.embedding import ContrastiveModel
    from bridgetune.tasks.similarity import PairSimilarityTask

    short, longer, other = [2, 10, 3], [2, 11, 12, 3], [2, 13, 3]
    features = [
        {"text_ids": (0, 1), "input_ids": short, "pair_input_ids": longer, "labels": 1.0},
        {"text_ids": (0, 2), "input_ids": short, "pair_input_ids": other, "labels": 0.0},
        {"text_ids": (1, 2), "input_ids": longer, "pair_input_ids": other, "labels": 0.5},
    ]  # fmt: skip
    batch = PairSimilarityTask().collate(features, pad_id=0)
    assert batch["input_ids"].shape[0] == 3  # texts 0, 1, 2 once each, not six rows
    assert batch["first"].tolist() == [0, 0, 1] and batch["second"].tolist() == [1, 2, 2]
    model = ContrastiveModel(AutoModel.from_pretrained(tiny_bert)).eval()
    with torch.no_grad():
        together = model(**batch).logits.view(-1)
        alone = []
        for feature in features:
            one = PairSimilarityTask().collate([feature], pad_id=0)
            alone.append(model(**one).logits.item())
    assert together.tolist() == pytest.approx(alone, abs=1e-5)
    task = PairSimilarityTask()  # the loss is the task's: squared error of the cosine
    loss = task.loss(
        model(**{k: v for k, v in batch.items() if k != "labels"}).logits, batch["labels"]
    )
    assert loss.item() == pytest.approx(
        torch.nn.functional.mse_loss(together, torch.tensor([1.0, 0.0, 0.5])).item(), abs=1e-6
    )


def test_fewshot_refuses_options_only_train_applies(tiny_bert, sentiment_csv, tmp_path) -> None:
    from bridgetune.recipes.fewshot import fewshot

    config = _fewshot_config(tiny_bert, tmp_path, sentiment_csv)
    config["method"] = {"name": "lora"}
    config["train"]["adversarial"] = "fgm"
    with pytest.raises(ConfigError, match="does not apply method.name, train.adversarial"):
        fewshot(config)
