"""Knowledge distillation (`bridgetune distill`): the losses by hand, the student cut from its
teacher's layers, the soft targets cached once, pseudo-labelled unlabelled text, the CLI and the
errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bridgetune.cli import app
from bridgetune.models.layers import (
    chosen_layers,
    greedy_layers,
    keep_layers,
    layer_stack,
    with_layers,
)
from bridgetune.tasks.losses import distillation_loss
from bridgetune.training.distill import SoftTargets
from tests.conftest import (
    NER_SENTENCES,
    SENTIMENT,
    tiny_config,
    train_tiny_model,
    write_config,
    write_conll,
    write_csv,
)


def test_chosen_layers_every_kth_keeps_the_top_layer_and_first_keeps_the_bottom():
    assert chosen_layers(6, 3) == [1, 3, 5]
    assert chosen_layers(12, 3) == [3, 7, 11]
    assert chosen_layers(12, 4, "first") == [0, 1, 2, 3]
    assert chosen_layers(2, 1) == [1]
    for keep in (0, 6):
        with pytest.raises(ValueError, match="keep 1 to 5"):
            chosen_layers(6, keep)


def test_a_student_cut_to_layers_computes_what_a_model_of_those_layers_computes():
    from transformers import BertConfig, BertForTokenClassification

    from bridgetune.knowledge.crf import CRFTagger

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    torch.manual_seed(0)
    tagger = CRFTagger(BertForTokenClassification(config), ["O", "B-X", "I-X"], "IOB2")
    tagger.eval()
    name, stack = layer_stack(tagger)
    assert name.endswith("bert.encoder.layer") and len(stack) == 4
    # a 2-layer model holding layers 1 and 3 of the 4-layer one, built independently
    small = BertForTokenClassification(BertConfig(**{**config.to_dict(), "num_hidden_layers": 2}))
    state = tagger.tagger.state_dict() if hasattr(tagger, "tagger") else tagger.state_dict()
    renamed = {}
    for key, value in state.items():
        if ".encoder.layer." in key:
            index = int(key.split(".encoder.layer.")[1].split(".")[0])
            if index not in (1, 3):
                continue
            key = key.replace(f".encoder.layer.{index}.", f".encoder.layer.{(index - 1) // 2}.")
        renamed[key] = value
    small.load_state_dict(renamed)
    small.eval()
    keep_layers(tagger, [1, 3])
    assert len(layer_stack(tagger)[1]) == 2
    assert all(m.config.num_hidden_layers == 2 for m in tagger.modules() if hasattr(m, "config"))
    ids = torch.tensor([[2, 7, 9, 11, 3]])
    emissions = tagger(input_ids=ids).logits[:, :5]
    torch.testing.assert_close(emissions, small(input_ids=ids).logits)


def test_distillation_losses_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    t = 2.0
    q = torch.softmax(teacher / t, -1)
    p = torch.softmax(student / t, -1)
    kl = (q * (q.log() - p.log())).sum(-1).mean() * t * t
    torch.testing.assert_close(distillation_loss(student, teacher, "single", t), kl)
    assert distillation_loss(teacher, teacher, "single", t).abs() < 1e-6
    # gradients keep their size across temperatures: T^2 scaling (Hinton et al.)
    assert distillation_loss(student, teacher, "single", 1.0) != distillation_loss(
        student, teacher, "single", 4.0
    )
    # multi-label: BCE against the teacher's sigmoids at T, times T^2
    bce = F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
    torch.testing.assert_close(distillation_loss(student, teacher, "multi", t), bce)
    # regression: the squared error to the teacher's outputs, no temperature
    value = distillation_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]),
                              "regression", t)  # fmt: skip
    assert math.isclose(float(value), (1 + 4) / 2)
    # tokens: only the positions the mask keeps count
    s = torch.stack([student, student])  # [2 sentences, 2 positions, 3 tags]
    teach = torch.stack([teacher, torch.zeros(2, 3)])
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])  # wider than the logits (padding)
    per = (torch.softmax(teach / t, -1) * (torch.log_softmax(teach / t, -1)
           - torch.log_softmax(s / t, -1))).sum(-1)  # fmt: skip
    expected = (per[0, 0] + per[0, 1] + per[1, 0]) / 3 * t * t
    torch.testing.assert_close(distillation_loss(s, teach, "token", t, mask), expected)
    with pytest.raises(ValueError, match="no distillation loss"):
        distillation_loss(student, teacher, "span", t)


def test_soft_targets_batch_rows_and_pad_positions_to_the_batch_width():
    rows = [torch.ones(3, 2), 2 * torch.ones(5, 2)]
    batch = SoftTargets(rows, per_token=True).batch([1, 0], 8)
    assert batch.shape == (2, 8, 2)
    assert batch[0, :5].eq(2).all() and batch[0, 5:].eq(0).all()
    assert batch[1, :3].eq(1).all() and batch[1, 3:].eq(0).all()
    sequence = SoftTargets([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], per_token=False)
    assert sequence.batch([1], 16).tolist() == [[3.0, 4.0]]


@pytest.fixture(scope="module")
def teacher(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    data = write_csv(root / "sentiment.csv", ["text", "label"], SENTIMENT)
    return train_tiny_model(tiny_bert, root / "runs", data, name="teacher")


def test_distill_a_one_layer_student_that_learns_its_teacher(
    teacher: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import bridgetune
    from bridgetune.training import distill as distill_module

    data = write_csv(tmp_path / "sentiment.csv", ["text", "label"], SENTIMENT)
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("slow and broken\nfast delivery thanks\n\nlove the service\n", "utf-8")
    calls = []
    original = distill_module.teacher_targets
    monkeypatch.setattr(
        distill_module,
        "teacher_targets",
        lambda *a, **k: calls.append(len(a[2])) or original(*a, **k),
    )
    from bridgetune.recipes import distill as recipe

    monkeypatch.setattr(recipe, "teacher_targets", distill_module.teacher_targets)
    config = tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(data), "dev": str(data)},
                         distill={"teacher": str(teacher), "student_layers": 1,
                                  "unlabelled": str(unlabelled), "alpha": 0.7})  # fmt: skip
    config["train"]["epochs"] = 12
    result = bridgetune.distill(config)
    assert calls == [len(SENTIMENT) + 3]  # soft targets computed once, for every example
    saved = json.loads((result.model_dir / "config.json").read_text("utf-8"))
    assert saved["num_hidden_layers"] == 1
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    summary = meta["notes"]["distillation"] if "notes" in meta else meta["distillation"]
    assert summary["student_layers"] == [1] and summary["unlabelled_examples"] == 3
    assert summary["teacher_dev"]["accuracy"] == 1.0
    texts = [text for text, _ in SENTIMENT]
    student = bridgetune.load(result.model_dir).predict(texts)
    taught = bridgetune.load(teacher).predict(texts)
    agreement = sum(s["label"] == t["label"] for s, t in zip(student, taught)) / len(texts)
    assert agreement >= 0.9
    assert result.metrics["accuracy"] >= 0.9


def test_distill_ner_with_a_crf_per_token(tiny_bert: Path, tmp_path: Path):
    import bridgetune

    data = write_conll(tmp_path / "ner.conll", NER_SENTENCES)
    teacher_dir = train_tiny_model(tiny_bert, tmp_path / "teacher", data, name="ner",
                                   epochs=20, task={"name": "ner", "crf": True})  # fmt: skip
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("carol visited berlin\nbob smith was in london\n", "utf-8")
    config = tiny_config(tiny_bert, tmp_path / "runs", task={"name": "ner", "crf": True},
                         data={"train": str(data), "dev": str(data)},
                         distill={"teacher": str(teacher_dir), "student_layers": 1,
                                  "unlabelled": str(unlabelled)})  # fmt: skip
    config["train"]["epochs"] = 20
    result = bridgetune.distill(config)
    assert (
        json.loads((result.model_dir / "config.json").read_text("utf-8"))["num_hidden_layers"] == 1
    )
    assert result.metrics["entity_f1"] >= 0.8
    prediction = bridgetune.load(result.model_dir).predict(["john smith visited paris"])[0]
    assert {e["type"] for e in prediction["entities"]} <= {"PER", "LOC", "ORG"}


def test_the_cli_distills_with_teacher_and_layers(teacher: Path, tiny_bert: Path, tmp_path: Path):
    data = write_csv(tmp_path / "sentiment.csv", ["text", "label"], SENTIMENT)
    config = write_config(
        tiny_config(tiny_bert, tmp_path / "runs", data={"train": str(data), "dev": str(data)}),
        tmp_path,
    )
    result = CliRunner().invoke(
        app, ["distill", str(config), "train.epochs=2", "--teacher", str(teacher), "--layers", "1"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "tiny" / "model" / "config.json").read_text("utf-8"))
    assert saved["num_hidden_layers"] == 1


def test_distill_refuses_what_it_cannot_do(teacher: Path, tiny_bert: Path, tmp_path: Path):
    import bridgetune

    data = write_csv(tmp_path / "sentiment.csv", ["text", "label"], SENTIMENT)
    base = {"train": str(data), "dev": str(data)}

    def run(**sections):
        return bridgetune.distill(tiny_config(tiny_bert, tmp_path / "runs", data=base, **sections))

    with pytest.raises(ValueError, match="distill.teacher is not set"):
        run()
    with pytest.raises(ValueError, match="not a model directory"):
        run(distill={"teacher": str(tmp_path)})
    with pytest.raises(ValueError, match="teacher has 2 layers; keep 1 to 1"):
        run(distill={"teacher": str(teacher), "student_layers": 2})
    with pytest.raises(
        ValueError, match="is a classification model; this run's task is regression"
    ):
        run(task="regression", distill={"teacher": str(teacher)})
    ranking = {**base, "text_pair_column": "label", "group_column": "text"}
    with pytest.raises(ValueError, match="task ranking cannot be distilled yet"):
        bridgetune.distill(
            tiny_config(
                tiny_bert,
                tmp_path / "runs",
                data=ranking,
                task="ranking",
                distill={"teacher": str(teacher)},
            )
        )
    other = write_csv(
        tmp_path / "other.csv",
        ["text", "label"],
        [(t, "good" if lab == "positive" else "bad") for t, lab in SENTIMENT],
    )
    with pytest.raises(ValueError, match="not the teacher's"):
        bridgetune.distill(
            tiny_config(
                tiny_bert,
                tmp_path / "runs",
                data={"train": str(other), "dev": str(other)},
                distill={"teacher": str(teacher), "student_layers": 1},
            )
        )


def test_the_shipped_distill_config_runs_and_train_refuses_it(tiny_bert: Path, tmp_path: Path):
    import bridgetune

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "sst2_distill.yaml"
    rows = [(str(int(label == "positive")), text) for text, label in SENTIMENT]
    data = write_csv(tmp_path / "train.tsv", ["label", "sentence"], rows)
    data.write_text(data.read_text("utf-8").replace(",", "\t"), "utf-8")
    tiny = [
        f"data.train={data}",
        f"data.dev={data}",
        f"output_dir={tmp_path / 'runs'}",
        "model.max_length=32",
        "train.batch_size=4",
        "train.lr=3e-3",
        "train.warmup_ratio=0",
    ]
    teacher = bridgetune.train(
        tiny_config(tiny_bert, tmp_path / "runs"),
        [*tiny, "name=teacher", "data.column_map.sentence=text", "train.epochs=12"],
    ).model_dir
    overrides = [*tiny, f"distill.teacher={teacher}", "distill.student_layers=1", "train.epochs=2"]
    with pytest.raises(ValueError, match="run it with `bridgetune distill`"):
        bridgetune.train(config, overrides)
    result = bridgetune.distill(config, overrides)
    assert (
        json.loads((result.model_dir / "config.json").read_text("utf-8"))["num_hidden_layers"] == 1
    )
    assert result.model_dir.parent.name == "sst2-distilled"


@pytest.mark.slow  # ~7 s: four tiny runs; classification and NER students are in the default suite
def test_distill_regression_pairs_and_relation_students(tiny_bert: Path, tmp_path: Path):
    import bridgetune
    from tests.test_regression import PAIRS, write_pairs
    from tests.test_regression import config as regression_config
    from tests.test_relation import relation_config

    pairs = write_pairs(tmp_path / "pairs.csv", PAIRS)
    teacher = bridgetune.train(regression_config(tiny_bert, pairs, tmp_path / "t")).model_dir
    student = regression_config(tiny_bert, pairs, tmp_path / "s", epochs=30)
    student["distill"] = {"teacher": str(teacher), "student_layers": 1}
    result = bridgetune.distill(student)
    values = [p["value"] for p in bridgetune.load(result.model_dir).predict(
        [(a, b) for a, b, _ in PAIRS])]  # fmt: skip
    assert len(values) == len(PAIRS) and result.metrics["spearman"] > 0.5

    relation = relation_config(tiny_bert, tmp_path / "rt")
    teacher = bridgetune.train(relation).model_dir
    relation = relation_config(tiny_bert, tmp_path / "rs")
    relation["distill"] = {"teacher": str(teacher), "student_layers": 1, "alpha": 0.8}
    result = bridgetune.distill(relation)
    saved = json.loads((result.model_dir / "config.json").read_text("utf-8"))
    assert saved["num_hidden_layers"] == 1 and "macro_f1" in result.metrics


def test_greedy_layers_removes_the_least_important_layer_first():
    # a made-up score: layer 3 is worth 5, layer 0 worth 3, the others 1; a cut scores its sum
    worth = {0: 3, 1: 1, 2: 1, 3: 5}
    layers, path = greedy_layers(4, 2, lambda kept: sum(worth[i] for i in kept))
    assert layers == [0, 3]
    assert [step["removed"] for step in path] == [2, 1]  # ties: the higher index goes first
    assert path[0] == {"removed": 2, "layers": [0, 1, 3], "score": 9}
    # lower is better (a loss): the same search, the other way round
    assert greedy_layers(4, 1, lambda kept: sum(worth[i] for i in kept), True)[0] == [1]
    with pytest.raises(ValueError, match="keep 1 to 3"):
        greedy_layers(4, 4, lambda kept: 0.0)


def test_with_layers_restores_the_whole_model():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16,
        num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)).eval()  # fmt: skip
    ids = torch.tensor([[2, 7, 9, 3]])
    before = model(input_ids=ids).logits
    with with_layers(model, [2]):
        assert len(model.bert.encoder.layer) == 1 and model.config.num_hidden_layers == 1
        assert not torch.allclose(model(input_ids=ids).logits, before)
    assert len(model.bert.encoder.layer) == 3 and model.config.num_hidden_layers == 3
    torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_importance_and_explicit_layer_lists(teacher: Path, tiny_bert: Path, tmp_path: Path):
    import bridgetune

    data = write_csv(tmp_path / "sentiment.csv", ["text", "label"], SENTIMENT)
    base = {"train": str(data), "dev": str(data)}
    config = tiny_config(tiny_bert, tmp_path / "runs", data=base,
                         distill={"teacher": str(teacher), "student_layers": 1,
                                  "layer_selection": "importance"})  # fmt: skip
    config["train"]["epochs"] = 2
    result = bridgetune.distill(config)
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    summary = meta["notes"]["distillation"] if "notes" in meta else meta["distillation"]
    assert summary["layer_selection"] == "importance" and len(summary["pruning_path"]) == 1
    assert summary["student_layers"] == summary["pruning_path"][0]["layers"]
    config["distill"] = {"teacher": str(teacher), "student_layers": [0]}
    config["name"] = "explicit"
    result = bridgetune.distill(config)
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    summary = meta["notes"]["distillation"] if "notes" in meta else meta["distillation"]
    assert summary["student_layers"] == [0]
    for bad in ([0, 0], [2], []):
        config["distill"]["student_layers"] = bad
        with pytest.raises(ValueError, match="give distinct layers from 0 to 1"):
            bridgetune.distill(config)
