"""Every shipped config, the README's Python snippet and docs/config.md run or match (tiny)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SENTIMENT, write_conll

import bridgetune
from bridgetune.config import load_config
from bridgetune.recipes.reference import config_reference
from bridgetune.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))
# data lives outside the repo: these train on small files of the same layout below
SHARED = {"sst2.yaml", "conll2003.yaml", "alpaca_zh.yaml", "taskmaster_coffee.yaml",
          "scitldr.yaml", "multi30k_en_de.yaml", "tatoeba_en_zh.yaml", "cluener.yaml",
          "weibo_ner.yaml", "zh_pretrain.yaml", "conll2003_pretrain.yaml",
          "cmrc2018.yaml", "semeval2010_task8.yaml", "finre.yaml", "sst2_distill.yaml"}  # fmt: skip
TINY = {"AutoModelForCausalLM": "tiny_llama", "AutoModelForSeq2SeqLM": "tiny_t5"}
# the Chinese configs name the multilingual encoder: its tiny stand-in has XLM-R's tokenizer
MULTILINGUAL = "tiny_xlmr_bert"


def _tiny(model: Path, run_dir: Path) -> list[str]:
    return [
        f"model.name={model}",
        f"output_dir={run_dir}",
        "train.epochs=1",
        "train.batch_size=8",
        "data.max_train_examples=24",
        "data.max_eval_examples=12",
    ]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path):
    assert load_config(path).name


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name not in SHARED], ids=lambda p: p.name)
def test_shipped_config_trains_on_its_data(path, tmp_path, request):
    # the tiny model of the config's kind: a decoder for generative tasks, else an encoder
    cfg = load_config(path)
    auto_class = TASKS.get(cfg.task.name).auto_class
    encoder = MULTILINGUAL if cfg.model.name == "multilingual" else "tiny_bert"
    model = request.getfixturevalue(TINY.get(auto_class, encoder))
    result = bridgetune.train(path, _tiny(model, tmp_path))
    assert (result.model_dir / "bridgetune.json").is_file()
    if auto_class in TINY:  # generations scored at the end, with a sample table
        assert "chrf" in result.metrics
        assert "Sample generations" in (result.run_dir / "dev_report.md").read_text("utf-8")


def test_sst2_config_with_its_column_map(tiny_bert, tmp_path):
    train = tmp_path / "train.tsv"
    dev = tmp_path / "dev.tsv"
    train.write_text(
        "label\tsentence\n" + "".join(f"{int(y == 'positive')}\t{t}\n" for t, y in SENTIMENT),
        encoding="utf-8",
    )
    dev.write_text(
        "label\tcontent\n" + "".join(f"{int(y == 'positive')}\t{t}\n" for t, y in SENTIMENT),
        encoding="utf-8",
    )
    result = bridgetune.train(
        ROOT / "examples/configs/sst2.yaml",
        [
            *_tiny(tiny_bert, tmp_path),
            f"data.train={train}",
            f"data.dev={dev}",
            "train.eval_steps=2",
        ],
    )
    assert result.metrics["labels"] == ["0", "1"]


def test_conll_config(tiny_bert, ner_conll, tmp_path):
    result = bridgetune.train(
        ROOT / "examples/configs/conll2003.yaml",
        [*_tiny(tiny_bert, tmp_path), f"data.train={ner_conll}", f"data.dev={ner_conll}"],
    )
    assert "entity_f1" in result.metrics


def test_chinese_ner_configs_on_files_of_their_layouts(tiny_xlmr_bert, tmp_path):
    """cluener.yaml (span JSON lines) and weibo_ner.yaml (character + position digit), on the
    multilingual encoder's tiny stand-in."""
    import json

    for name in ("cluener.yaml", "weibo_ner.yaml", "cmrc2018.yaml"):
        assert load_config(ROOT / "examples/configs" / name).model.name == "multilingual"
    rows = [{"text": "张三在上海买的耳机", "label": {"name": {"张三": [[0, 1]]},
                                              "address": {"上海": [[3, 4]]}}}] * 6  # fmt: skip
    spans = tmp_path / "cluener.json"
    spans.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    tiny = _tiny(tiny_xlmr_bert, tmp_path)
    result = bridgetune.train(ROOT / "examples/configs/cluener.yaml",
                       [*tiny, f"data.train={spans}", f"data.dev={spans}"])  # fmt: skip
    assert "entity_f1" in result.metrics
    # docs/chinese.md's gazetteer line: jieba's person and place names as features
    gazetteers = ["knowledge.gazetteers.person=jieba:nr", "knowledge.gazetteers.place=jieba:ns",
                  "name=lexicon"]  # fmt: skip
    data = [f"data.train={spans}", f"data.dev={spans}"]
    result = bridgetune.train(ROOT / "examples/configs/cluener.yaml", [*tiny, *data, *gazetteers])
    assert bridgetune.load(result.model_dir).task.gazetteer.types == ["person", "place"]
    weibo = tmp_path / "weibo.txt"
    message = "张0\tB-PER.NAM\n三1\tI-PER.NAM\n好0\tO\n\n李0\tI-PER.NAM\n四1\tI-PER.NAM\n\n"
    weibo.write_text(message * 6, "utf-8")  # the second message needs repair, as in Weibo
    result = bridgetune.train(ROOT / "examples/configs/weibo_ner.yaml",
                       [*tiny, f"data.train={weibo}", f"data.dev={weibo}",
                        "model.max_length=64"])  # fmt: skip
    assert "entity_f1" in result.metrics


def test_cmrc2018_config_on_a_file_of_its_layout(tiny_xlmr_bert, tmp_path):
    """cmrc2018.yaml: SQuAD v1.1 JSON with Chinese passages, scored by CMRC's character rules."""
    import json

    context = "浙商银行企业信贷部叶老桂博士在杭州工作。他喜欢上海的耳机。" * 3
    qas = [{"id": f"q{i}", "question": "叶老桂在哪里工作？",
            "answers": [{"text": "杭州", "answer_start": context.index("杭州")}] * 3}
           for i in range(8)]  # fmt: skip
    squad = {"version": "v1.0", "data": [{"id": "a", "title": "t", "paragraphs": [
        {"id": "p", "context": context, "qas": qas}]}]}  # fmt: skip
    data = tmp_path / "cmrc.json"
    data.write_text(json.dumps(squad, ensure_ascii=False), "utf-8")
    result = bridgetune.train(ROOT / "examples/configs/cmrc2018.yaml",
                              [*_tiny(tiny_xlmr_bert, tmp_path), f"data.train={data}",
                               f"data.dev={data}", "model.max_length=48"])  # fmt: skip
    assert {"exact_match", "f1"} <= set(result.metrics)


def test_zh_pretrain_config_on_a_file_of_its_layout(tiny_bert, tmp_path):
    """zh_pretrain.yaml: vocabulary extension, then whole-word masked-LM pre-training."""
    import json

    rows = [{"text": "浙商银行的叶老桂在杭州"}, {"text": "招商银行在深圳的网点"}] * 6
    corpus = tmp_path / "corpus.json"
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    result = bridgetune.pretrain(ROOT / "examples/configs/zh_pretrain.yaml",
                          [*_tiny(tiny_bert, tmp_path), f"data.train={corpus}",
                           f"data.dev={corpus}"])  # fmt: skip
    assert result.metrics["perplexity"] > 0
    assert (result.run_dir / "vocab_extension.json").is_file()


def test_conll_pretrain_config_reads_the_sentences_of_a_token_file(tiny_bert, ner_conll, tmp_path):
    """conll2003_pretrain.yaml: masked-LM pre-training on an NER file's text, tags ignored;
    without data.format: conll a .txt token file is refused, not read as documents."""
    from bridgetune.data.schema import DataError

    corpus = tmp_path / "train.txt"
    corpus.write_text(ner_conll.read_text("utf-8"), "utf-8")
    overrides = [*_tiny(tiny_bert, tmp_path), f"data.train={corpus}", f"data.dev={corpus}"]
    result = bridgetune.pretrain(ROOT / "examples/configs/conll2003_pretrain.yaml", overrides)
    assert result.metrics["perplexity"] > 0
    with pytest.raises(DataError, match="set data.format: conll"):
        bridgetune.pretrain(ROOT / "examples/configs/conll2003_pretrain.yaml",
                     [*overrides, "data.format=auto", "name=auto"])  # fmt: skip


def test_readme_python_snippet_runs(tiny_bert, tmp_path, monkeypatch):
    import bridgetune

    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
        if "bridgetune.train(" in b
    )
    real_train = bridgetune.train
    monkeypatch.setattr(
        bridgetune,
        "train",
        lambda config, overrides=(): real_train(
            config, [*overrides, *_tiny(tiny_bert, tmp_path / "runs")]
        ),
    )
    monkeypatch.chdir(ROOT)
    block = block.replace('output="reports/"', f'output="{tmp_path / "reports"}"')
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "reports" / "eval_report.md").is_file()


def test_docs_config_reference_is_current():
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == config_reference(), (
        "regenerate: python -m bridgetune.recipes.reference"
    )


def test_write_conll_helper_roundtrip(tmp_path):
    # guards the fixture other tests rely on
    path = write_conll(tmp_path / "x.conll", [[("a", "O"), ("b", "B-X")]])
    assert path.read_text().splitlines() == ["a X O", "b X B-X"]


def test_every_registered_task_has_a_shipped_example():
    """Generated from the task registry: a new task ships a config that the tests then train."""
    from bridgetune.tasks import TASKS

    shipped = {load_config(path).task.name for path in CONFIGS if path.name not in SHARED}
    assert set(TASKS) <= shipped, f"no example config for {sorted(set(TASKS) - shipped)}"


def test_generation_configs_for_the_shared_data_layouts(tiny_llama, tmp_path):
    """alpaca_en_zh and taskmaster4_coffee ship as JSON arrays; the configs map their fields."""
    import json

    alpaca = [
        {"en_instruction": "where is my order", "en_input": "", "en_output": "it ships tomorrow",
         "zh_instruction": "我的订单在哪里", "zh_input": "", "zh_output": "明天发货",
         "metadata": {"score": 5}},
    ] * 4  # fmt: skip
    dialogues = [
        {"conversation_id": "d1", "utterances": [
            {"index": 0, "speaker": "user", "text": "where is my order"},
            {"index": 1, "speaker": "assistant", "text": "it ships tomorrow"}]},
    ] * 4  # fmt: skip
    for name, rows in (("alpaca_zh.yaml", alpaca), ("taskmaster_coffee.yaml", dialogues)):
        data = tmp_path / f"{name}.json"
        data.write_text(json.dumps(rows, ensure_ascii=False, indent=4), encoding="utf-8")
        overrides = [*_tiny(tiny_llama, tmp_path), f"data.train={data}", f"data.dev={data}"]
        result = bridgetune.train(ROOT / "examples" / "configs" / name, overrides)
        assert result.metrics["tokens"] > 0


def test_summarization_and_translation_configs_for_the_shared_data_layouts(tiny_llama, tmp_path):
    """scitldr (lists of sentences and of references), multi30k (parallel files) and tatoeba
    (a TSV without header, Chinese scored by characters), on small files of their layouts."""
    import json

    words = "where is my order it ships tomorrow".split()
    scitldr = tmp_path / "scitldr.jsonl"
    scitldr.write_text(
        "".join(
            json.dumps({"source": ["where is my order", "it ships"], "target": ["tomorrow", "ok"],
                        "title": "t", "paper_id": str(i)}) + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )  # fmt: skip
    for side in ("en", "de"):
        (tmp_path / f"multi.{side}").write_text("\n".join(words) + "\n", encoding="utf-8")
    tatoeba = tmp_path / "tatoeba.tsv"
    tatoeba.write_text("Hi.\t嗨。\tCC-BY 2.0\nRun!\t你用跑的。\tCC-BY 2.0\n" * 3, encoding="utf-8")
    cases = {
        "scitldr.yaml": [f"data.train={scitldr}", f"data.dev={scitldr}"],
        "multi30k_en_de.yaml": [f"data.{split}={tmp_path / 'multi'}" for split in ("train", "dev")],
        "tatoeba_en_zh.yaml": [f"data.train={tatoeba}", f"data.dev={tatoeba}"],
    }
    for name, data in cases.items():
        overrides = [*_tiny(tiny_llama, tmp_path), *data, "generate.max_new_tokens=4"]
        result = bridgetune.train(ROOT / "examples" / "configs" / name, overrides)
        assert result.metrics["generated"] > 0 and "rougeL" in result.metrics
        expected = "characters" if name == "tatoeba_en_zh.yaml" else "words"
        saved = json.loads((result.run_dir / "dev_metrics.json").read_text())
        assert saved["scored_by"] == expected
