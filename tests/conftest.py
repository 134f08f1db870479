"""Shared fixtures: tiny random-init models with in-memory tokenizers, and tiny datasets."""

from __future__ import annotations

import csv
import os
import string
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `precision: auto` is bf16 on CPUs with AMX/AVX512-BF16 and fp32 elsewhere: a test's training
# trajectory must not depend on which CPU runs it (tiny models generalize differently in bf16),
# so `auto` means fp32 here; bf16 is tested where a test asks for it (tests/test_precision.py).
os.environ.setdefault("BRIDGETUNE_CPU_BF16", "0")


@pytest.fixture(autouse=True, scope="session")
def corpus_cache(tmp_path_factory: pytest.TempPathFactory):
    """Pre-training windows are cached in a temporary directory, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("bridgetune-cache")
        patch.setattr("bridgetune.knowledge.corpus.cache_root", lambda: root)
        yield root


WORDS = (
    "the a my order is late great love this terrible refund please where was it and not "
    "package arrived broken thanks fast helpful slow bad good service never again happy "
    "angry item phone charger headphones paris london berlin alice bob carol monday friday "
    "john smith acme corp visited in on at to from with for how do i get can you help same "
    "question different what when delivery account password reset change email"
).split()
CJK = "我在上海北京买的耳机手机还没到张三李四今天明天很好坏了"


def tiny_vocab() -> dict[str, int]:
    """WordPiece vocabulary: specials, characters (+ ## continuations), a few whole words."""
    chars = string.ascii_lowercase + string.digits + string.punctuation + CJK
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(chars) + [f"##{c}" for c in string.ascii_lowercase + string.digits] + WORDS
    return {token: index for index, token in enumerate(dict.fromkeys(vocab))}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer, saved as a local model dir."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizer(vocab=tiny_vocab(), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_mlm(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BertForMaskedLM (its head saved, so it counts as trained) sharing the tiny
    BERT's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForMaskedLM

    directory = tmp_path_factory.mktemp("tiny-mlm")
    torch.manual_seed(0)
    BertForMaskedLM(AutoConfig.from_pretrained(tiny_bert)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random RoBERTa with a byte-level BPE tokenizer trained in memory."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-roberta")
    bpe = ByteLevelBPETokenizer()
    corpus = [" ".join(WORDS), "John Smith visited Paris on Monday.", "Acme Corp in Berlin"] * 5
    bpe.train_from_iterator(
        corpus,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# multi-character pieces of the tiny SentencePiece vocabulary (a Chinese word as one piece)
ZH_PIECES = ("上海", "北京", "耳机", "手机", "张三", "今天", "明天", "▁我")


def tiny_unigram_tokenizer() -> Any:
    """An XLM-R-style fast tokenizer built in memory: a SentencePiece Unigram model (word
    pieces with ▁, CJK characters and some Chinese words as pieces, letters as fallbacks),
    NFKC, Metaspace, `<s> $A </s>`; no token_type_ids (as XLM-R's)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [("▁", -3.0)] + [(f"▁{w}", -4.0) for w in WORDS] + [(w, -5.0) for w in ZH_PIECES]
    pieces += [(c, -8.0) for c in dict.fromkeys(CJK + string.ascii_lowercase + string.digits
                                                + string.punctuation)]  # fmt: skip
    vocab = specials + list(dict((p, (p, s)) for p, s in pieces).values()) + [("<mask>", 0.0)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
        model_input_names=["input_ids", "attention_mask"], model_max_length=128,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tiny_xlmr_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with an XLM-R-style SentencePiece tokenizer (`tiny_unigram_tokenizer`):
    the shape of multilingual-e5-small (BERT architecture, XLM-R vocabulary), saved as a dir."""
    import torch
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-xlmr-bert")
    tokenizer = tiny_unigram_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


SENTIMENT = [
    ("my order is late", "negative"),
    ("great service thanks", "positive"),
    ("terrible slow delivery", "negative"),
    ("love this phone", "positive"),
    ("package arrived broken", "negative"),
    ("fast and helpful", "positive"),
    ("never again bad item", "negative"),
    ("happy with the headphones", "positive"),
    ("angry the charger was broken", "negative"),
    ("good service and fast delivery", "positive"),
]


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def sentiment_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "sentiment.csv", ["text", "label"], SENTIMENT)


NER_SENTENCES = [
    [("john", "B-PER"), ("smith", "I-PER"), ("visited", "O"), ("paris", "B-LOC")],
    [
        ("alice", "B-PER"),
        ("was", "O"),
        ("in", "O"),
        ("berlin", "B-LOC"),
        ("on", "O"),
        ("monday", "O"),
    ],
    [("acme", "B-ORG"), ("corp", "I-ORG"), ("in", "O"), ("london", "B-LOC")],
    [
        ("bob", "B-PER"),
        ("and", "O"),
        ("carol", "B-PER"),
        ("visited", "O"),
        ("acme", "B-ORG"),
        ("corp", "I-ORG"),
    ],
    [("carol", "B-PER"), ("smith", "I-PER"), ("was", "O"), ("in", "O"), ("paris", "B-LOC")],
    [("bob", "B-PER"), ("visited", "O"), ("london", "B-LOC"), ("and", "O"), ("berlin", "B-LOC")],
]


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    blocks = ["\n".join(f"{word} X {tag}" for word, tag in sentence) for sentence in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def ner_conll(tmp_path: Path) -> Path:
    return write_conll(tmp_path / "ner.conll", NER_SENTENCES)


ZH_SENTENCES = [
    [
        ("我", "O"),
        ("在", "O"),
        ("上", "B-CITY"),
        ("海", "E-CITY"),
        ("买", "O"),
        ("的", "O"),
        ("耳", "B-PRODUCT"),
        ("机", "E-PRODUCT"),
    ],
    [("张", "B-PERSON"), ("三", "E-PERSON"), ("在", "O"), ("北", "B-CITY"), ("京", "E-CITY")],
    [
        ("李", "B-PERSON"),
        ("四", "E-PERSON"),
        ("的", "O"),
        ("手", "B-PRODUCT"),
        ("机", "E-PRODUCT"),
        ("坏", "O"),
        ("了", "O"),
    ],
    [("我", "S-PERSON"), ("今", "O"), ("天", "O"), ("在", "O"), ("上", "B-CITY"), ("海", "E-CITY")],
]


@pytest.fixture()
def zh_bmes(tmp_path: Path) -> Path:
    blocks = ["\n".join(f"{ch} {tag}" for ch, tag in sentence) for sentence in ZH_SENTENCES]
    path = tmp_path / "zh.bmes"
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def tiny_config(model: Path, run_dir: Path, **sections: dict) -> dict:
    """A raw config dict that overfits tiny data fast on a tiny model."""
    config = {
        "name": "tiny",
        "output_dir": str(run_dir),
        "task": sections.pop("task", "classification"),
        "model": {"name": str(model), "max_length": 32},
        "train": {
            "epochs": 30,
            "lr": 3e-3,
            "batch_size": 4,
            "warmup_ratio": 0.0,
            "log_every": 5,
            "seed": 0,
        },
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def write_config(config: dict, directory: Path) -> Path:
    """Save a raw config dict as directory/config.yaml (for the CLI and launchers)."""
    import yaml

    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train_tiny_model(
    model: Path, run_dir: Path, data: Path, name: str, epochs: int = 12, **sections: dict
) -> Path:
    """Train a tiny model for a few epochs and return its model directory."""
    import bridgetune

    config = tiny_config(model, run_dir, data={"train": str(data), "dev": str(data)}, **sections)
    config["name"] = name
    config["train"]["epochs"] = epochs
    return bridgetune.train(config).model_dir


@pytest.fixture(scope="session")
def served_classifier(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained sentiment model directory (negative/positive), shared by service tests."""
    root = tmp_path_factory.mktemp("served-classifier")
    data = write_csv(root / "sentiment.csv", ["text", "label"], SENTIMENT)
    return train_tiny_model(tiny_bert, root / "runs", data, name="sentiment")


@pytest.fixture(scope="module")
def openvino_classifier(served_classifier: Path, tmp_path_factory: pytest.TempPathFactory):
    """served_classifier exported to OpenVINO (fp32), with its parity check."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from bridgetune.recipes.export import export_model

    output = tmp_path_factory.mktemp("openvino") / "sentiment-openvino"
    return export_model(served_classifier, format="openvino", output=output)


@pytest.fixture(scope="session")
def served_ner(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained NER model directory (PER, LOC, ORG; IOB2)."""
    root = tmp_path_factory.mktemp("served-ner")
    data = write_conll(root / "ner.conll", NER_SENTENCES)
    return train_tiny_model(tiny_bert, root / "runs", data, name="ner", epochs=20, task="ner")


class LiveServer:
    """An app served by a real uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


LLAMA_WORDS = (
    "where is my order it ships tomorrow thanks you are welcome hello hi how can i help "
    "refund the money is back in five days what colour black and white user assistant system "
    "be brief ok"
).split()
LLAMA_SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "\n"]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a word-level fast tokenizer: pad == eos == <|im_end|>,
    ChatML chat template (as SmolLM2's)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bridgetune.tasks.causal_lm import CHATML

    vocab = {token: i for i, token in enumerate(LLAMA_SPECIALS + LLAMA_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|im_end|>"],
        bos_token_id=None,
        # embeddings large enough for confident logits: LoRA trains neither them nor the tied
        # output layer, and at the usual 0.02 a 32-wide model's logits stay within about +-0.6
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # as in a pretrained model: pad == eos, but the eos row is not zero
        model.model.embed_tokens.weight[vocab["<|im_end|>"]].normal_(0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _word_tokenizer(specials: list[str], words: list[str], eos: str, pad: str, suffix_eos: bool):
    """A whitespace word-level fast tokenizer; `suffix_eos`: every encoded text ends with EOS
    (as T5's and BART's tokenizers do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if suffix_eos:
        core.post_processor = processors.TemplateProcessing(
            single=f"$A {eos}", special_tokens=[(eos, vocab[eos])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", eos_token=eos, pad_token=pad
    )
    return tokenizer, vocab


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2+2-layer random T5 with a word-level tokenizer that appends </s> (pad 0, EOS 1,
    decoder start = pad, as T5)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    specials = ["<pad>", "</s>", "<unk>"]
    tokenizer, vocab = _word_tokenizer(specials, LLAMA_WORDS, "</s>", "<pad>", True)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        initializer_factor=1.0,
        tie_word_embeddings=False,  # an untied head starts with confident logits
    )
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-t5")
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random GPT-2 (no chat template, EOS <|endoftext|>, pad == eos)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = "<|endoftext|>"
    tokenizer, vocab = _word_tokenizer(["<unk>", eos], LLAMA_WORDS, eos, eos, False)
    config = GPT2Config(
        vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=256,
        bos_token_id=vocab[eos], eos_token_id=vocab[eos], pad_token_id=vocab[eos],
        initializer_range=0.1,
    )  # fmt: skip
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
