"""Tag schemes: validation, conversion, strict span decoding, and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqeval.scheme import IOB2, IOBES

from bridgetune.data.tags import check_sequence, check_tag, decode_spans, split_tag, to_canonical

SCHEMES = ("IOB1", "IOB2", "BIOES", "BMES")


# --- split_tag / check_tag -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("O", ("O", None)),
        ("B-PER", ("B", "PER")),
        ("I_LOC", ("I", "LOC")),
        ("E-MISC-X", ("E", "MISC-X")),
        ("B", ("B", None)),
        ("B-", ("B-", None)),
    ],
)
def test_split_tag(tag: str, expected: tuple[str, str | None]) -> None:
    assert split_tag(tag) == expected


@pytest.mark.parametrize(
    ("tag", "scheme", "ok"),
    [
        ("O", "IOB2", True),
        ("B-PER", "IOB2", True),
        ("E-PER", "IOB2", False),
        ("S-PER", "IOB1", False),
        ("M-PER", "BIOES", False),
        ("I-PER", "BMES", False),
        ("M-PER", "BMES", True),
        ("S-PER", "BIOES", True),
        ("B", "IOB2", False),
        ("PER", "IOB2", False),
    ],
)
def test_check_tag(tag: str, scheme: str, ok: bool) -> None:
    reason = check_tag(tag, scheme)
    assert (reason is None) is ok
    if not ok:
        assert repr(tag) in reason and scheme in reason


# --- check_sequence: hand-computed ---------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags"),
    [
        ("IOB2", []),
        ("IOB2", ["O", "O"]),
        ("IOB2", ["B-PER", "I-PER", "O", "B-LOC"]),
        ("IOB2", ["B-PER", "B-PER", "I-PER"]),
        ("IOB2", ["B_PER", "I_PER"]),
        ("IOB1", ["I-PER", "I-PER", "O", "I-LOC"]),
        ("IOB1", ["I-PER", "B-PER", "I-PER"]),
        ("IOB1", ["I-PER", "I-LOC"]),
        ("BIOES", ["B-PER", "I-PER", "E-PER", "S-LOC", "O"]),
        ("BIOES", ["B-PER", "E-PER", "B-PER", "E-PER"]),
        ("BIOES", ["S-PER", "S-PER"]),
        ("BMES", ["B-PER", "M-PER", "M-PER", "E-PER", "O", "S-LOC"]),
        ("BMES", ["S-PER", "B-LOC", "E-LOC"]),
    ],
)
def test_check_sequence_valid(scheme: str, tags: list[str]) -> None:
    assert check_sequence(tags, scheme) is None


@pytest.mark.parametrize(
    ("scheme", "tags", "index"),
    [
        # IOB2: an I- must continue a B-/I- of the same type
        ("IOB2", ["I-PER"], 0),
        ("IOB2", ["O", "I-PER"], 1),
        ("IOB2", ["B-PER", "I-LOC"], 1),
        ("IOB2", ["B-PER", "I-PER", "O", "O", "I-PER"], 4),
        ("IOB2", ["O", "S-PER"], 1),  # not an IOB2 prefix
        ("IOB2", ["O", "O", "PER"], 2),  # no prefix at all
        # IOB1: B- only between two adjacent entities of the same type
        ("IOB1", ["B-PER"], 0),
        ("IOB1", ["O", "B-PER"], 1),
        ("IOB1", ["I-LOC", "B-PER"], 1),
        ("IOB1", ["I-PER", "E-PER"], 1),
        # BIOES
        ("BIOES", ["I-PER"], 0),
        ("BIOES", ["E-PER"], 0),
        ("BIOES", ["B-PER", "O"], 1),
        ("BIOES", ["B-PER", "E-LOC"], 1),
        ("BIOES", ["B-PER", "S-PER"], 1),
        ("BIOES", ["B-PER", "B-PER", "E-PER"], 1),
        ("BIOES", ["S-PER", "O", "B-LOC", "I-LOC"], 3),  # not closed at the end
        ("BIOES", ["B-PER"], 0),
        ("BIOES", ["O", "M-PER"], 1),
        # BMES
        ("BMES", ["M-PER"], 0),
        ("BMES", ["O", "E-PER"], 1),
        ("BMES", ["B-PER", "O", "S-LOC"], 1),
        ("BMES", ["B-PER", "M-LOC", "E-LOC"], 1),
        ("BMES", ["S-PER", "B-LOC", "M-LOC"], 2),  # not closed at the end
        ("BMES", ["B-PER", "I-PER", "E-PER"], 1),  # I- is not a BMES prefix
    ],
)
def test_check_sequence_invalid(scheme: str, tags: list[str], index: int) -> None:
    problem = check_sequence(tags, scheme)
    assert problem is not None
    assert problem[0] == index
    assert isinstance(problem[1], str) and problem[1]


def test_check_sequence_reason_names_the_type() -> None:
    index, reason = check_sequence(["O", "I-PER"], "IOB2")
    assert index == 1 and "B-PER" in reason
    index, reason = check_sequence(["B-LOC", "I-LOC"], "BIOES")
    assert index == 1 and "E-LOC" in reason


# --- to_canonical --------------------------------------------------------------------------


def test_to_canonical_iob1_to_iob2() -> None:
    tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "I-ORG", "O", "I-LOC"]
    converted, scheme = to_canonical(tags, "IOB1")
    assert converted == ["B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "I-ORG", "O", "B-LOC"]
    assert scheme is IOB2


def test_to_canonical_bmes_to_iobes() -> None:
    tags = ["B-PER", "M-PER", "M-PER", "E-PER", "O", "S-LOC", "B-ORG", "E-ORG"]
    converted, scheme = to_canonical(tags, "BMES")
    assert converted == ["B-PER", "I-PER", "I-PER", "E-PER", "O", "S-LOC", "B-ORG", "E-ORG"]
    assert scheme is IOBES


def test_to_canonical_identity_schemes_copy() -> None:
    tags = ["B-PER", "I-PER", "O"]
    converted, scheme = to_canonical(tags, "IOB2")
    assert converted == tags and converted is not tags and scheme is IOB2
    tags = ["B-PER", "E-PER", "S-LOC"]
    converted, scheme = to_canonical(tags, "BIOES")
    assert converted == tags and converted is not tags and scheme is IOBES


# --- decode_spans: hand-computed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "tags", "spans"),
    [
        ("IOB2", [], []),
        ("IOB2", ["O", "O"], []),
        ("IOB2", ["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        ("IOB2", ["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        ("IOB2", ["B_PER", "I_PER", "O"], [("PER", 0, 2)]),
        (
            "IOB1",
            ["I-PER", "I-PER", "B-PER", "O", "I-LOC"],
            [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)],
        ),
        ("IOB1", ["I-PER", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 2)]),
        ("BIOES", ["B-PER", "I-PER", "E-PER", "S-LOC", "O"], [("PER", 0, 3), ("LOC", 3, 4)]),
        ("BIOES", ["O", "S-PER", "S-PER"], [("PER", 1, 2), ("PER", 2, 3)]),
        ("BMES", ["B-PER", "M-PER", "E-PER", "O", "S-LOC"], [("PER", 0, 3), ("LOC", 4, 5)]),
        ("BMES", ["B-ORG", "E-ORG", "B-ORG", "E-ORG"], [("ORG", 0, 2), ("ORG", 2, 4)]),
    ],
)
def test_decode_spans(scheme: str, tags: list[str], spans: list[tuple[str, int, int]]) -> None:
    assert decode_spans(tags, scheme) == spans


@pytest.mark.parametrize(
    ("scheme", "tags", "spans"),
    [
        # strict: an I- after O (or after another type) does not start an entity in IOB2
        ("IOB2", ["O", "I-PER", "I-PER"], []),
        ("IOB2", ["I-PER", "O", "B-LOC"], [("LOC", 2, 3)]),
        ("IOB2", ["B-PER", "I-LOC", "O"], [("PER", 0, 1)]),
        # strict: a BIOES/BMES run that is never closed is dropped
        ("BIOES", ["B-PER", "I-PER", "O", "S-LOC"], [("LOC", 3, 4)]),
        ("BIOES", ["O", "I-PER", "E-PER"], []),
        ("BMES", ["B-PER", "M-PER", "O", "B-LOC", "E-LOC"], [("LOC", 3, 5)]),
    ],
)
def test_decode_spans_strict_drops_ill_formed(
    scheme: str, tags: list[str], spans: list[tuple[str, int, int]]
) -> None:
    assert decode_spans(tags, scheme) == spans


# --- properties: encode random spans, validate and decode them -----------------------------

TYPES = ("PER", "LOC", "ORG", "MISC")


@st.composite
def typed_spans(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    """(n tokens, non-overlapping sorted spans (type, start, end exclusive)), adjacency allowed."""
    pieces = draw(
        st.lists(
            st.tuples(
                st.integers(0, 3),  # gap of O tokens before the entity (0: adjacent)
                st.integers(1, 4),  # entity length
                st.sampled_from(TYPES),
            ),
            max_size=8,
        )
    )
    spans, position = [], 0
    for gap, length, kind in pieces:
        start = position + gap
        spans.append((kind, start, start + length))
        position = start + length
    n = position + draw(st.integers(0, 3))
    return n, spans


def encode(n: int, spans: list[tuple[str, int, int]], scheme: str) -> list[str]:
    tags = ["O"] * n
    previous_end, previous_kind = -1, None
    for kind, start, end in spans:
        length = end - start
        if scheme == "IOB2":
            tags[start] = f"B-{kind}"
            for i in range(start + 1, end):
                tags[i] = f"I-{kind}"
        elif scheme == "IOB1":
            for i in range(start, end):
                tags[i] = f"I-{kind}"
            if previous_end == start and previous_kind == kind:
                tags[start] = f"B-{kind}"
        else:
            inside = "M" if scheme == "BMES" else "I"
            if length == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start] = f"B-{kind}"
                for i in range(start + 1, end - 1):
                    tags[i] = f"{inside}-{kind}"
                tags[end - 1] = f"E-{kind}"
        previous_end, previous_kind = end, kind
    return tags


def test_encoder_matches_hand_examples() -> None:
    spans = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 7)]
    assert encode(8, spans, "IOB2") == [
        "B-PER",
        "I-PER",
        "B-PER",
        "O",
        "B-LOC",
        "I-LOC",
        "I-LOC",
        "O",
    ]
    assert encode(8, spans, "IOB1") == [
        "I-PER",
        "I-PER",
        "B-PER",
        "O",
        "I-LOC",
        "I-LOC",
        "I-LOC",
        "O",
    ]
    assert encode(8, spans, "BIOES") == [
        "B-PER",
        "E-PER",
        "S-PER",
        "O",
        "B-LOC",
        "I-LOC",
        "E-LOC",
        "O",
    ]
    assert encode(8, spans, "BMES") == [
        "B-PER",
        "E-PER",
        "S-PER",
        "O",
        "B-LOC",
        "M-LOC",
        "E-LOC",
        "O",
    ]


PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(data=typed_spans(), scheme=st.sampled_from(SCHEMES))
def test_encoded_spans_are_valid_and_decode_exactly(
    data: tuple[int, list[tuple[str, int, int]]], scheme: str
) -> None:
    n, spans = data
    tags = encode(n, spans, scheme)
    assert len(tags) == n
    assert check_sequence(tags, scheme) is None, tags
    assert decode_spans(tags, scheme) == spans, tags


@PROPERTY_SETTINGS
@given(data=typed_spans())
def test_iob1_canonical_equals_iob2_encoding(data: tuple[int, list[tuple[str, int, int]]]) -> None:
    n, spans = data
    converted, _ = to_canonical(encode(n, spans, "IOB1"), "IOB1")
    assert converted == encode(n, spans, "IOB2")


@PROPERTY_SETTINGS
@given(data=typed_spans())
def test_bmes_canonical_equals_bioes_encoding(data: tuple[int, list[tuple[str, int, int]]]) -> None:
    n, spans = data
    converted, _ = to_canonical(encode(n, spans, "BMES"), "BMES")
    assert converted == encode(n, spans, "BIOES")
    assert check_sequence(converted, "BIOES") is None


@PROPERTY_SETTINGS
@given(data=typed_spans(), scheme=st.sampled_from(SCHEMES))
def test_decoded_spans_are_sorted_and_within_bounds(
    data: tuple[int, list[tuple[str, int, int]]], scheme: str
) -> None:
    n, spans = data
    decoded = decode_spans(encode(n, spans, scheme), scheme)
    for kind, start, end in decoded:
        assert kind in TYPES
        assert 0 <= start < end <= n
    assert decoded == sorted(decoded, key=lambda span: span[1])
