"""The same loop under `accelerate launch` with two CPU processes (DDP over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config, write_config


def free_port() -> str:
    """A TCP port nothing listens on now (fixed ports collide when two suites run at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


FSDP = ("--use_fsdp", "--fsdp_version", "2")  # the launch line docs/generation.md gives


def launch(
    config: Path, flags: tuple[str, ...] = ("--multi_gpu",), *more: str, **env: str
) -> subprocess.CompletedProcess:
    """`bridgetune train CONFIG` under `accelerate launch` with two CPU processes (DDP, or
    FSDP with `flags=FSDP`)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *flags,
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "bridgetune.cli",
        "train",
        str(config),
        *more,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": free_port(), **env}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow  # two training processes under accelerate (~12 s)
def test_two_process_training(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        train={"epochs": 20, "batch_size": 2},
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    path = write_config(config, tmp_path)
    done = launch(path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    model_dir = tmp_path / "runs" / "tiny" / "model"
    meta = json.loads((model_dir / "bridgetune.json").read_text())
    assert meta["metrics"]["dev"]["accuracy"] >= 0.9
    # dev was predicted in two shards and gathered: the metrics are those of one process
    import bridgetune

    alone = bridgetune.evaluate(model_dir, sentiment_csv)
    assert {k: alone[k] for k in meta["metrics"]["dev"]} == meta["metrics"]["dev"]
    history = json.loads((tmp_path / "runs" / "tiny" / "history.json").read_text())
    steps = max(h["step"] for h in history)
    assert steps == 20 * 2  # 5 batches per epoch sharded over 2 processes: 2 each (1 dropped)


@pytest.mark.slow  # two more processes (~14 s); the default suite keeps test_two_process_training
def test_two_process_lora_with_pgd_and_accumulation(tiny_bert, sentiment_csv, tmp_path):
    """Adversarial passes and peft models under DDP: extra forwards must not upset its reducer;
    the processes share the augmentation."""
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        method={"name": "lora"},
        train={"epochs": 2, "batch_size": 2, "grad_accum": 2, "adversarial": "pgd", "adv_steps": 2},
        augment={"ops": ["swap", "delete"]},  # shared between the processes
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
    )
    path = write_config(config, tmp_path)
    done = launch(path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    meta = json.loads((tmp_path / "runs" / "tiny" / "model" / "bridgetune.json").read_text())
    assert meta["method"] == "lora"


@pytest.mark.slow  # two more processes (~17 s)
def test_two_process_packed_lora_sft(tiny_llama, tmp_path):
    """Generative fine-tuning under DDP: packed rows, LoRA on a decoder, dev loss gathered."""
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in (("where is my order", "it ships tomorrow"), ("refund", "the money is back"),
                     ("what colour", "black and white"), ("hello", "hi how can i help"))
    ] * 2  # fmt: skip
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 30, "lr": 3e-2, "batch_size": 2, "packing": True},
    )  # fmt: skip
    done = launch(write_config(config, tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    model_dir = tmp_path / "runs" / "tiny" / "model"
    meta = json.loads((model_dir / "bridgetune.json").read_text())
    assert meta["method"] == "lora" and meta["metrics"]["dev"]["perplexity"] < 2.0
    import bridgetune

    assert (
        bridgetune.generate(model_dir, ["refund"], max_new_tokens=8)[0]["text"]
        == "the money is back"
    )


@pytest.mark.slow  # two more processes (~15 s)
def test_two_process_pretraining_shares_one_window_cache(tiny_bert, tmp_path):
    """Masked-LM pre-training under DDP: both processes build or map the same cached windows
    (atomic directory), train on their shards and agree on the dev perplexity."""
    corpus = tmp_path / "corpus.txt"
    lines = ["my order is late and the package arrived broken", "thanks for the fast help",
             "where is my refund please", "the phone charger was great"]  # fmt: skip
    corpus.write_text("\n".join(lines * 6) + "\n", encoding="utf-8")
    config = tiny_config(tiny_bert, tmp_path / "runs", task="mlm",
                         data={"train": str(corpus), "dev": str(corpus)},
                         train={"epochs": 3, "batch_size": 4})  # fmt: skip
    cache = tmp_path / "cache"
    done = launch(write_config(config, tmp_path), BRIDGETUNE_CACHE=str(cache))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    meta = json.loads((tmp_path / "runs" / "tiny" / "model" / "bridgetune.json").read_text())
    before = meta["before_training"]["perplexity"]
    assert meta["metrics"]["dev"]["perplexity"] < before
    assert len(list((cache / "corpus").iterdir())) == 1  # one text, one vocabulary: one entry


_AUGMENT_WORKER = """
import os, pickle, sys
import torch.distributed as dist
from transformers import AutoTokenizer
from bridgetune.config import AugmentConfig
from bridgetune.data import augment

rank, port, model, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
ran = []
original = augment._run
augment._run = lambda jobs, *rest: ran.append(len(jobs)) or original(jobs, *rest)
examples, cfg = pickle.load(open(data, "rb"))
tokenizer = AutoTokenizer.from_pretrained(model)
result = augment.augment_split(examples, cfg, False, tokenizer, model)
with open(f"{out}.{rank}", "wb") as stream:
    pickle.dump((result, sum(ran)), stream)
dist.barrier()  # neither process leaves while the other still uses gloo
# no teardown: gloo's destructors at exit sometimes abort a process ("terminate called without
# an active exception", seen with torch 2.13 on 2 busy cores) after the work is done
os._exit(0)
"""


def test_augmentation_is_shared_between_processes(tiny_bert, tmp_path):
    """Each process augments half of the copies; all get the same split as one process."""
    import pickle

    from conftest import SENTIMENT
    from transformers import AutoTokenizer

    from bridgetune.config import AugmentConfig
    from bridgetune.data.augment import augment_split
    from bridgetune.data.schema import Example

    examples = [Example(text=text, label=label) for text, label in SENTIMENT]
    cfg = AugmentConfig(ops=["swap", "delete", "synonym"], copies=3, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    alone = augment_split(examples, cfg, False, tokenizer, str(tiny_bert))
    data, worker = tmp_path / "data.pkl", tmp_path / "worker.py"
    data.write_bytes(pickle.dumps((examples, cfg)))
    worker.write_text(_AUGMENT_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [free_port(), str(tiny_bert), str(data), str(tmp_path / "out")]
    workers = [
        subprocess.Popen([sys.executable, str(worker), str(rank), *args], env=env)
        for rank in (0, 1)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    results = [pickle.loads((tmp_path / f"out.{rank}").read_bytes()) for rank in (0, 1)]
    jobs = len(examples) * cfg.copies
    assert [ran for _, ran in results] == [(jobs + 1) // 2, jobs // 2]
    assert results[0][0] == results[1][0] == alone
    assert len(alone) > len(examples)


def chat_rows(path: Path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in (("where is my order", "it ships tomorrow"), ("refund", "the money is back"),
                     ("what colour", "black and white"), ("hello", "hi how can i help"))
    ] * 2  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow  # two FSDP processes train a packed LoRA SFT (~14 s)
def test_fsdp_packed_lora_sft(tiny_llama, tmp_path):
    """FSDP2 over two CPU processes (gloo), launched as on GPUs: sharded LoRA SFT with
    accumulation and activation checkpointing, best weights and checkpoints gathered,
    generation at evaluations and at the end decoded by both processes together, the saved
    model an ordinary one."""
    data = chat_rows(tmp_path / "chat.jsonl")
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 30, "lr": 3e-2, "batch_size": 2, "grad_accum": 2, "packing": True,
               "eval_steps": 10, "gradient_checkpointing": True},
        generate={"eval_sample": 2, "max_new_tokens": 8},
    )  # fmt: skip
    done = launch(write_config(config, tmp_path), FSDP)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "FSDP: 2 LlamaDecoderLayer and the rest of the model sharded over 2" in " ".join(
        done.stderr.split()
    )
    assert done.stderr.count("model saved to") == 1  # the first process reports
    model_dir = tmp_path / "runs" / "tiny" / "model"
    meta = json.loads((model_dir / "bridgetune.json").read_text())
    dev = meta["metrics"]["dev"]
    assert meta["method"] == "lora" and dev["perplexity"] < 2.0 and dev["exact_match"] == 100
    history = json.loads((tmp_path / "runs" / "tiny" / "history.json").read_text())
    assert [h["exact_match"] for h in history if "exact_match" in h]  # samples at evaluations
    import bridgetune

    assert (
        bridgetune.generate(model_dir, ["refund"], max_new_tokens=8)[0]["text"]
        == "the money is back"
    )


@pytest.mark.slow  # four more processes (~30 s)
def test_fsdp_trains_as_ddp(tiny_llama, tmp_path):
    """Sharding changes where weights live, not what is learnt: FSDP and DDP runs of the same
    config log the same losses (gradients reduced alike, accumulation included). FSDP asked
    for by the config this time (train.fsdp under a plain multi-process launch)."""
    data = chat_rows(tmp_path / "chat.jsonl")
    logged = {}
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        config = tiny_config(
            tiny_llama, tmp_path / name, task="causal_lm",
            data={"train": str(data), "dev": str(data)},
            train={"epochs": 6, "lr": 1e-2, "batch_size": 2, "grad_accum": 2, "log_every": 1,
                   "fsdp": fsdp},
            generate={"eval_examples": 0},
        )  # fmt: skip
        (tmp_path / name).mkdir()
        done = launch(write_config(config, tmp_path / name))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert ("FSDP: 2 LlamaDecoderLayer" in done.stderr) == fsdp
        history = json.loads((tmp_path / name / "tiny" / "history.json").read_text())
        logged[name] = [h["loss"] for h in history if "loss" in h]
    assert len(logged["fsdp"]) == 6 * 2  # 8 examples, 2 processes, 2 batches a step
    assert logged["fsdp"] == pytest.approx(logged["ddp"], rel=1e-4)


@pytest.mark.slow  # four more processes (~30 s)
def test_fsdp_full_bf16_resumes_after_a_crash(tiny_bert, sentiment_csv, tmp_path):
    """Full fine-tuning sharded in bf16; the first process dies while it writes its third
    checkpoint (the launch stops), `--resume` continues from the second, gathered one."""
    config = tiny_config(
        tiny_bert, tmp_path / "runs",
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        train={"epochs": 12, "batch_size": 2, "precision": "bf16"},
    )  # fmt: skip
    path = write_config(config, tmp_path)
    crashed = launch(path, FSDP, BRIDGETUNE_FAILPOINT="before-swap:checkpoint@3")
    assert crashed.returncode != 0, crashed.stderr[-3000:]
    done = launch(path, FSDP, "--resume")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    said = " ".join(done.stderr.split())  # rich wraps lines at 80 columns
    assert "FSDP: 1 BertEmbeddings, 2 BertLayer and the rest" in said and "(bf16)" in said
    meta = json.loads((tmp_path / "runs" / "tiny" / "model" / "bridgetune.json").read_text())
    assert meta["method"] == "full" and meta["metrics"]["dev"]["accuracy"] >= 0.9
    history = json.loads((tmp_path / "runs" / "tiny" / "history.json").read_text())
    assert history[0]["step"] == 2  # the history of the first launch was kept
    assert max(h["step"] for h in history) == 12 * 2


@pytest.mark.slow  # two more processes (~12 s)
def test_shipped_accelerate_fsdp_config(tiny_llama, tmp_path):
    """examples/accelerate/fsdp.yaml as docs/generation.md launches it (two CPU processes and
    fp32 here instead of its four GPUs in bf16)."""
    shipped = Path(__file__).resolve().parent.parent / "examples" / "accelerate" / "fsdp.yaml"
    data = chat_rows(tmp_path / "chat.jsonl")
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 30, "lr": 3e-2, "batch_size": 2, "packing": True},
        generate={"eval_examples": 0},
    )  # fmt: skip
    done = launch(write_config(config, tmp_path), ("--config_file", str(shipped)))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "sharded over 2 processes (fp32)" in " ".join(done.stderr.split())
    meta = json.loads((tmp_path / "runs" / "tiny" / "model" / "bridgetune.json").read_text())
    assert meta["metrics"]["dev"]["perplexity"] < 2.0
