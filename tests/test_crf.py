"""The CRF for token tasks (bridgetune.knowledge.crf): transitions the tag schemes forbid,
Viterbi and the likelihood against brute force over every tag sequence, a gradient check, and
a tagger trained with `task.crf` that saves, reloads and still loads in plain transformers."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from bridgetune.config import ConfigError
from bridgetune.knowledge.crf import CRF, FORBIDDEN, allowed, nll, unpack, viterbi
from bridgetune.tasks.losses import IGNORE
from tests.conftest import tiny_config

IOB2 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_the_schemes_forbid_what_they_cannot_express():
    moves, start, end = allowed(IOB2, "IOB2")
    index = {tag: i for i, tag in enumerate(IOB2)}

    def ok(a: str, b: str) -> bool:
        return bool(moves[index[a], index[b]])

    assert ok("B-PER", "I-PER") and ok("I-PER", "I-PER") and ok("O", "B-LOC")
    assert not ok("O", "I-PER") and not ok("B-PER", "I-LOC") and not ok("I-LOC", "I-PER")
    assert start.tolist() == [True, True, False, True, False] and end.all()

    bioes = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    moves, start, end = allowed(bioes, "BIOES")
    assert not moves[1, 0] and moves[1, 3] and moves[3, 0] and not moves[0, 2]
    assert end.tolist() == [True, False, False, True, True]
    bmes = ["O", "B-LOC", "M-LOC", "E-LOC", "S-LOC"]
    moves, _, end = allowed(bmes, "BMES")
    assert moves[1, 2] and moves[2, 3] and not moves[1, 4] and not end[2]


def brute_force(emissions: torch.Tensor, moves: torch.Tensor, start, end):
    """Score of every tag sequence: {sequence: score}."""
    words, tags = emissions.shape
    scores = {}
    for path in itertools.product(range(tags), repeat=words):
        score = start[path[0]] + end[path[-1]] + sum(emissions[i, t] for i, t in enumerate(path))
        score += sum(moves[a, b] for a, b in zip(path, path[1:]))
        scores[path] = float(score)
    return scores


def test_viterbi_and_the_likelihood_match_brute_force():
    torch.manual_seed(0)
    crf = CRF(IOB2, "IOB2")
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    rows = crf.rows().detach()
    moves, start, end = rows[:5], rows[5], rows[6]
    emissions = torch.randn(4, 5)
    emissions[1, 2] = 9.0  # I-PER after whatever word 0 is: only valid after B-PER or I-PER
    scores = brute_force(emissions, moves, start, end)
    best = max(scores, key=scores.get)
    assert viterbi(emissions, moves, start, end) == list(best)
    assert IOB2[best[1]] == "I-PER" and IOB2[best[0]] in ("B-PER", "I-PER")

    # the packed logits of one sentence of 4 words (+ one padding position)
    logits = torch.cat([torch.cat([emissions, torch.zeros(1, 5)])[None], rows[None]], dim=1)
    gold = [1, 2, 0, 3]
    labels = torch.tensor([gold + [IGNORE]])
    partition = torch.logsumexp(torch.tensor(list(scores.values())), 0)
    expected = (partition - scores[tuple(gold)]) / 4
    assert nll(logits, labels, IGNORE).item() == pytest.approx(float(expected), rel=1e-5)
    # labelled positions need not be contiguous (later sub-tokens of a word are IGNORE)
    spread = torch.cat([emissions[:1], torch.zeros(1, 5), emissions[1:]])
    logits = torch.cat([spread[None], rows[None]], dim=1)
    labels = torch.tensor([[1, IGNORE, 2, 0, 3]])
    assert nll(logits, labels, IGNORE).item() == pytest.approx(float(expected), rel=1e-5)
    assert math.isclose(float(unpack(logits)[1][0, 2]), float(moves[0, 2]))
    assert float(moves[0, 2]) < FORBIDDEN / 2  # O -> I-PER is ruled out


def test_the_likelihood_has_correct_gradients():
    torch.manual_seed(1)
    logits = torch.randn(2, 3 + 7, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE], [0, IGNORE, IGNORE]])

    # the parameter rows repeat per sentence: check through one shared copy
    def loss(emissions, params):
        return nll(torch.cat([emissions, params[None].expand(2, -1, -1)], 1), labels, IGNORE)

    emissions = logits[:, :3].detach().clone().requires_grad_()
    params = logits[0, 3:].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (emissions, params))


def test_a_crf_tagger_trains_saves_reloads_and_loads_in_plain_transformers(
    tiny_bert, ner_conll, tmp_path
):
    from transformers import AutoModelForTokenClassification

    import bridgetune

    config = tiny_config(tiny_bert, tmp_path / "runs", task="ner",
                         data={"train": str(ner_conll), "dev": str(ner_conll)},
                         train={"epochs": 40, "lr": 5e-3})  # fmt: skip
    config["model"]["crf"] = True
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] > 0.9
    meta = json.loads((result.model_dir / "bridgetune.json").read_text("utf-8"))
    assert meta["head"]["type"] == "crf" and meta["settings"] == {"crf": True}
    assert "plain transformers loads the tagger without it" in meta["head"]["note"]
    assert (result.model_dir / "crf.safetensors").is_file()
    predictor = bridgetune.load(result.model_dir)
    texts = ["John Smith visited Paris", "Mary lives in Berlin"]
    again = bridgetune.load(result.model_dir).predict(texts)
    assert predictor.predict(texts) == again
    plain = AutoModelForTokenClassification.from_pretrained(result.model_dir)
    assert plain.config.id2label[0] == meta["labels"][0]

    mistakes = {
        "method.name: full": {"method": {"name": "lora"}},
        "task.crf: applies to ner; task 'classification' takes no options": {
            "task": "classification"},
        "needs task.crf": {"model": {"name": str(tiny_bert), "crf": False},
                           "train": {"loss": "crf"}},
        "train.rdrop does not apply": {"train": {"rdrop": 1.0}},
    }  # fmt: skip
    for message, change in mistakes.items():
        with pytest.raises(ConfigError, match=message):
            bridgetune.train({**config, **change, "name": "bad"})


def test_the_crf_taggers_head_is_its_classifier_and_the_crf_not_the_encoder(tiny_bert):
    """train.head_lr (and every method's head) reaches the classifier and the CRF only: the
    wrapper once counted its whole tagger, encoder included, as the head, so a large head_lr
    trained the encoder at it and the run diverged to all-O (CLUENER on multilingual-e5)."""
    from transformers import AutoModelForTokenClassification

    from bridgetune.knowledge.crf import CRFTagger
    from bridgetune.methods.base import head_modules, is_head

    tagger = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=len(IOB2))
    model = CRFTagger(tagger, IOB2, "IOB2")
    head = head_modules(model)
    assert head == ["tagger.classifier", "crf"]
    names = [name for name, _ in model.named_parameters()]
    assert {n for n in names if is_head(n, head)} == {
        "tagger.classifier.weight", "tagger.classifier.bias",
        "crf.transitions", "crf.start", "crf.end",
    }  # fmt: skip
