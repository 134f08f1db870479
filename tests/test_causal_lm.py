"""causal_lm: generation data read and checked, loss only on completions and assistant turns
(hand-checked masks), EOS trained with pad == eos, a tiny Llama fine-tuned with LoRA and full,
its merged directory generating the same greedy text in plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bridgetune
from bridgetune.config import ConfigError, DataConfig
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks import build_task
from bridgetune.tasks.causal_lm import CHATML, GenerationReader, conversation_tokens
from bridgetune.tasks.losses import IGNORE
from tests.conftest import tiny_config


def tokenizer_of(path: Path):
    from bridgetune.models import load_tokenizer

    return load_tokenizer(str(path))


CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "where is my order"},
    {"role": "assistant", "content": "it ships tomorrow"},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "you are welcome"},
]


def test_labels_cover_exactly_the_assistant_turns_and_their_end(tiny_llama):
    tokenizer = tokenizer_of(tiny_llama)
    ids, labels = conversation_tokens(tokenizer, CHAT)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    trained = [t for t, label in zip(tokens, labels) if label != IGNORE]
    # each assistant turn: its words and its end of turn (this word-level tokenizer drops the
    # newlines the template writes; nothing of the system and user turns, nor the role names)
    assert trained == ["it", "ships", "tomorrow", "<|im_end|>",
                       "you", "are", "welcome", "<|im_end|>"]  # fmt: skip
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
    assert tokens[:3] == ["<|im_start|>", "system", "be"]


def test_a_plain_completion_ends_with_a_trained_eos_also_when_pad_is_eos(tiny_llama):
    tokenizer = tokenizer_of(tiny_llama)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    task = build_task("causal_lm", [])
    short = Example(text="hello", label={"completion": "hi"})
    long = Example(text="where is my order", label={"completion": "it ships tomorrow"})
    features = task.encode([short, long], tokenizer, 64)
    eos = tokenizer.eos_token_id
    assert features[0]["labels"] == [IGNORE, tokenizer.convert_tokens_to_ids("hi"), eos]
    batch = task.collate(features, tokenizer.pad_token_id)
    # padding (an eos id too) is masked by length; the trained eos is attended and labelled
    assert batch["attention_mask"][0].tolist()[:3] == [1, 1, 1]
    assert batch["attention_mask"][0, 3:].sum() == 0
    assert batch["labels"][0, 2] == eos and (batch["labels"][0, 3:] == IGNORE).all()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read(path: Path, **extra) -> list[Example]:
    """Read `path` with data options and the reader's own (the task options that format
    prompts: prompt_template, as_chat, role_map)."""
    options = {k: extra.pop(k) for k in ("prompt_template", "as_chat", "role_map") if k in extra}
    reader = GenerationReader(**options)
    return reader.read_file(path, DataConfig(train=str(path), **extra), True)


def test_every_data_form_is_read(tmp_path):
    rows = [
        {"messages": CHAT},
        {"prompt": "hello", "completion": "hi"},
        {"instruction": "what colour", "input": "the order", "output": "black"},
        {"messages": [{"speaker": "customer", "content": "refund"},
                      {"speaker": "agent", "content": "the money is back in five days"}]},
    ]  # fmt: skip
    examples = read(
        write_jsonl(tmp_path / "d.jsonl", rows),
        role_map={"customer": "user", "agent": "assistant"},
    )
    assert examples[0].label == {"messages": CHAT}
    assert examples[1].text == "hello" and examples[1].label == {"completion": "hi"}
    assert examples[2].text == "what colour\n\nthe order"
    assert examples[3].label["messages"][1]["role"] == "assistant"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": [{"role": "robot", "content": "hi"}]},
         r"d.jsonl:1: messages\[0\] has the role 'robot'"),
        ({"messages": [{"role": "user", "content": "hi"}]},
         "d.jsonl:1: the conversation has no assistant turn"),
        ({"prompt": "hello", "completion": " "}, "d.jsonl:1: empty or missing completion"),
        ({"question": "hello"}, "d.jsonl:1: no generation columns"),
    ],
)  # fmt: skip
def test_bad_generation_rows_name_file_line_and_fix(tmp_path, row, message):
    with pytest.raises(DataError, match=message):
        read(write_jsonl(tmp_path / "d.jsonl", [row]))


SUPPORT = [
    {"messages": [{"role": "user", "content": "where is my order"},
                  {"role": "assistant", "content": "it ships tomorrow"}]},
    {"messages": [{"role": "user", "content": "refund"},
                  {"role": "assistant", "content": "the money is back in five days"}]},
    {"messages": [{"role": "user", "content": "what colour"},
                  {"role": "assistant", "content": "black and white"}]},
]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_sft_trains_saves_and_generates_like_plain_transformers(tiny_llama, tmp_path, method):
    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama,
        tmp_path / "runs",
        task="causal_lm",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 60, "lr": 3e-2 if method == "lora" else 1e-2},
    )
    if method == "full":
        config["method"] = {"name": "full"}
    cfg = bridgetune.as_config(config)
    assert cfg.method.name == method  # LoRA unless the config names a method
    result = bridgetune.train(cfg)
    history = [h["loss"] for h in result.history if "loss" in h]
    assert history[-1] < history[0] / 3
    assert result.metrics["perplexity"] < 2.0  # the tiny model learns three answers
    generated = bridgetune.generate(
        result.model_dir, ["where is my order", "refund"], max_new_tokens=12
    )
    assert [g["text"] for g in generated] == ["it ships tomorrow", "the money is back in five days"]
    assert all(g["finished"] for g in generated)  # EOS was learned: the answers end
    with pytest.raises(ValueError, match="this model generates text: call generate"):
        bridgetune.predict(result.model_dir, ["where is my order"])
    if method == "full":  # the command line, once
        from typer.testing import CliRunner

        from bridgetune.cli import app

        out = CliRunner().invoke(
            app, ["generate", str(result.model_dir), "refund", "--max-new-tokens", "12"]
        )
        assert out.exit_code == 0, out.output
        line = json.loads(out.stdout.strip().splitlines()[-1])
        assert line["prompt"] == "refund" and line["text"] == generated[1]["text"]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.chat_template == CHATML
    plain = AutoModelForCausalLM.from_pretrained(result.model_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "refund"}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = plain.generate(
        **ids, max_new_tokens=12, do_sample=False, eos_token_id=tokenizer.eos_token_id
    )
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip() == generated[1]["text"]
    from transformers import pipeline

    # the pipeline users reach for, with the saved chat template and generation config
    writer = pipeline("text-generation", model=str(result.model_dir), device="cpu")
    chat = writer([{"role": "user", "content": "refund"}], max_new_tokens=12)
    assert chat[0]["generated_text"][-1]["content"].strip() == generated[1]["text"]


def test_options_a_language_model_cannot_take_are_refused(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(tiny_llama, tmp_path / "runs", task="causal_lm", data={"train": str(data)})
    with pytest.raises(ConfigError, match="train.label_smoothing: not for causal_lm"):
        bridgetune.as_config({**config, "train": {**config["train"], "label_smoothing": 0.1}})
    with pytest.raises(ConfigError, match="for causal_lm use lora"):
        bridgetune.as_config({**config, "method": {"name": "prompt"}})


def test_chat_streams_answers_and_keeps_the_history_within_max_length(tiny_llama, tmp_path):
    from typer.testing import CliRunner

    from bridgetune.cli import app

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 60, "lr": 3e-2},
    )  # fmt: skip
    model_dir = bridgetune.train(config).model_dir
    predictor = bridgetune.load(model_dir)
    assert "".join(predictor.stream("refund", max_new_tokens=12)).strip() == (
        "the money is back in five days"
    )
    out = CliRunner().invoke(
        app, ["chat", str(model_dir), "--max-new-tokens", "12"],
        input="where is my order\n/reset\nrefund\n/exit\n",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    answers = [line for line in out.stdout.splitlines() if "bot> " in line]
    assert [a.split("bot> ")[-1].strip() for a in answers] == [
        "it ships tomorrow",
        "the money is back in five days",
    ]
    long = [{"role": "system", "content": "be brief"}]
    for _ in range(20):
        long += [{"role": "user", "content": "where is my order"},
                 {"role": "assistant", "content": "it ships tomorrow"}]  # fmt: skip
    long.append({"role": "user", "content": "thanks"})
    kept = predictor.fit_history(long, room=8)
    assert kept[0]["role"] == "system" and kept[-1] == long[-1] and len(kept) < len(long)
    text = predictor.prompt_text(kept)
    assert len(predictor.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 32 - 8


def test_prompts_without_room_for_the_answer_are_reported_or_refused(tiny_llama, tmp_path, capsys):
    long_prompt = " ".join(["where is my order"] * 10)
    rows = [*SUPPORT, {"prompt": long_prompt, "completion": "it ships tomorrow"}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 1},
    )  # fmt: skip
    config["model"]["max_length"] = 16
    bridgetune.train(config)
    said = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "1 of 4 train examples are longer than model.max_length=16" in said
    assert "1 of them kept no answer token and teach nothing" in said
    config["model"]["truncation"] = "error"
    with pytest.raises(DataError, match=r"mixed.jsonl:4: longer than model.max_length=16"):
        bridgetune.train(config, overwrite=True)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_packed_batch_has_the_loss_of_its_examples_unpacked(tiny_llama, method):
    """Packing changes the batch's shape, not what is learned: same targets, same loss."""
    from bridgetune.config import MethodConfig
    from bridgetune.methods import apply_method
    from bridgetune.tasks.losses import task_loss

    tokenizer = tokenizer_of(tiny_llama)
    examples = [Example(text=m["messages"][0]["content"], label=m) for m in SUPPORT] + [
        Example(text="hello", label={"completion": "hi how can i help"})
    ]
    plain = build_task("causal_lm", [])
    features = plain.encode(examples, tokenizer, 64)
    packed_task = build_task("causal_lm", [], packing=True, max_length=40)
    packed = packed_task.collate_train(features, tokenizer.pad_token_id)
    assert packed["input_ids"].shape[0] < len(features)  # several examples share a row
    assert "attention_mask" not in packed
    torch.manual_seed(0)
    model = apply_method(plain.build_model(str(tiny_llama)), MethodConfig(name=method), "lm", "x")
    model.eval()
    with torch.no_grad():
        separate = plain.collate(features, tokenizer.pad_token_id)
        separate["labels"][:, 0] = IGNORE  # packing never trains an example's first token
        inputs = {k: v for k, v in separate.items() if k != "labels"}
        expected = task_loss(model(**inputs).logits, separate["labels"], "lm")
        inputs = {k: v for k, v in packed.items() if k != "labels"}
        got = task_loss(model(**inputs).logits, packed["labels"], "lm")
    assert got == pytest.approx(expected.item(), rel=1e-4)
    # and without position resets (as plain concatenation would), the loss differs
    with torch.no_grad():
        leaky = model(input_ids=packed["input_ids"]).logits
    assert task_loss(leaky, packed["labels"], "lm") != pytest.approx(expected.item(), rel=1e-4)


def test_packing_is_refused_for_tasks_that_do_not_pack(tiny_bert, sentiment_csv, tmp_path):
    config = tiny_config(tiny_bert, tmp_path, data={"train": str(sentiment_csv)})
    config["train"]["packing"] = True
    message = "task.packing: applies to causal_lm; task 'classification' takes no options"
    with pytest.raises(ConfigError, match=message):
        bridgetune.as_config(config)


def test_packed_training_learns_the_answers(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 60, "lr": 3e-2, "packing": True},
    )  # fmt: skip
    config["model"]["max_length"] = 64
    result = bridgetune.train(config)
    generated = bridgetune.generate(result.model_dir, ["where is my order"], max_new_tokens=12)
    assert generated[0]["text"] == "it ships tomorrow" and generated[0]["finished"]


def test_eos_trains_when_pad_is_eos(tiny_llama):
    """nn.Embedding's padding_idx (pad_token_id == eos) would leave the EOS row without
    gradient; the task clears it, so full fine-tuning learns to end answers."""
    tokenizer = tokenizer_of(tiny_llama)
    task = build_task("causal_lm", [])
    model = task.build_model(str(tiny_llama))
    assert model.get_input_embeddings().padding_idx is None
    features = task.encode([Example(text="hello", label={"completion": "hi"})], tokenizer, 16)
    batch = task.collate(features, tokenizer.pad_token_id)
    from bridgetune.tasks.losses import task_loss

    loss = task_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"], "lm")
    loss.backward()
    eos_row = model.get_input_embeddings().weight.grad[tokenizer.eos_token_id]
    assert eos_row.abs().sum() > 0


def test_logits_of_prompt_columns_are_skipped_without_changing_loss_or_dev_loss(tiny_llama):
    from bridgetune.tasks.losses import task_loss

    tokenizer = tokenizer_of(tiny_llama)
    task = build_task("causal_lm", [])
    model = task.build_model(str(tiny_llama)).eval()
    assert task.keep_logits  # Llama takes logits_to_keep
    examples = [
        Example(text="where is my order where is my order", label={"completion": "it ships"}),
        Example(text="where is my order", label={"completion": "it ships tomorrow thanks"}),
    ]
    features = task.encode(examples, tokenizer, 64)
    batch = task.collate(features, tokenizer.pad_token_id)
    kept = batch.pop("logits_to_keep")
    assert kept[0] == len(tokenizer("where is my order")["input_ids"]) - 1  # the shorter prompt
    with torch.no_grad():
        full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        part = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=kept)
    assert part.logits.shape[1] == batch["input_ids"].shape[1] - kept[0]
    labels = batch["labels"]
    assert torch.allclose(task_loss(part.logits, labels, "lm"), task_loss(full, labels, "lm"))
    kept_nll = [p["nll"] for p in task.decode(part.logits, features, examples)]
    full_nll = [p["nll"] for p in task.decode(full, features, examples)]
    assert kept_nll == pytest.approx(full_nll, rel=1e-5)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("packing", [False, True])
def test_the_output_layer_runs_on_scored_tokens_only_with_the_same_loss_and_gradients(
    tiny_llama, method, packing
):
    """Training's objective cuts the output layer's input to the positions whose next token is
    a target (prompts and padding cost no vocabulary projection, inside packed rows too): the
    loss and every gradient are those of the full logits."""
    from bridgetune.config import MethodConfig, TrainConfig
    from bridgetune.methods import apply_method
    from bridgetune.tasks.losses import task_loss
    from bridgetune.training.objective import Objective

    tokenizer = tokenizer_of(tiny_llama)
    examples = [Example(text=m["messages"][0]["content"], label=m) for m in SUPPORT]
    task = build_task("causal_lm", [], packing=packing, max_length=48)
    features = task.encode(examples, tokenizer, 48)
    batch = task.collate_train(features, tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = apply_method(task.build_model(str(tiny_llama)), MethodConfig(name=method), "lm", "x")
    model.eval()  # no dropout: both passes see the same network
    head = model.get_output_embeddings()
    seen = []
    head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))

    def loss_and_grads(objective: Objective | None) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        if objective is None:
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "logits_to_keep")}
            loss = task_loss(model(**inputs).logits, batch["labels"], "lm")
        else:
            loss = objective(model, batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full_loss, full_grads = loss_and_grads(None)
    loss, grads = loss_and_grads(
        Objective(build_task("causal_lm", []), TrainConfig(), output_layer=head)
    )
    scored = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert seen[-1] == (scored, 32) and scored < batch["input_ids"].numel() // 2
    assert loss == pytest.approx(full_loss, rel=1e-5)
    for got, expected in zip(grads, full_grads):
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)


def test_a_qlora_run_merges_its_adapter_into_a_full_precision_copy(
    tiny_llama, tmp_path, monkeypatch
):
    """QLoRA's merged export: the trained adapter goes onto the base built again without
    quantization (merging into 4-bit weights would round the update away and need bitsandbytes
    on a GPU to load). Without a GPU the quantized load itself is stood in for: the test
    records what each build asked for and checks what was saved."""
    import bridgetune.models.pretrained as base
    import bridgetune.recipes.train as recipe

    asked = []
    monkeypatch.setattr(recipe, "check_quantization", lambda cfg: None)
    monkeypatch.setattr(base, "quantized", lambda quantization: asked.append(quantization) or {})
    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 60, "lr": 3e-2},
    )  # fmt: skip
    config["model"]["quantization"] = "4bit"
    result = bridgetune.train(config)
    assert asked == ["4bit", None]  # trained on the quantized build, saved from a plain one
    saved = json.loads((result.model_dir / "config.json").read_text())
    assert "quantization_config" not in saved
    generated = bridgetune.generate(
        result.model_dir, ["where is my order", "refund"], max_new_tokens=12
    )
    assert [g["text"] for g in generated] == ["it ships tomorrow", "the money is back in five days"]


@pytest.mark.parametrize("task_name", ["causal_lm", "seq2seq"])
def test_a_huge_text_is_cut_before_tokenizing_and_keeps_the_same_tokens(tiny_llama, task_name):
    """A 4-million-character answer costs no gigabytes: contents are cut to the character
    bound first (bridgetune.data.bounds), and the kept tokens are those of the whole text."""
    from bridgetune.data.bounds import char_budget

    tokenizer = tokenizer_of(tiny_llama)
    task = build_task(task_name, [])
    words = "hello world " * 400_000
    examples = [Example(text="hello " + words, label={"completion": words})]
    short = [Example(text="hello " + words[: char_budget(16)],
                     label={"completion": words[: char_budget(16)]})]  # fmt: skip
    huge, cut = task.encode(examples, tokenizer, 16)[0], task.encode(short, tokenizer, 16)[0]
    assert huge["truncated"] and huge["input_ids"] == cut["input_ids"]
    assert huge["labels"] == cut["labels"]
