"""Method x task conformance: for every tuning method and every task, only the expected
parameters train, the head trains and is saved, merged equals unmerged, and a saved directory
loads back (Predictor; plain transformers for merged ones) to the same logits. Encoder tasks run
on a WordPiece BERT and on a BERT with XLM-R's SentencePiece vocabulary (multilingual-e5-small's
shape), the latter on Chinese and English inputs its task encodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import bridgetune
from bridgetune.config import ConfigError, MethodConfig
from bridgetune.data.schema import Example
from bridgetune.export.model_dir import save_model_dir
from bridgetune.heads import output_logits
from bridgetune.inference.predictor import Predictor
from bridgetune.methods import METHODS as METHOD_REGISTRY
from bridgetune.methods import apply_method, count_parameters
from bridgetune.methods.peft import MERGEABLE, AdapterModel
from bridgetune.methods.prefix import PrefixModel
from bridgetune.tasks import TASKS as TASK_REGISTRY
from bridgetune.tasks import build_task, reader_for
from tests.conftest import tiny_config

# generated from the registries: a new method or task joins the matrix without a test edit
METHODS = list(METHOD_REGISTRY)
TASKS = list(TASK_REGISTRY)
# the head modules of BERT's task models (and of the relation classifier around a BERT)
HEADS = ("classifier", "pooler", "qa_outputs", "relation_dense")
# the tiny model of a task's kind: a decoder or an encoder-decoder for generative tasks
TINY = {"AutoModelForCausalLM": "tiny_llama", "AutoModelForSeq2SeqLM": "tiny_t5"}
# encoder tasks also run on a BERT with XLM-R's SentencePiece vocabulary and no token types
# (multilingual-e5-small's shape: <s>=0, <pad>=1, </s>=2), their inputs encoded by the task itself
ENCODER_TASKS = [task for task in TASKS if TASK_REGISTRY.get(task).auto_class not in TINY]
BODIES = [pytest.param(task, None, id=task) for task in TASKS] + [
    pytest.param(task, "tiny_xlmr_bert", id=f"{task}-xlmr") for task in ENCODER_TASKS
]
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids")
PEFT_MARKERS = {
    "lora": "lora_",
    "ia3": "ia3_",
    "prefix": "prefix",
    "prompt": "prompt_encoder",
    "ptuning": "prompt_encoder",
}


def labels_of(task: str) -> list[str]:
    reader = reader_for(task)
    if reader.tagged:
        return ["O", "B-X", "I-X", "B-Y", "I-Y"]
    return reader.infer_labels([], None) or ["L0", "L1", "L2"]  # regression: its one target


def task_tokenizer(tiny_bert: Path, task: str) -> Any:
    """The model's tokenizer with the task's own tokens (the relation task's markers)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    build_task(task, labels_of(task)).prepare_tokenizer(tokenizer)
    return tokenizer


def build(tiny_bert: Path, task: str) -> torch.nn.Module:
    """The task's model, its embeddings grown for the task's tokens as training grows them."""
    from transformers import AutoTokenizer

    from bridgetune.models.pretrained import grow_embeddings

    kind = build_task(task, labels_of(task))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    kind.prepare_tokenizer(tokenizer)
    model = kind.build_model(str(tiny_bert))
    grow_embeddings(model, tokenizer)
    return model


def should_train(method: str, name: str) -> bool | None:
    """Whether parameter `name` trains under `method`; None for a method this table does not
    know yet (the matrix then checks only that the head trains and the body does not all)."""
    head = any(f".{part}." in f".{name}" for part in HEADS)
    if method == "full":
        return True
    if method == "head_only":
        return head
    if method == "bitfit":
        return head or name.endswith(".bias")
    if method == "prefix":  # ours, not peft's: the prefix tensor and the head itself
        return name == "prefix" or head
    if method not in PEFT_MARKERS:
        return None
    return "modules_to_save" in name or PEFT_MARKERS[method] in name


def inputs(task: str) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 10, 11, 3, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    if TASK_REGISTRY.get(task).takes_pairs:
        batch["token_type_ids"] = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0]])
    if TASK_REGISTRY.get(task).auto_class == "AutoModelForSeq2SeqLM":
        batch["decoder_input_ids"] = torch.tensor([[0, 7, 8], [0, 10, 11]])
    return batch


def encoded_inputs(task: str, tokenizer: Any) -> dict[str, torch.Tensor]:
    """A batch of a Chinese and an English input as task `task` encodes and pads them with
    `tokenizer` (its special tokens, its padding id, token types only where it makes them)."""
    kind = build_task(task, labels_of(task))
    kind.prepare_tokenizer(tokenizer)
    examples = [sample_example(task, chinese=True), sample_example(task)]
    batch = kind.collate(kind.encode(examples, tokenizer, 32), tokenizer.pad_token_id)
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float error: merging an adapter into weights rounds in fp32, and the tiny
    Llama's large weights (logits up to ~10) leave differences up to ~2e-5."""
    return torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return output_logits(model.eval()(**batch))


def refusal_probe(tiny_bert: Path, task: str, method: str, **options: Any) -> Any:
    from bridgetune.config import build_config

    data = {"train": "x.csv", "text_pair_column": "b"}
    return build_config({"task": task, "model": {"name": str(tiny_bert)}, "data": data,
                         "method": {"name": method, **options}})  # fmt: skip


def refuses(tiny_bert: Path, task: str, method: str, **options: Any) -> bool:
    """Whether the task refuses the method (with these options) before training."""
    try:
        TASK_REGISTRY.get(task).check_config(refusal_probe(tiny_bert, task, method, **options))
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(("task", "body"), BODIES)
@pytest.mark.parametrize("method", METHODS)
def test_method_conformance(request, tmp_path, method, task, body) -> None:

    torch.manual_seed(0)
    # a language model (causal, seq2seq, masked-LM pre-training) has no task head
    generative = TASK_REGISTRY.get(task).problem in ("lm", "seq2seq", "mlm")
    tiny = body or TINY.get(TASK_REGISTRY.get(task).auto_class, "tiny_bert")
    base = request.getfixturevalue(tiny)
    try:  # a task may refuse a method, with a reason (checked here)
        TASK_REGISTRY.get(task).check_config(refusal_probe(base, task, method))
    except ValueError as error:
        assert f"method.name={method!r}" in str(error) and "use " in str(error)
        return
    problem = TASK_REGISTRY.get(task).problem
    built = build(base, task)
    headless = hasattr(built, "head_modules") and not built.head_modules()  # the bi-encoder
    try:
        model = apply_method(built, MethodConfig(name=method), problem, str(base))
    except ConfigError as error:  # bitfit on a model without biases (Llama)
        assert "leaves nothing to train" in str(error)
        return
    named = dict(model.named_parameters())
    trainable = {name for name, p in named.items() if p.requires_grad}
    if should_train(method, next(iter(named))) is None or generative:
        # a language model has no task head: its methods adapt the body only
        assert trainable and (method == "full" or len(trainable) < len(named))
        assert not generative or not any("modules_to_save" in name for name in named)
    else:
        assert trainable == {name for name in named if should_train(method, name)}
        parts = [part for part in HEADS if any(f".{part}." in f".{name}" for name in named)]
        assert parts or headless
        for part in parts:
            assert any(f".{part}." in f".{name}" for name in trainable), part  # the head trains
    with torch.no_grad():  # as training would: every trainable tensor moves
        for name in sorted(trainable):  # a set: its order varies with PYTHONHASHSEED
            named[name].add_(torch.randn_like(named[name]) * 0.2)
    tokenizer = task_tokenizer(base, task)
    batch = encoded_inputs(task, tokenizer) if body else inputs(task)
    before = logits(model, batch)
    exports = ["merged", "adapter"] if method in MERGEABLE else [None]
    meta = {"task": task, "labels": labels_of(task), "tag_scheme": "IOB2", "max_length": 32}
    for export in exports:
        if export and refuses(base, task, method, export=export):  # the relation head: merged
            continue
        if export:
            model.export = export
            assert same(logits(model.merged(), batch), before)
        directory = save_model_dir(tmp_path / str(export), model, tokenizer, meta)
        loaded = Predictor.load(directory, device="cpu").model
        assert same(logits(loaded, batch), before), export
        if isinstance(model, AdapterModel) and export != "merged":
            assert (directory / "adapter_model.safetensors").is_file()
            continue
        if isinstance(model, PrefixModel):
            assert (directory / "prefix_model.safetensors").is_file()
            continue
        import transformers

        head = json.loads((directory / "bridgetune.json").read_text()).get("head") or {}
        if head.get("type") in ("relation", "bi_encoder"):  # plain transformers: the encoder
            encoder = transformers.AutoModel.from_pretrained(directory, **head["encoder_kwargs"])
            with torch.no_grad():
                hidden = encoder.eval()(**batch).last_hidden_state
                assert same(hidden, loaded.encoder(**batch).last_hidden_state)
            continue
        auto_class = TASK_REGISTRY.get(task).auto_class
        plain = getattr(transformers, auto_class).from_pretrained(directory)
        assert same(logits(plain, batch), before)
        if not generative:
            assert plain.config.id2label[0] == labels_of(task)[0]


def test_trainable_counts_shrink_with_parameter_efficient_methods(tiny_bert) -> None:
    counts = {}
    for method in METHODS:
        model = apply_method(
            build(tiny_bert, "classification"), MethodConfig(name=method), "single", "x"
        )
        counts[method] = count_parameters(model)
    full_trainable, full_total = counts["full"]
    assert full_trainable == full_total
    for method in set(METHODS) - {"full"}:
        assert counts[method][0] < full_trainable / 2, method
    assert counts["head_only"][0] == (32 * 32 + 32) + (32 * 3 + 3)  # pooler + classifier


def test_freezing_embeddings_and_bottom_layers(tiny_bert) -> None:
    cfg = MethodConfig(name="full", freeze_embeddings=True, freeze_layers=1)
    model = apply_method(build(tiny_bert, "classification"), cfg, "single", "x")
    for name, parameter in model.named_parameters():
        frozen = ".embeddings." in f".{name}" or ".layer.0." in name
        assert parameter.requires_grad != frozen, name
    with pytest.raises(ValueError, match="freeze_layers=5: the model has 2 layers"):
        apply_method(
            build(tiny_bert, "classification"),
            MethodConfig(name="full", freeze_layers=5),
            "single",
            "x",
        )


@pytest.mark.parametrize("export", ["merged", "adapter"])
def test_lora_trains_end_to_end_and_reloads_identically(
    tiny_bert, sentiment_csv, tmp_path, export
) -> None:
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        method={"name": "lora", "r": 4, "export": export},
        train={"epochs": 20, "lr": 1e-2},
    )
    result = bridgetune.train(config)
    assert result.metrics["accuracy"] == 1.0  # LoRA + head overfit the 8 examples
    reloaded = bridgetune.evaluate(result.model_dir, sentiment_csv)
    assert reloaded["accuracy"] == result.metrics["accuracy"]
    assert (result.model_dir / "adapter_config.json").exists() == (export == "adapter")
    assert bridgetune.load(result.model_dir).meta["method"] == "lora"


def test_prompt_tuning_for_ner_end_to_end(tiny_bert, ner_conll, tmp_path) -> None:
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        task="ner",
        data={"train": str(ner_conll), "dev": str(ner_conll)},
        method={"name": "prompt", "num_virtual_tokens": 4},
        train={"epochs": 2},
    )
    result = bridgetune.train(config)
    predictions = bridgetune.predict(result.model_dir, ["john smith visited paris"])
    assert [len(p["tags"]) for p in predictions] == [4]  # one tag per word, no virtual tokens


def test_prefix_tuning_trains_end_to_end_and_reloads_identically(
    tiny_bert, sentiment_csv, tmp_path
) -> None:
    config = tiny_config(
        tiny_bert,
        tmp_path / "runs",
        data={"train": str(sentiment_csv), "dev": str(sentiment_csv)},
        method={"name": "prefix", "num_virtual_tokens": 4},
        train={"epochs": 10, "lr": 3e-2},
    )
    result = bridgetune.train(config)
    history = json.loads((result.model_dir.parent / "history.json").read_text())
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert losses[-1] < losses[0] * 0.9  # (a frozen random tiny body cannot reach 100%)
    assert bridgetune.evaluate(result.model_dir, sentiment_csv) == result.metrics
    assert (result.model_dir / "prefix_model.safetensors").is_file()


def test_prefix_reaches_every_layer_and_padding_stays_masked(tiny_bert) -> None:
    torch.manual_seed(0)
    model = apply_method(
        build(tiny_bert, "ner"), MethodConfig(name="prefix", num_virtual_tokens=3), "token", "x"
    ).eval()
    short = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4)}
    padded = {
        "input_ids": torch.tensor([[2, 10, 11, 3, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0]]),
    }
    alone = logits(model, short)
    assert torch.allclose(logits(model, padded)[:, :4], alone, atol=1e-5)  # pads unseen
    for layer in range(2):  # each layer's prefix changes the output
        with torch.no_grad():
            model.prefix[layer].add_(1.0)
        assert not torch.allclose(logits(model, short), alone, atol=1e-4), layer
        with torch.no_grad():
            model.prefix[layer].sub_(1.0)
    model.train()
    tags = torch.tensor([[0, 1, 2, 0]])  # the task's loss of the adapter's logits
    build_task("ner", ["O", "B-X", "I-X"]).loss(output_logits(model(**short)), tags).backward()
    assert model.prefix.grad is not None and model.prefix.grad.abs().sum() > 0


def test_unknown_method_is_a_config_error_with_a_hint(tiny_bert, tmp_path) -> None:
    config = tiny_config(tiny_bert, tmp_path, data={"train": "x.csv"}, method={"name": "lorra"})
    with pytest.raises(ConfigError, match="did you mean 'lora'"):
        bridgetune.train(config)


def test_a_lora_target_that_matches_nothing_fails_before_reading_data(tiny_bert, tmp_path):
    config = tiny_config(
        tiny_bert,
        tmp_path,
        data={"train": str(tmp_path / "missing.csv")},  # never read: the method check is first
        method={"name": "lora", "target_modules": ["qkv_proj"]},
    )
    with pytest.raises(
        ConfigError, match=r"target_modules=\['qkv_proj'\] matches no module.*query"
    ):
        bridgetune.train(config)


def test_incompatible_method_options_fail_at_validation(tiny_bert, tmp_path) -> None:
    bad = [
        (
            {"name": "lora", "freeze_layers": 2},
            "method.freeze_layers: applies to full; method 'lora' takes export, r, alpha, "
            "dropout, target_modules",
        ),
        (
            {"name": "prefix", "target_modules": ["query"]},
            "applies to ia3, lora; method 'prefix' takes num_virtual_tokens",
        ),
        ({"name": "bitfit", "rank": 4}, "method 'bitfit' takes no options"),
        ({"name": "lora", "r": 0}, "method.r: Input should be greater than 0"),
    ]
    for method, message in bad:
        config = tiny_config(tiny_bert, tmp_path, data={"train": "x.csv"}, method=method)
        with pytest.raises(ConfigError, match=message):
            bridgetune.as_config(config)


def test_lora_adapts_every_linear_layer_of_the_body_by_default(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    model = apply_method(
        DistilBertForSequenceClassification(config), MethodConfig(name="lora"), "single", "x"
    )
    adapted = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1]
        for n, _ in model.named_parameters()
        if ".lora_A" in n
    }
    assert {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"} <= adapted


def test_an_unknown_head_type_names_the_file_and_the_closest_type(served_classifier, tmp_path):
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(served_classifier, broken)
    meta = json.loads((broken / "bridgetune.json").read_text())
    meta["head"] = {"type": "adaptr"}
    (broken / "bridgetune.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"bridgetune.json: unknown head type 'adaptr'; did you"):
        Predictor.load(broken, device="cpu")


def sample_example(task: str, chinese: bool = False) -> Example:
    """An unlabelled input of the kind task `task` reads (from what it declares)."""
    kind = TASK_REGISTRY.get(task)
    if reader_for(task).tagged:  # split into words by the task
        return Example(text="张三在上海买的耳机" if chinese else "john smith visited paris")
    if task == "relation":  # the head and tail marked
        if chinese:
            return Example(text="<e1>张三</e1>在<e2>上海</e2>买的耳机")
        return Example(text="<e1>john smith</e1> visited <e2>paris</e2>")
    if kind.output == "ranking":
        if chinese:
            return Example(text="手机", candidates=["手机坏了", "今天很好"])
        return Example(text="my order", candidates=["my order is late", "great phone"])
    if chinese:
        return Example(text="耳机还没到", text_pair="手机坏了" if kind.takes_pairs else None)
    pair = "the delivery is slow" if kind.takes_pairs else None
    return Example(text="my order is late", text_pair=pair)


@pytest.mark.parametrize(("task", "body"), BODIES)
def test_every_task_decodes_what_its_prediction_model_declares(request, task, body) -> None:
    """`Task.prediction` is the contract of `decode`: every field present and typed."""
    from transformers import AutoTokenizer

    from bridgetune.inference.predictor import infer

    seq2seq = TASK_REGISTRY.get(task).auto_class == "AutoModelForSeq2SeqLM"
    tiny_bert = request.getfixturevalue(body or ("tiny_t5" if seq2seq else "tiny_bert"))
    kind = build_task(task, labels_of(task))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    kind.prepare_tokenizer(tokenizer)
    examples = [sample_example(task, chinese=body is not None), sample_example(task)]
    features = kind.encode(examples, tokenizer, 32)
    model = build(tiny_bert, task)
    pad_id = tokenizer.pad_token_id or 0
    predictions = infer(model, kind, features, examples, pad_id, torch.device("cpu"))
    for prediction in predictions:
        kind.prediction.model_validate(prediction)
