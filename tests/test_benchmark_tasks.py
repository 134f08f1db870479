"""benchmarks/qa.py and benchmarks/ranking.py run on the shipped data and print their JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_config
from tests.test_ranking import config as ranking_config
from tests.test_ranking import write_groups

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, argv: list[str], capsys) -> dict:
    old = sys.argv
    sys.argv = ["bench", *argv]
    try:
        module.main()
    finally:
        sys.argv = old
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_qa_lexical_peer_and_a_model_on_the_shipped_dev_set(tiny_bert, tmp_path, capsys):
    qa = load("qa")
    assert qa.lexical_answer("谁买的耳机", "今天很好。张三买的耳机，还没到。") == "张三买的耳机，"
    assert qa.lexical_answer("how long is the warranty", "Hello there. The warranty is 2 years.")
    import bridgetune

    dev = ROOT / "examples/data/support_qa/dev.json"
    config = tiny_config(
        tiny_bert, tmp_path / "runs", task="qa", data={"train": str(dev), "dev": str(dev)},
        train={"epochs": 1, "batch_size": 32},
    )  # fmt: skip
    config["data"]["max_train_examples"] = 20
    config["model"]["max_length"] = 128  # the tiny tokenizer splits words into characters
    model = bridgetune.train(config).model_dir
    report = run(qa, ["--dev", str(dev), "--model", str(model)], capsys)
    assert report["benchmark"] == "qa" and report["questions"] == 235
    assert 0 <= report["ours"]["f1"] <= 1 and "exact_match" in report["peer"]
    assert report["f1_gain"] == report["ours"]["f1"] - report["peer"]["f1"]


def test_ranking_peers_and_a_model_on_the_shipped_queries(tiny_bert, tmp_path, capsys):
    import bridgetune

    data = write_groups(tmp_path / "recs.csv")
    model = bridgetune.train(ranking_config(tiny_bert, data, tmp_path / "runs", epochs=1)).model_dir
    report = run(load("ranking"), ["--model", str(model)], capsys)
    assert report["benchmark"] == "ranking" and report["queries"] == 80
    assert report["peer"]["ndcg@10"] > report["floor"]["ndcg@10"]  # embeddings beat chance
    assert {"mrr", "map", "auc", "ndcg@5"} <= set(report["ours"])


@pytest.mark.parametrize("name", ["qa"])
def test_a_missing_dev_file_is_skipped_cleanly(name, tmp_path, capsys):
    report = run(load(name), ["--dev", str(tmp_path / "absent.json")], capsys)
    assert report == {"benchmark": name, "skipped": str(tmp_path / "absent.json")}


def test_generate_eval_scores_a_tuned_model_on_dev_conversations(tiny_llama, tmp_path, capsys):
    import bridgetune
    from tests.test_causal_lm import SUPPORT, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 60, "lr": 3e-2},
    )  # fmt: skip
    model = bridgetune.train(config).model_dir
    report = run(load("generate_eval"), ["--dev", str(data), "--model", str(model)], capsys)
    assert report["benchmark"] == "generate_eval" and report["examples"] == 3
    result = report["results"][str(model)]
    assert result["exact_match"] == 100 and result["finished"] == 100  # it learned all three
    assert result["rougeL"] == 100 and result["chrf"] == 100
    assert result["examples"][0]["generated"] == "it ships tomorrow"


def test_generate_eval_reads_a_configs_dev_data_with_its_formatting(tiny_llama, tmp_path, capsys):
    """multi30k's config: parallel files, prompt template, chat formatting, all applied."""
    for side in ("en", "de"):
        (tmp_path / f"dev.{side}").write_text("where is my order\nrefund\n", encoding="utf-8")
    config = tmp_path / "multi30k.yaml"
    text = (ROOT / "examples/configs/multi30k_en_de.yaml").read_text(encoding="utf-8")
    config.write_text(
        text.replace("../../../shared/data/multi30k_en_de/", f"{tmp_path}/"), encoding="utf-8"
    )
    argv = ["--config", str(config), "--model", str(tiny_llama), "--max-new-tokens", "3"]
    report = run(load("generate_eval"), argv, capsys)
    assert report["examples"] == 2
    shown = report["results"][str(tiny_llama)]["examples"][0]["prompt"]
    assert shown == "Translate to German: where is my order"


@pytest.mark.slow  # two subprocesses import torch, transformers and TRL (~30 s)
def test_generation_benchmark_runs_ours_and_trl_on_the_same_work(tiny_llama, tmp_path, capsys):
    pytest.importorskip("trl")
    rows = [{"ticket": "where is my order", "summary": "it ships tomorrow"},
            {"ticket": "refund", "summary": "the money is back in five days"}] * 4  # fmt: skip
    for name in ("train", "dev"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
        )
    argv = ["--model", str(tiny_llama), "--data", str(tmp_path), "--train-examples", "8",
            "--dev-examples", "4", "--epochs", "1", "--batch-size", "4",
            "--max-length", "64"]  # fmt: skip
    report = run(load("generation"), argv, capsys)
    assert report["benchmark"] == "generation_sft" and report["device"] == "cpu"
    ours, peer = report["ours"], report["peer"]
    assert ours["tokens"] == peer["tokens"]  # the same training tokens on both sides
    assert ours["tokens_per_s"] > 0 and peer["dev_loss"] > 0 and ours["peak_memory_mib"] > 0


@pytest.mark.slow  # two server subprocesses import torch and transformers (~20 s)
def test_serve_generate_benchmark_loads_both_servers_alike(tiny_llama, tmp_path, capsys):
    import bridgetune
    from tests.test_causal_lm import SUPPORT, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 60, "lr": 3e-2},
        generate={"eval_examples": 0},
    )  # fmt: skip
    model = bridgetune.train(config).model_dir
    argv = ["--model", str(model), "--prompts", str(data), "--clients", "1", "4",
            "--requests", "2", "--max-tokens", "8"]  # fmt: skip
    report = run(load("serve_generate"), argv, capsys)
    assert report["benchmark"] == "serve_generate" and set(report["speedup"]) == {"1", "4"}
    for clients in ("1", "4"):
        ours, peer = report["ours"][clients], report["peer_results"][clients]
        assert ours["errors"] == peer["errors"] == 0
        assert ours["requests"] == int(clients) * 2
        assert ours["tokens"] == peer["tokens"] > 0  # the same greedy answers from both


@pytest.mark.slow  # two tiny trainings through the benchmark script (~7 s)
def test_relation_benchmark_compares_the_poolings_on_a_folder_of_the_shared_layout(
    tiny_bert, tmp_path, capsys
):
    folder = tmp_path / "data" / "semeval2010_task8"
    folder.mkdir(parents=True)
    rows = [("Component-Whole(e1,e2)", "wheel", "car"), ("Component-Whole(e2,e1)", "car",
            "wheel"), ("Other", "man", "dog")] * 10  # fmt: skip
    (folder / "train.tsv").write_text(
        "".join(f"{y}\tThe <e1> {a} </e1> of the <e2> {b} </e2>.\n" for y, a, b in rows), "utf-8"
    )
    argv = ["--data", str(tmp_path / "data"), "--quick", "--model", str(tiny_bert),
            "--output_dir", str(tmp_path / "runs")]  # fmt: skip
    report = run(load("relation"), argv, capsys)
    assert report["benchmark"] == "relation" and set(report["runs"]) == {"entity_start", "cls"}
    gain = report["runs"]["entity_start"]["macro_f1"] - report["runs"]["cls"]["macro_f1"]
    assert report["markers_gain"] == gain
    missing = run(load("relation"), ["--data", str(tmp_path / "none")], capsys)
    assert "skipped" in missing


@pytest.mark.slow  # ~25 s: five exports with their parity checks, each timed
def test_inference_benchmark_measures_pytorch_and_the_exports(served_classifier, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "data" / "sst2"
    folder.mkdir(parents=True)
    rows = [("a great film", "positive"), ("dull and far too long", "negative")] * 20
    (folder / "dev.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    argv = ["--data", str(tmp_path / "data"), "--model", str(served_classifier), "--quick",
            "--repeats", "1", "--output_dir", str(tmp_path / "out")]  # fmt: skip
    report = run(load("inference"), argv, capsys)
    assert report["benchmark"] == "inference" and report["dev_examples"] == 40
    assert {"pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_per_channel"} <= set(
        report["variants"]
    )
    fp32 = report["variants"]["onnx_fp32"]
    assert (
        fp32["agreement"] == 1.0 and fp32["metric"] == report["variants"]["pytorch_fp32"]["metric"]
    )
    assert report["speedup"] > 0 and report["best_int8"] in report["variants"]
    assert "int8" in report["best_int8"]
    if importlib.util.find_spec("openvino"):  # the OpenVINO exports are measured beside
        assert {"openvino_fp32", "openvino_int8"} <= set(report["variants"])
        assert report["variants"]["openvino_fp32"]["agreement"] == 1.0
    missing = run(load("inference"), ["--data", str(tmp_path / "none")], capsys)
    assert "skipped" in missing


def test_zh_knowledge_benchmark_runs_the_variants_on_the_shared_layout(tiny_bert, tmp_path, capsys):
    folder = tmp_path / "data" / "weibo_ner"
    folder.mkdir(parents=True)
    sentence = [("张0", "B-PER.NAM"), ("三1", "I-PER.NAM"), ("在0", "O"), ("北0", "B-GPE.NAM"),
                ("京1", "I-GPE.NAM")]  # fmt: skip
    text = "\n\n".join("\n".join(f"{c}\t{t}" for c, t in sentence) for _ in range(12)) + "\n"
    for name in ("train.txt", "dev.txt"):
        (folder / name).write_text(text, encoding="utf-8")
    argv = ["--data", str(tmp_path / "data"), "--quick", "--variant", "encoder", "--variant",
            "crf", "--set", f"model.name={tiny_bert}", "--set", "model.prune_vocab=null",
            "--set", "model.max_length=32",
            "--output_dir", str(tmp_path / "runs")]  # fmt: skip
    report = run(load("zh_knowledge"), argv, capsys)
    assert report["benchmark"] == "zh_knowledge" and set(report["runs"]) == {"encoder", "crf"}
    assert report["gains"]["encoder"] == round(
        report["runs"]["encoder"]["f1"] - report["runs"]["crf"]["f1"], 4
    )
    assert len(report["runs"]["crf"]["per_epoch"]) == 1
    missing = run(load("zh_knowledge"), ["--data", str(tmp_path / "none")], capsys)
    assert "skipped" in missing


def tiny_sst2(data: Path) -> None:
    """An SST-2 folder of the shared layout: 30 training and 10 dev sentences (label, sentence)."""
    folder = data / "sst2"
    folder.mkdir(parents=True)
    rows = [("positive", "a great film"), ("negative", "dull and far too long")] * 15
    for name, part in (("train.tsv", rows), ("dev.tsv", rows[:10])):
        (folder / name).write_text("label\tsentence\n" + "".join(f"{y}\t{t}\n" for y, t in part))


def test_distill_benchmark_trains_the_students_and_times_them(served_classifier, tmp_path, capsys):
    tiny_sst2(tmp_path / "data")
    argv = ["--data", str(tmp_path / "data"), "--teacher", str(served_classifier), "--layers", "1",
            "--train_examples", "20", "--unlabelled", "10", "--epochs", "1", "--repeats", "1",
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    report = run(load("distill"), argv, capsys)
    assert report["benchmark"] == "distill" and report["dev_examples"] == 10
    assert set(report["students"]) == {"labels_only", "distilled_every", "distilled_first"}
    assert all(row["layers"] == 1 for row in report["students"].values())
    assert report["teacher"]["layers"] == 2 and report["best"] != "labels_only"
    assert report["retained"] == report["students"][report["best"]]["retained"]
    missing = run(load("distill"), ["--data", str(tmp_path / "none")], capsys)
    assert "skipped" in missing


def test_prune_benchmark_draws_the_curve_of_every_cut(served_classifier, tmp_path, capsys):
    tiny_sst2(tmp_path / "data")
    argv = ["--data", str(tmp_path / "data"), "--teacher", str(served_classifier),
            "--train_examples", "20", "--epochs", "1", "--repeats", "1",
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    report = run(load("prune"), argv, capsys)
    assert report["benchmark"] == "prune" and report["teacher"]["layers"] == 2
    assert [cut["removed"] for cut in report["cuts"]] == [1]
    assert len(report["cuts"][0]["layers"]) == 1
    assert Path(report["plot"]).stat().st_size > 0
    missing = run(load("prune"), ["--data", str(tmp_path / "none")], capsys)
    assert "skipped" in missing
