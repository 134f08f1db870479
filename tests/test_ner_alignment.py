"""NER alignment by tokenizer kind, hand-checked: WordPiece reads pre-split words; SentencePiece
(Metaspace) and byte-level BPE read the sentence whole and map pieces to words by offsets, so
no bare `▁` piece takes a label and a piece over several characters (`上海`) carries its entity.
Span JSON, BMES files and raw text through the service's path give the same entities."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ZH_SENTENCES, tiny_config, tiny_unigram_tokenizer

import bridgetune
from bridgetune.data.batching import IGNORE
from bridgetune.data.schema import Example
from bridgetune.data.tags import decode_spans
from bridgetune.models import load_tokenizer
from bridgetune.tasks.token import (
    TokenTask,
    lost_entities,
    piece_tags,
    reads_whole_text,
    split_at_words,
    text_units,
    whole_alignment,
    word_tags_from_pieces,
)

BMES = ["O", "B-CITY", "M-CITY", "E-CITY", "S-CITY", "B-PRODUCT", "M-PRODUCT", "E-PRODUCT",
        "S-PRODUCT", "B-PERSON", "M-PERSON", "E-PERSON", "S-PERSON"]  # fmt: skip


def chars(text: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(text))]


def test_which_tokenizers_read_whole_text(tiny_bert, tiny_roberta, tiny_xlmr_bert):
    assert not reads_whole_text(load_tokenizer(str(tiny_bert)))  # WordPiece
    assert reads_whole_text(load_tokenizer(str(tiny_roberta)))  # byte-level BPE
    assert reads_whole_text(load_tokenizer(str(tiny_xlmr_bert)))  # SentencePiece


def test_sentencepiece_pieces_map_to_characters_without_bare_markers():
    tokenizer = tiny_unigram_tokenizer()
    text = "我在上海买的耳机"
    encoded = tokenizer(text, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert pieces == ["<s>", "▁我", "在", "上海", "买", "的", "耳机", "</s>"]
    align = whole_alignment(text, chars(text), encoded["offset_mapping"], pieces)
    assert align.claims == [[], [0], [1], [2, 3], [4], [5], [6, 7], []]
    # pre-split characters would have been ['▁我', '▁', '在', '▁', '上', ...]: twice as long
    split = tokenizer(list(text), is_split_into_words=True)["input_ids"]
    assert len(split) > len(encoded["input_ids"]) + 4


def test_a_bare_marker_piece_takes_no_word():
    tokenizer = tiny_unigram_tokenizer()
    text = "在北京"
    encoded = tokenizer(text, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert pieces == ["<s>", "▁", "在", "北京", "</s>"]
    assert encoded["offset_mapping"][1] == encoded["offset_mapping"][2]  # ▁ repeats 在's span
    align = whole_alignment(text, chars(text), encoded["offset_mapping"], pieces)
    assert align.claims == [[], [], [0], [1, 2], []]


def test_english_words_and_their_later_pieces():
    tokenizer = tiny_unigram_tokenizer()
    text = "john visited parisx"
    words = [(0, 4), (5, 12), (13, 19)]
    encoded = tokenizer(text, return_offsets_mapping=True)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert pieces == ["<s>", "▁john", "▁visited", "▁paris", "x", "</s>"]
    align = whole_alignment(text, words, encoded["offset_mapping"], pieces)
    assert align.claims == [[], [0], [1], [2], [], []]
    assert align.inside[4] == 2  # 'x' continues parisx


@pytest.mark.parametrize(
    "tags,expected",
    [
        # 上海 is one piece: the CITY entity over two characters is S-CITY at piece level
        (["O", "O", "B-CITY", "E-CITY", "O"], ["O", "O", "S-CITY", "O"]),
        # an entity over 上海 + 买: B on the piece, E on the next
        (["O", "O", "B-CITY", "M-CITY", "E-CITY"], ["O", "O", "B-CITY", "E-CITY"]),
    ],
)
def test_piece_tags_follow_the_entities(tags, expected):
    claims = [[0], [1], [2, 3], [4]]
    assert piece_tags(tags, claims, "BMES") == expected
    assert word_tags_from_pieces(expected, claims, 5, "BMES") == tags
    assert lost_entities(tags, claims, "BMES") == 0


def test_an_entity_starting_inside_a_piece_is_counted_lost():
    claims = [[0, 1], [2]]  # 'ab' is one piece; the entity is b alone
    tags = ["O", "S-X", "O"]
    assert lost_entities(tags, claims, "BMES") == 1
    assert piece_tags(tags, claims, "BMES") == ["O", "O"]


def test_iob2_pieces_and_continuations():
    tokenizer = tiny_unigram_tokenizer()
    task = TokenTask(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], scheme="IOB2")
    example = Example(
        text="john visited parisx",
        tokens=["john", "visited", "parisx"],
        tags=["B-PER", "O", "B-LOC"],
        offsets=[(0, 4), (5, 12), (13, 19)],
    )
    (feature,) = task.encode([example], tokenizer, 32)
    assert feature["first"] == [1, 2, 3]
    index = task.index
    assert feature["labels"] == [IGNORE, index["B-PER"], index["O"], index["B-LOC"],
                                 index["I-LOC"], IGNORE]  # fmt: skip


def test_byte_level_bpe_reads_chinese_whole(tiny_roberta):
    tokenizer = load_tokenizer(str(tiny_roberta))
    task = TokenTask(BMES, scheme="BMES")
    text = "张三在北京"
    example = Example(text=text, tokens=list(text), tags=["B-PERSON", "E-PERSON", "O",
                      "B-CITY", "E-CITY"], offsets=chars(text))  # fmt: skip
    (feature,) = task.encode([example], tokenizer, 64)
    # every character is several byte pieces: the first of each carries its tag
    assert [w for claim in feature["claims"] for w in claim] == [0, 1, 2, 3, 4]
    labelled = [feature["labels"][p] for p in feature["first"]]
    assert [task.labels[i] for i in labelled] == ["B-PERSON", "E-PERSON", "O", "B-CITY",
                                                  "E-CITY"]  # fmt: skip


def test_text_units_split_cjk_characters_words_and_symbols():
    text = "我在Paris, 买了3个!"
    assert [text[s:e] for s, e in text_units(text)] == ["我", "在", "Paris", ",", "买", "了",
                                                        "3", "个", "!"]  # fmt: skip


def test_span_json_bmes_and_raw_text_give_the_same_entities(tiny_xlmr_bert, zh_bmes, tmp_path):
    jsonl = tmp_path / "zh.jsonl"
    expected = [decode_spans([tag for _, tag in sentence], "BMES") for sentence in ZH_SENTENCES]
    texts = ["".join(ch for ch, _ in sentence) for sentence in ZH_SENTENCES]
    with jsonl.open("w", encoding="utf-8") as out:
        for text, spans in zip(texts, expected):
            entities = [{"type": kind, "start": s, "end": e} for kind, s, e in spans]
            out.write(json.dumps({"text": text, "entities": entities}, ensure_ascii=False) + "\n")
    data = {"train": str(zh_bmes), "dev": str(zh_bmes), "tag_scheme": "BMES"}
    config = tiny_config(tiny_xlmr_bert, tmp_path / "runs", task="ner", data=data,
                         train={"epochs": 40, "lr": 5e-3})  # fmt: skip
    result = bridgetune.train(config)
    assert result.metrics["entity_f1"] == 1.0  # the tiny set, overfit through whole pieces
    for path in (zh_bmes, jsonl):
        assert bridgetune.evaluate(result.model_dir, str(path))["entity_f1"] == 1.0
    predictions = bridgetune.predict(result.model_dir, texts)
    assert [[(e["type"], e["start"], e["end"]) for e in p["entities"]] for p in predictions] == [
        [tuple(span) for span in spans] for spans in expected
    ]


def test_split_pieces_gives_every_character_its_own_piece():
    tokenizer = tiny_unigram_tokenizer()
    task = TokenTask(BMES, scheme="BMES", split_pieces=True)
    text = "我在上海买的耳机"  # 海 alone is the city: it starts inside the piece 上海
    tags = ["O", "O", "O", "S-CITY", "O", "O", "B-PRODUCT", "E-PRODUCT"]
    example = Example(text=text, tokens=list(text), tags=tags, offsets=chars(text))
    assert lost_entities(tags, [[0], [1], [2, 3], [4], [5], [6, 7]], "BMES") == 1  # unsplit
    (feature,) = task.encode([example], tokenizer, 32)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert pieces == ["<s>", "▁我", "在", "上", "海", "买", "的", "耳", "机", "</s>"]
    assert feature["claims"] == [[0], [1], [2], [3], [4], [5], [6], [7]]
    assert [task.labels[feature["labels"][p]] for p in feature["first"]] == tags
    # decoding: one tag per piece is one tag per character
    logits = torch.full((1, len(pieces), len(BMES)), -5.0)
    for position, tag in zip(feature["first"], tags):
        logits[0, position, task.index[tag]] = 5.0
    (prediction,) = task.decode(logits, [feature], [example])
    assert [(e["type"], e["start"], e["end"]) for e in prediction["entities"]] == [
        ("CITY", 3, 4),
        ("PRODUCT", 6, 8),
    ]
    # the option is saved with the model and read back
    assert TokenTask.create(BMES, tag_scheme="BMES", **task.settings()).split_pieces


def test_split_pieces_keeps_a_marked_first_piece_and_the_closing_token_when_cut():
    tokenizer = tiny_unigram_tokenizer()
    text = "上海的耳机"
    words = chars(text)
    encoded = tokenizer(text, return_offsets_mapping=True)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == ["<s>", "▁", "上海", "的",
                                                                     "耳机", "</s>"]  # fmt: skip
    ids, offsets = split_at_words(text, words, encoded["input_ids"],
                                  encoded["offset_mapping"], tokenizer)  # fmt: skip
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁", "上", "海", "的", "耳", "机",
                                                    "</s>"]  # fmt: skip
    assert [text[s:e] for s, e in offsets[2:7]] == ["上", "海", "的", "耳", "机"]
    task = TokenTask(BMES, scheme="BMES", split_pieces=True)
    example = Example(text=text, tokens=list(text), tags=["O"] * 5, offsets=words)
    (feature,) = task.encode([example], tokenizer, 6)  # 8 pieces after the split
    assert tokenizer.convert_ids_to_tokens(feature["input_ids"]) == ["<s>", "▁", "上", "海",
                                                                     "的", "</s>"]  # fmt: skip
    assert feature["truncated"] and feature["claims"] == [[0], [1], [2]]


def test_split_pieces_leaves_a_piece_whole_when_a_part_would_be_unknown():
    tokenizer = tiny_unigram_tokenizer()
    text = "john在"
    encoded = tokenizer(text, return_offsets_mapping=True)
    words = [(0, 2), (2, 4), (4, 5)]  # words the vocabulary has no pieces for: 'jo', 'hn'
    ids, offsets = split_at_words(text, words, encoded["input_ids"],
                                  encoded["offset_mapping"], tokenizer)  # fmt: skip
    assert ids == encoded["input_ids"]  # 'jo' and 'hn' would be unknown: ▁john stays whole
    assert [tuple(o) for o in offsets] == [tuple(o) for o in encoded["offset_mapping"]]
