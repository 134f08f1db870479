"""seq2seq and the generation metrics: source/target rows, parallel files and headerless TSV
read and checked, teacher forcing built by hand-checked shifts, a tiny T5 fine-tuned (LoRA and
full) that writes its targets, generation metrics and sample tables at the end of training,
decoding options saved as the generation config, and ROUGE/BLEU/chrF by words and by Chinese
characters on hand-computed cases."""

from __future__ import annotations

import json

import pytest
import torch

import bridgetune
from bridgetune.config import ConfigError, DataConfig
from bridgetune.data.schema import DataError, Example
from bridgetune.inference.generation import is_chinese, prompt_and_references, text_metrics
from bridgetune.tasks import build_task
from bridgetune.tasks.losses import IGNORE
from tests.conftest import tiny_config
from tests.test_causal_lm import read, write_jsonl

PAIRS = [
    {"prompt": "where is my order", "completion": "it ships tomorrow"},
    {"prompt": "refund", "completion": "the money is back in five days"},
    {"prompt": "what colour", "completion": "black and white"},
]


def test_sources_and_targets_end_with_eos_and_the_decoder_input_is_the_shifted_target(tiny_t5):
    from bridgetune.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_t5))
    task = build_task("seq2seq", [], decoder_start=0)
    examples = [
        Example(text="refund", label={"completion": "black"}),
        Example(text="where is my order", label={"completion": "it ships tomorrow"}),
    ]
    features = task.encode(examples, tokenizer, 64)
    word = tokenizer.convert_tokens_to_ids
    eos = tokenizer.eos_token_id
    assert features[0]["input_ids"] == [word("refund"), eos]
    assert features[0]["labels"] == [word("black"), eos]
    batch = task.collate(features, tokenizer.pad_token_id)
    assert batch["labels"][0].tolist() == [word("black"), eos, IGNORE, IGNORE]
    shifted = [0, word("it"), word("ships"), word("tomorrow")]
    assert batch["decoder_input_ids"][1].tolist() == shifted
    assert batch["decoder_input_ids"][0].tolist() == [0, word("black"), 0, 0]
    assert batch["decoder_attention_mask"][0].tolist() == [1, 1, 0, 0]
    # a source over max_length keeps its closing EOS and is counted as cut
    cut = task.encode(examples[1:], tokenizer, 3)[0]
    assert cut["input_ids"] == [word("where"), word("is"), eos] and cut["truncated"]


@pytest.mark.slow  # T5 trained twice to its targets with generation metrics (~11 s)
@pytest.mark.parametrize("method", ["lora", "full"])
def test_t5_learns_its_targets_and_the_run_reports_generation_metrics(tiny_t5, tmp_path, method):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = tiny_config(
        tiny_t5,
        tmp_path / "runs",
        task="seq2seq",
        data={"train": str(data), "dev": str(data)},
        train={"epochs": 100, "lr": 1e-2},
        generate={"max_new_tokens": 10, "num_beams": 2},
    )
    if method == "full":
        config["method"] = {"name": "full"}
    cfg = bridgetune.as_config(config)
    assert cfg.method.name == method
    result = bridgetune.train(cfg)
    metrics = result.metrics
    assert metrics["perplexity"] < 1.2
    assert metrics["exact_match"] == 100 and metrics["rougeL"] == 100 and metrics["chrf"] == 100
    assert metrics["finished"] == 100 and metrics["generated"] == 3
    report = (result.run_dir / "dev_report.md").read_text(encoding="utf-8")
    assert "| refund | the money is back in five days | the money is back in five days |" in report
    generated = bridgetune.generate(result.model_dir, ["refund", "what colour"])
    assert [g["text"] for g in generated] == ["the money is back in five days", "black and white"]
    # the run's decoding options are the model's generation config, read by plain transformers
    saved = json.loads((result.model_dir / "generation_config.json").read_text())
    assert saved["max_new_tokens"] == 10 and saved["num_beams"] == 2
    if method == "full":  # `bridgetune evaluate` on a labelled file, once
        evaluated = bridgetune.evaluate(result.model_dir, data, output=tmp_path / "report")
        assert evaluated["exact_match"] == 100 and evaluated["perplexity"] < 1.2
        assert "Sample generations" in (tmp_path / "report" / "eval_report.md").read_text()
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
        plain = AutoModelForSeq2SeqLM.from_pretrained(result.model_dir)
        out = plain.generate(**tokenizer(["what colour"], return_tensors="pt"))
        assert tokenizer.decode(out[0], skip_special_tokens=True) == "black and white"


@pytest.mark.slow  # ~7 s: a T5 LoRA run saved and reloaded (the default suite was over 5 min)
def test_an_adapter_directory_reloads_to_the_same_generations(tiny_t5, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = tiny_config(
        tiny_t5, tmp_path / "runs", task="seq2seq", data={"train": str(data), "dev": str(data)},
        train={"epochs": 60, "lr": 1e-2}, method={"name": "lora", "export": "adapter"},
        generate={"eval_examples": 0},
    )  # fmt: skip
    result = bridgetune.train(config)
    assert "exact_match" not in result.metrics  # eval_examples: 0 generates nothing
    assert (result.model_dir / "adapter_model.safetensors").is_file()
    first = bridgetune.generate(result.model_dir, [p["prompt"] for p in PAIRS])
    again = bridgetune.generate(result.model_dir, [p["prompt"] for p in PAIRS])
    assert first == again and first[1]["text"] == "the money is back in five days"

    # served: an encoder-decoder generates one request at a time through model.generate
    from fastapi.testclient import TestClient

    from bridgetune.inference.predictor import Predictor
    from bridgetune.serve.app import create_app

    with TestClient(create_app(Predictor.load(result.model_dir, device="cpu"))) as client:
        served = client.post("/v1/generate", json={"prompts": [p["prompt"] for p in PAIRS]})
        assert served.status_code == 200, served.text
        assert [g["text"] for g in served.json()["generations"]] == [g["text"] for g in first]
        assert client.app.state.service.slot.engine is False  # no batched engine for T5


def test_generation_metrics_at_every_evaluation_can_pick_the_best_checkpoint(tiny_t5, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = tiny_config(
        tiny_t5, tmp_path / "runs", task="seq2seq", data={"train": str(data), "dev": str(data)},
        train={"epochs": 4, "lr": 1e-2, "metric": "rougeL"},
        generate={"eval_sample": 2, "eval_examples": 0, "max_new_tokens": 6},
    )  # fmt: skip
    result = bridgetune.train(config)
    evaluations = [h for h in result.history if "rougeL" in h]
    assert len(evaluations) == 4 and all("chrf" in h and "loss" in h for h in evaluations)
    assert all(h["metric_name"] == "rougeL" for h in evaluations)


def test_options_of_decoder_only_models_are_refused_for_seq2seq(tiny_t5, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = tiny_config(tiny_t5, tmp_path / "runs", task="seq2seq", data={"train": str(data)})
    with pytest.raises(ConfigError, match="task.packing: applies to causal_lm; task 'seq2seq'"):
        bridgetune.as_config({**config, "train": {**config["train"], "packing": True}})
    with pytest.raises(ConfigError, match="for seq2seq use lora"):
        bridgetune.as_config({**config, "method": {"name": "prefix"}})
    message = "task.as_chat: applies to causal_lm; task 'seq2seq' takes prompt_template"
    with pytest.raises(ConfigError, match=message):  # data.as_chat, the older spelling, too
        bridgetune.as_config({**config, "data": {**config["data"], "as_chat": True}})


def test_parallel_files_are_read_line_by_line_with_errors_at_file_and_line(tmp_path):
    (tmp_path / "train.en").write_text("a dog runs\na cat sleeps\n", encoding="utf-8")
    (tmp_path / "train.de").write_text("ein hund rennt\neine katze schläft\n", encoding="utf-8")
    prefix = tmp_path / "train"
    examples = read(
        prefix, format="parallel", languages=["en", "de"],
        prompt_template="Translate English to German: {prompt}",
    )  # fmt: skip
    assert examples[1].text == "Translate English to German: a cat sleeps"
    assert examples[1].label == {"completion": "eine katze schläft"}
    assert examples[1].source == f"{tmp_path / 'train.en'}:2"
    (tmp_path / "train.de").write_text("ein hund rennt\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.de:2: empty or missing completion"):
        read(prefix, format="parallel", languages=["en", "de"])
    skipped = read(prefix, format="parallel", languages=["en", "de"], invalid_rows="skip")
    assert [e.text for e in skipped] == ["a dog runs"]
    (tmp_path / "train.de").write_text("ein hund rennt\n", encoding="utf-8")
    with pytest.raises(DataError, match="has 2 lines and .*train.de has 1"):
        read(prefix, format="parallel", languages=["en", "de"])
    with pytest.raises(ValueError, match="set data.languages"):
        DataConfig(train=str(prefix), format="parallel")
    config = {"data": {"train": str(prefix), "format": "parallel", "languages": ["en", "de"]},
              "task": {"name": "seq2seq", "prompt_template": "Translate:"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"task.prompt_template: .*must contain \{prompt\}"):
        bridgetune.as_config(config)


def test_headerless_tsv_lists_of_sentences_and_several_references(tmp_path):
    tsv = tmp_path / "cmn.txt"
    tsv.write_text("Hi.\t嗨。\tCC-BY 2.0 (France)\nRun!\t你用跑的。\tCC-BY\n", encoding="utf-8")
    examples = read(tsv, format="tsv", columns=["prompt", "completion", "attribution"])
    pairs = [(e.text, e.label["completion"]) for e in examples]
    assert pairs == [("Hi.", "嗨。"), ("Run!", "你用跑的。")]
    tsv.write_text("Hi.\t嗨。\tCC\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cmn.txt:1: more fields than the 3 of data.columns"):
        read(tsv, format="tsv", columns=["prompt", "completion", "attribution"])
    scitldr = write_jsonl(
        tmp_path / "tldr.jsonl",
        [{"source": ["We study X.", "It works."], "target": ["X works.", "X is good."]}],
    )
    example = read(scitldr, column_map={"source": "prompt", "target": "completion"})[0]
    assert example.text == "We study X. It works."
    assert example.label["completion"] == "X works."
    assert prompt_and_references(example) == ("We study X. It works.", ["X works.", "X is good."])
    chat = read(scitldr, column_map={"source": "prompt", "target": "completion"}, as_chat=True)[0]
    assert chat.label["messages"][1] == {"role": "assistant", "content": "X works."}
    prompt, references = prompt_and_references(chat)
    assert prompt == [{"role": "user", "content": "We study X. It works."}]
    assert references == ["X works.", "X is good."]


def test_text_metrics_by_words_and_by_chinese_characters():
    english = text_metrics(["the cat sat", "a dog"], [["the cat sat"], ["the dog ran", "a dog"]])
    assert english["exact_match"] == 100 and english["rouge1"] == 100  # best reference counts
    assert english["scored_by"] == "words"
    half = text_metrics(["the cat"], [["the dog"]])
    assert half["rouge1"] == pytest.approx(50.0) and half["rouge2"] == 0.0
    # rouge-score's own tokenizer drops every Chinese character; by characters 我爱 of 4 match
    chinese = text_metrics(["我爱北京"], [["我爱上海"]])
    assert chinese["scored_by"] == "characters"
    assert chinese["rouge1"] == pytest.approx(50.0) and chinese["rouge2"] == pytest.approx(100 / 3)
    assert chinese["bleu"] >= 0 and 0 < chinese["chrf"] < 100
    assert text_metrics(["我爱北京"], [["我爱北京"]])["bleu"] == pytest.approx(100.0)
    assert is_chinese(["今天天气很好", "我们走吧"]) and not is_chinese(["hello", "今天 is nice"])
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        text_metrics(["a", "b"], [["a"]])


def test_gpt2_without_a_chat_template_learns_plain_completions(tiny_gpt2, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    config = tiny_config(
        tiny_gpt2, tmp_path / "runs", task="causal_lm",
        data={"train": str(data), "dev": str(data)}, train={"epochs": 60, "lr": 1e-2},
        generate={"max_new_tokens": 10}, method={"name": "full"},
    )  # fmt: skip
    result = bridgetune.train(config)
    assert result.metrics["exact_match"] == 100 and result.metrics["finished"] == 100
    assert not json.loads((result.model_dir / "bridgetune.json").read_text())["settings"]["chat"]
    with torch.no_grad():
        generated = bridgetune.generate(result.model_dir, ["what colour"])
    assert generated[0]["text"] == "black and white"


def test_lora_adapts_gpt2_conv1d_layers_in_their_own_orientation(tiny_gpt2):
    import warnings

    from transformers import AutoModelForCausalLM

    from bridgetune.config import MethodConfig
    from bridgetune.methods import apply_method

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ids = torch.tensor([[3, 4, 5]])
    before = model(input_ids=ids).logits
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft warns when fan_in_fan_out is wrong for Conv1D
        adapted = apply_method(model, MethodConfig(name="lora"), "lm", str(tiny_gpt2))
    assert torch.allclose(adapted(input_ids=ids).logits, before, atol=1e-5)  # B starts at 0


def test_gradient_checkpointing_recomputes_activations_and_trains_to_the_same_losses(
    tiny_llama, tmp_path, monkeypatch
):
    from transformers.models.llama.modeling_llama import LlamaMLP

    from tests.test_causal_lm import SUPPORT

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    calls = []
    real = LlamaMLP.forward  # inside the checkpointed layer: runs again when recomputed
    monkeypatch.setattr(LlamaMLP, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))

    def losses(checkpoint: bool) -> tuple[list[float], int]:
        calls.clear()
        config = tiny_config(
            tiny_llama, tmp_path / f"runs-{checkpoint}", task="causal_lm",
            data={"train": str(data), "dev": str(data)},
            train={"epochs": 3, "lr": 1e-2, "gradient_checkpointing": checkpoint, "log_every": 1},
            generate={"eval_examples": 0},
        )  # fmt: skip
        config["model"]["dropout"] = 0.0
        history = bridgetune.train(config).history
        return [h["loss"] for h in history if "loss" in h], len(calls)

    plain, forwards = losses(False)
    checkpointed, recomputed = losses(True)
    # every training step runs each layer's forward again in the backward pass
    assert recomputed > forwards * 1.3
    assert checkpointed == pytest.approx(plain, rel=1e-4)


def test_qlora_needs_lora_a_generative_task_and_a_cuda_gpu(tiny_llama, tmp_path):
    from tests.test_causal_lm import SUPPORT

    data = write_jsonl(tmp_path / "chat.jsonl", SUPPORT)
    config = tiny_config(
        tiny_llama, tmp_path / "runs", task="causal_lm", data={"train": str(data)},
    )  # fmt: skip
    config["model"]["quantization"] = "4bit"
    with pytest.raises(ConfigError, match="QLoRA: LoRA on a quantized causal_lm"):
        bridgetune.as_config({**config, "method": {"name": "full"}})
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error below is for machines without one")
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU \(this machine has none\)"):
        bridgetune.train(config)
    assert not (tmp_path / "runs" / "tiny" / "model").exists()


def test_greedy_runs_drop_the_base_models_sampling_defaults(tiny_t5, tmp_path):
    from transformers import GenerationConfig

    from bridgetune.config import GenerateConfig
    from bridgetune.inference.generation import configure_generation
    from bridgetune.models import load_tokenizer
    from bridgetune.tasks import build_task

    model = build_task("seq2seq", []).build_model(str(tiny_t5))
    model.generation_config.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    configure_generation(model, load_tokenizer(str(tiny_t5)), GenerateConfig(num_beams=3))
    model.generation_config.save_pretrained(tmp_path)  # validates: no sampling option left over
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert not saved.do_sample and saved.num_beams == 3
    assert saved.temperature in (None, 1.0) and saved.top_p in (None, 1.0)
