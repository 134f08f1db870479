"""Tag schemes for token classification: validation, conversion and span decoding.

Supported: IOB1, IOB2, BIOES and BMES (Chinese word/entity segmentation style: B, M, E, S).
Spans are decoded strictly (what seqeval's strict mode counts): an entity is exactly the run the
scheme defines; ill-formed runs in predictions are dropped rather than guessed.
"""

from __future__ import annotations

from seqeval.scheme import IOB2, IOBES, Entities

SCHEME_PREFIXES = {
    "IOB1": {"B", "I"},
    "IOB2": {"B", "I"},
    "BIOES": {"B", "I", "E", "S"},
    "BMES": {"B", "M", "E", "S"},
}


def split_tag(tag: str) -> tuple[str, str | None]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', None). Accepts '-' or '_' as separator."""
    if tag == "O":
        return "O", None
    for sep in ("-", "_"):
        if len(tag) > 2 and tag[1] == sep:
            return tag[0], tag[2:]
    return tag, None


def check_tag(tag: str, scheme: str) -> str | None:
    """Why `tag` cannot occur in `scheme`, or None when it can."""
    prefix, kind = split_tag(tag)
    if prefix == "O":
        return None
    if kind is None or prefix not in SCHEME_PREFIXES[scheme]:
        allowed = "/".join(sorted(SCHEME_PREFIXES[scheme]))
        return f"tag {tag!r} is not O or {allowed}-TYPE as scheme {scheme} requires"
    return None


def check_sequence(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """First (index, reason) where `tags` breaks `scheme`, or None when the sequence is valid."""
    previous = ("O", None)
    for index, tag in enumerate(tags):
        reason = check_tag(tag, scheme)
        if reason:
            return index, reason
        current = split_tag(tag)
        reason = _transition_error(previous, current, scheme)
        if reason:
            return index, reason
        previous = current
    if scheme in ("BIOES", "BMES") and previous[0] in ("B", "I", "M"):
        return len(tags) - 1, f"entity {previous[1]} is not closed with E-{previous[1]}"
    return None


def _transition_error(prev: tuple[str, str | None], cur: tuple[str, str | None], scheme: str):
    (p, p_kind), (c, c_kind) = prev, cur
    inside = "M" if scheme == "BMES" else "I"
    if scheme == "IOB2":
        if c == "I" and (p == "O" or p_kind != c_kind):
            return f"I-{c_kind} does not follow B-{c_kind} or I-{c_kind}; start it with B-{c_kind}"
        return None
    if scheme == "IOB1":
        if c == "B" and (p == "O" or p_kind != c_kind):
            return (
                f"B-{c_kind} only separates two adjacent {c_kind} entities in IOB1; use I-{c_kind}"
            )
        return None
    open_entity = p in ("B", inside)
    if open_entity and (c not in (inside, "E") or c_kind != p_kind):
        return f"entity {p_kind} opened before is not closed with E-{p_kind}"
    if not open_entity and c in (inside, "E"):
        return f"{c}-{c_kind} must follow B-{c_kind}" + (f" or {inside}-{c_kind}")
    return None


def to_canonical(tags: list[str], scheme: str) -> tuple[list[str], type]:
    """Convert to the IOB2 or IOBES form seqeval understands; returns (tags, seqeval scheme)."""
    if scheme == "IOB2":
        return list(tags), IOB2
    if scheme == "BIOES":
        return list(tags), IOBES
    if scheme == "BMES":
        return [("I" + t[1:]) if t.startswith("M") else t for t in tags], IOBES
    converted, previous = [], ("O", None)
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "I" and (previous[0] == "O" or previous[1] != kind):
            tag = f"B-{kind}"
        converted.append(tag)
        previous = (prefix, kind)
    return converted, IOB2


def repair_tags(tags: list[str], scheme: str) -> list[str]:
    """`tags` with every ill-formed transition mended, one rule per scheme (the tags themselves
    must be tags of the scheme, `check_tag`); valid sequences come back unchanged.

    - IOB2: an I-X that continues no X entity starts one (B-X), as conlleval reads it.
    - IOB1: a B-X that follows no X entity is I-X (it starts the entity either way).
    - BIOES, BMES: a continuation (I-X, M-X) or an end (E-X) that follows no open X entity
      starts one (B-X; a lone E-X is S-X); an entity that is not closed ends at its last token
      (that tag becomes E-X; a lone B-X becomes S-X). Every entity keeps the tokens its tags
      gave it, as the lenient decoders of these schemes read them.
    """
    if scheme in ("IOB1", "IOB2"):
        return _repair_iob(tags, scheme)
    inside = "M" if scheme == "BMES" else "I"
    repaired: list[str] = []
    for tag in tags:
        prefix, kind = split_tag(tag)
        before, before_kind = split_tag(repaired[-1]) if repaired else ("O", None)
        is_open = before in ("B", inside)
        continues = is_open and before_kind == kind and prefix in (inside, "E")
        if is_open and not continues:  # close the entity before: its last tag is its end
            repaired[-1] = _retag(repaired[-1], "E" if before == inside else "S")
        if prefix in (inside, "E") and not continues:  # starts an entity of its own
            tag = _retag(tag, "B" if prefix == inside else "S")
        repaired.append(tag)
    if repaired and split_tag(repaired[-1])[0] in ("B", inside):
        repaired[-1] = _retag(repaired[-1], "E" if repaired[-1][0] == inside else "S")
    return repaired


def _repair_iob(tags: list[str], scheme: str) -> list[str]:
    """IOB2: a stray I-X becomes B-X; IOB1: a B-X that separates nothing becomes I-X."""
    wrong, right = ("I", "B") if scheme == "IOB2" else ("B", "I")
    repaired, previous = [], ("O", None)
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == wrong and (previous[0] == "O" or previous[1] != kind):
            tag, prefix = _retag(tag, right), right
        repaired.append(tag)
        previous = (prefix, kind)
    return repaired


def _retag(tag: str, prefix: str) -> str:
    """`tag` with another prefix, its separator and type kept (B-PER -> E-PER, B_PER -> S_PER)."""
    return prefix + tag[1:]


def decode_spans(tags: list[str], scheme: str) -> list[tuple[str, int, int]]:
    """Entities as (type, first token, end token exclusive), decoded strictly."""
    canonical, seq_scheme = to_canonical(tags, scheme)
    canonical = [_normalize_separator(t) for t in canonical]
    entities = Entities([canonical], seq_scheme).entities[0]
    return [(e.tag, e.start, e.end) for e in entities]


def _normalize_separator(tag: str) -> str:
    prefix, kind = split_tag(tag)
    return "O" if kind is None else f"{prefix}-{kind}"
