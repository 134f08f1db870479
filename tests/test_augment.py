"""Data augmentation: op invariants, NER tag validity, model-backed ops on tiny models, errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import NER_SENTENCES, SENTIMENT, WORDS, ZH_SENTENCES

from bridgetune.config import AugmentConfig, ConfigError
from bridgetune.data import augment_models
from bridgetune.data.augment import (
    AUGMENTERS,
    augment_split,
    infer_tag_scheme,
    preview,
)
from bridgetune.data.edits import split_words
from bridgetune.data.io import checked_token_example, join_tokens
from bridgetune.data.schema import Example
from bridgetune.data.tags import check_sequence, decode_spans

WORD_OPS = ["swap", "delete", "insert", "mask"]
TEN_WORDS = "alice visited paris on monday and bob went to london"


def texts(rows: list[tuple[str, str]] = SENTIMENT) -> list[Example]:
    return [
        Example(text=t, label=label, source=f"s.csv:{i + 2}") for i, (t, label) in enumerate(rows)
    ]


def ner(sentences: list, scheme: str) -> list[Example]:
    return [
        checked_token_example([w for w, _ in s], [t for _, t in s], scheme, "n.conll", i)
        for i, s in enumerate(sentences)
    ]


def augmented(examples: list[Example], tokenizer, model: Path, task="classification", **cfg):
    out = augment_split(examples, AugmentConfig(**cfg), task == "ner", tokenizer, str(model))
    assert out[: len(examples)] == examples
    return out[len(examples) :]


def origin(copy: Example, examples: list[Example]) -> Example:
    return next(e for e in examples if copy.source.startswith(e.source + " ("))


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_bert: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def word_level_tokenizer(vocab: list[str]):
    """A fast word-level tokenizer without a mask token; appends </s> like T5."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {token: i for i, token in enumerate(["<pad>", "</s>", "<unk>", *vocab])}
    core = Tokenizer(models.WordLevel(ids, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tiny_translators(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two random 1-layer T5 models (source->pivot, pivot->source) with a word-level tokenizer."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = word_level_tokenizer(WORDS)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    paths = []
    for seed in (0, 1):
        directory = tmp_path_factory.mktemp(f"tiny-t5-{seed}")
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        model.generation_config.min_new_tokens = 3  # random weights: never an empty output
        model.generation_config.suppress_tokens = [0, 2]
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        paths.append(str(directory))
    return paths


def test_registry_names_every_config_op():
    assert list(AUGMENTERS) == sorted(
        ["backtranslation", "contextual", "delete", "insert", "mask", "mention", "swap", "synonym"]
    )


def test_same_seed_same_output_other_seed_differs(bert_tokenizer, tiny_bert):
    run = lambda seed: augmented(texts(), bert_tokenizer, tiny_bert, ops=WORD_OPS, seed=seed)  # noqa: E731
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_swap_keeps_the_words_and_the_label(bert_tokenizer, tiny_bert):
    examples = texts()
    copies = augmented(examples, bert_tokenizer, tiny_bert, ops=["swap"], copies=2, p=0.3)
    assert copies
    for copy in copies:
        original = origin(copy, examples)
        assert Counter(split_words(copy.text)) == Counter(split_words(original.text))
        assert copy.text != original.text and copy.label == original.label


@pytest.mark.parametrize("p, left", [(0.5, 5), (1.0, 1)])
def test_delete_drops_round_p_n_words_never_all(bert_tokenizer, tiny_bert, p, left):
    examples = [Example(text=TEN_WORDS, label="x"), Example(text="alone", label="y")]
    copies = augmented(examples, bert_tokenizer, tiny_bert, ops=["delete"], p=p)
    assert [len(split_words(c.text)) for c in copies] == [left]  # the one-word text: no copy


def test_insert_adds_copies_of_the_texts_own_words(bert_tokenizer, tiny_bert):
    copies = augmented([Example(text=TEN_WORDS)], bert_tokenizer, tiny_bert, ops=["insert"], p=0.3)
    words = Counter(split_words(copies[0].text))
    assert sum(words.values()) == 13 and set(words) == set(TEN_WORDS.split())


def test_mask_uses_the_tokenizer_mask_token_and_keeps_punctuation(bert_tokenizer, tiny_bert):
    example = Example(text="great service, thanks!", label="positive")
    copies = augmented([example], bert_tokenizer, tiny_bert, ops=["mask"], copies=4, p=0.5)
    for copy in copies:
        assert sum(word.startswith("[MASK]") for word in copy.text.split()) == 2
        assert copy.text.endswith("!") and "," in copy.text


def test_mask_without_mask_token_is_a_config_error(tiny_bert):
    with pytest.raises(ConfigError, match="mask token.*augment.ops"):
        augmented(texts(), word_level_tokenizer(WORDS), tiny_bert, ops=["mask"])


def test_cjk_text_is_augmented_per_character(bert_tokenizer, tiny_bert):
    example = Example(text="我在上海买的耳机还没到", label="negative")
    for op in WORD_OPS:
        (copy,) = augmented([example], bert_tokenizer, tiny_bert, ops=[op], p=0.2)
        assert " " not in copy.text or op == "mask"  # only between two adjacent [MASK]s
        chars = Counter(split_words(copy.text))
        assert set(chars) - {"[MASK]"} <= set(example.text)
        assert sum(chars.values()) == {"delete": 9, "insert": 13}.get(op, 11)


def test_pair_tasks_augment_only_text(bert_tokenizer, tiny_bert):
    example = Example(text=TEN_WORDS, text_pair="how do i get a refund", label="same")
    copies = augmented([example], bert_tokenizer, tiny_bert, "pair", ops=WORD_OPS, copies=4)
    assert len(copies) == 4
    assert all(c.text_pair == example.text_pair and c.label == "same" for c in copies)


def test_copies_count_labels_and_no_repeats(bert_tokenizer, tiny_bert):
    long = texts([(" ".join(WORDS[i : i + 10]), str(i)) for i in range(0, 50, 10)])
    cfg = {"ops": ["swap", "delete", "mask"], "copies": 3, "p": 0.3}
    assert len(augmented(long, bert_tokenizer, tiny_bert, **cfg)) == 3 * len(long)
    short = texts()  # 3-4 words: some copies would repeat another and are left out
    copies = augmented(short, bert_tokenizer, tiny_bert, **cfg)
    keys = [(origin(c, short).source, c.text) for c in copies]
    assert len(set(keys)) == len(keys) <= 3 * len(short)
    assert all(c.label == origin(c, short).label for c in copies)


def test_preview_shows_the_first_copies_augment_split_adds(bert_tokenizer, tiny_bert):
    cfg = {"ops": ["swap", "delete", "mask"], "copies": 2, "p": 0.3}
    copies = augmented(texts(), bert_tokenizer, tiny_bert, **cfg)
    shown = preview(texts(), AugmentConfig(**cfg), False, bert_tokenizer, "", 4)
    assert [augmented_copy for _, augmented_copy, _ in shown] == copies[:4]
    assert all(copy.source == f"{orig.source} ({op})" for orig, copy, op in shown)


def test_progress_bar_only_for_large_splits(bert_tokenizer, tiny_bert, capfd):
    augmented(texts(), bert_tokenizer, tiny_bert, ops=["swap"])
    assert capfd.readouterr().err == ""
    augmented(texts() * 101, bert_tokenizer, tiny_bert, ops=["swap"])
    assert "augmenting" in capfd.readouterr().err


def tiny_embedding_model(directory: Path) -> tuple[Path, object]:
    """A BERT whose input embeddings make great the neighbour of good, film that of movie."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizer

    vectors = {
        "good": [1.0, 0.0, 0.0], "great": [0.9, 0.1, 0.0], "bad": [-1.0, 0.0, 0.0],
        "movie": [0.0, 1.0, 0.0], "film": [0.1, 0.9, 0.0], "the": [0.0, 0.0, 1.0],
    }  # fmt: skip
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vectors, "##s"]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=4, num_hidden_layers=1,
                        num_attention_heads=1, intermediate_size=8)  # fmt: skip
    model = BertModel(config)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight.zero_()
        for token, vector in vectors.items():
            weight[vocab.index(token), :3] = torch.tensor(vector)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, AutoTokenizer.from_pretrained(directory)


def test_synonym_is_the_nearest_whole_word_of_the_input_embeddings(tmp_path):
    model, tokenizer = tiny_embedding_model(tmp_path)
    examples = [Example(text="Good movies!", label="a"), Example(text="the GOOD movie", label="b")]
    copies = augmented(examples, tokenizer, model, ops=["synonym"], p=1.0, synonym_neighbours=1)
    # 'movies' is two tokens (movie ##s) and stays; 'the' is a stop word; case is kept
    assert [c.text for c in copies] == ["Great movies!", "the GREAT film"]


def test_vocabulary_words_of_wordpiece_and_byte_level_bpe(bert_tokenizer, tiny_roberta):
    from transformers import AutoTokenizer

    wordpiece = set(augment_models.vocabulary_words(bert_tokenizer).values())
    assert {"refund", "package", "我"} <= wordpiece
    assert not wordpiece & {"[MASK]", "##a", "a", ",", "7"}
    bpe = set(augment_models.vocabulary_words(AutoTokenizer.from_pretrained(tiny_roberta)).values())
    assert {"Paris", "Monday"} <= bpe and not any(
        w.startswith("Ġ") or w.startswith("<") for w in bpe
    )
    assert "the" not in augment_models.content_words(bert_tokenizer).values()


def test_synonym_on_the_bundled_minilm_gives_a_real_word():
    from bridgetune.models import load_tokenizer, resolve_model

    path = resolve_model("minilm")
    tokenizer = load_tokenizer(path)
    copies = augmented([Example(text="good", label="x")], tokenizer, path, ops=["synonym"], p=1.0)
    (word,) = copies[0].text.split()
    assert word != "good" and word.isalpha() and word in tokenizer.get_vocab()


def test_contextual_fills_one_word_with_a_vocabulary_word(bert_tokenizer, tiny_bert, tiny_mlm):
    example = Example(text="the package arrived broken and late", label="negative")
    cfg = {"ops": ["contextual"], "fill_mask_model": str(tiny_mlm), "copies": 3, "p": 0.2}
    copies = augmented([example], bert_tokenizer, tiny_bert, **cfg)
    assert copies
    vocab = bert_tokenizer.get_vocab()
    for copy in copies:
        old, new = example.text.split(), copy.text.split()
        changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
        assert len(new) == len(old) and len(changed) == 1 and new[changed[0]] in vocab
        assert copy.label == "negative"


@pytest.mark.parametrize(
    "model, message", [("missing", "could not be loaded"), ("tiny_bert", "no trained masked-LM")]
)
def test_contextual_model_errors_name_the_key(bert_tokenizer, tiny_bert, tmp_path, model, message):
    name = str(tiny_bert if model == "tiny_bert" else tmp_path / model)
    with pytest.raises(ConfigError, match=f"augment.fill_mask_model .*{message}"):
        augmented(texts(), bert_tokenizer, tiny_bert, ops=["contextual"], fill_mask_model=name)


def test_backtranslation_runs_batched_and_keeps_labels(
    bert_tokenizer, tiny_bert, tiny_translators, monkeypatch
):
    from transformers import T5ForConditionalGeneration

    batch_sizes = []
    generate = T5ForConditionalGeneration.generate

    def spy(self, *args, **kwargs):
        batch_sizes.append(len(kwargs["input_ids"]))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(T5ForConditionalGeneration, "generate", spy)
    examples = texts()[:6]
    cfg = {"ops": ["backtranslation"], "translation_models": tiny_translators, "copies": 2}
    copies = augmented(examples, bert_tokenizer, tiny_bert, **cfg)
    assert batch_sizes == [6, 6]  # one batch per model; each copy reuses its text's translation
    assert len(copies) == 6  # greedy: the second copy repeats the first and is left out
    for copy in copies:
        assert copy.text and copy.label == origin(copy, examples).label


@pytest.mark.parametrize("output", ["same", "", "SAME"])
def test_backtranslation_skips_empty_and_unchanged(
    bert_tokenizer, tiny_bert, tiny_translators, monkeypatch, output
):
    fake = lambda texts, tok, model: [{"same": t, "SAME": t.upper()}.get(output, "") for t in texts]  # noqa: E731
    monkeypatch.setattr(augment_models, "translate", fake)
    cfg = {"ops": ["backtranslation"], "translation_models": tiny_translators}
    assert augmented(texts(), bert_tokenizer, tiny_bert, **cfg) == []


def test_backtranslation_errors(bert_tokenizer, tiny_bert, tiny_translators, tmp_path):
    missing = [str(tmp_path / "missing"), tiny_translators[1]]
    with pytest.raises(ConfigError, match=r"augment.translation_models\[0\]"):
        augmented(texts(), bert_tokenizer, tiny_bert, ops=["backtranslation"],
                  translation_models=missing)  # fmt: skip
    with pytest.raises(ConfigError, match="cannot keep token tags aligned"):
        augmented(ner(NER_SENTENCES, "IOB2"), bert_tokenizer, tiny_bert, "ner",
                  ops=["backtranslation"], translation_models=tiny_translators)  # fmt: skip


def mentions(example: Example, scheme: str) -> list[tuple[str, tuple[str, ...]]]:
    spans = decode_spans(example.tags, scheme)
    return [(kind, tuple(example.tokens[start:end])) for kind, start, end in spans]


NER_OPS = [*WORD_OPS, "synonym", "contextual", "mention"]


@pytest.mark.parametrize("scheme, sentences", [("IOB2", NER_SENTENCES), ("BMES", ZH_SENTENCES)])
@pytest.mark.parametrize("op", NER_OPS)
def test_ner_copies_are_valid_and_keep_entities(
    bert_tokenizer, tiny_bert, tiny_mlm, scheme, sentences, op
):
    examples = ner(sentences, scheme)
    cfg = {"ops": [op], "copies": 2, "p": 0.5, "fill_mask_model": str(tiny_mlm)}
    out = augment_split(
        examples, AugmentConfig(**cfg), True, bert_tokenizer, str(tiny_bert), scheme
    )
    copies = out[len(examples) :]
    assert len(copies) >= len(examples) // 2
    for copy in copies:
        original = origin(copy, examples)
        assert check_sequence(copy.tags, scheme) is None
        assert (copy.text, copy.offsets) == join_tokens(copy.tokens)
        before, after = mentions(original, scheme), mentions(copy, scheme)
        if op == "mention":
            assert [k for k, _ in after] == [k for k, _ in before] and after != before
        else:
            assert after == before  # only O tokens change


def test_ner_scheme_is_inferred_and_iob1_adjacent_entities_stay_apart(bert_tokenizer, tiny_bert):
    assert infer_tag_scheme(ner(NER_SENTENCES, "IOB2")) == "IOB2"
    assert infer_tag_scheme(ner(ZH_SENTENCES, "BMES")) == "BMES"
    example = checked_token_example(
        ["ann", "and", "bob", "went"], ["I-PER", "O", "I-PER", "O"], "IOB1", "x", 1
    )
    assert infer_tag_scheme([example]) == "IOB1"
    copies = augmented([example], bert_tokenizer, tiny_bert, "ner", ops=["delete"], copies=8, p=0.5)
    assert {tuple(c.tags) for c in copies} == {("I-PER", "B-PER", "O"), ("I-PER", "O", "I-PER")}


def test_bioes_mention_of_another_length_is_re_encoded(bert_tokenizer, tiny_bert):
    rows = [(["john", "smith", "went"], ["B-PER", "E-PER", "O"]), (["bob"], ["S-PER"])]
    examples = [checked_token_example(w, t, "BIOES", "x", i) for i, (w, t) in enumerate(rows)]
    copies = augmented(examples, bert_tokenizer, tiny_bert, "ner", ops=["mention"])
    assert [c.tags for c in copies] == [["S-PER", "O"], ["B-PER", "E-PER"]]


def test_mention_errors(bert_tokenizer, tiny_bert):
    plain = [checked_token_example(["a", "b"], ["O", "O"], "IOB2", "x", 1)]
    with pytest.raises(ConfigError, match="two different mentions"):
        augmented(plain, bert_tokenizer, tiny_bert, "ner", ops=["mention"])
    with pytest.raises(ConfigError, match="task 'ner' only"):
        augmented(texts(), bert_tokenizer, tiny_bert, ops=["mention"])


def test_each_copy_has_its_own_rng_so_batching_does_not_matter(bert_tokenizer, tiny_bert):
    examples = texts()
    whole = augmented(examples, bert_tokenizer, tiny_bert, ops=["swap"], copies=2)
    head = augmented(examples[:5], bert_tokenizer, tiny_bert, ops=["swap"], copies=2)
    assert head == whole[: len(head)]
