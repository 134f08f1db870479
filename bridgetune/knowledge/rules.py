"""Rules at prediction time: regular expressions and dictionaries that add, override or veto
what the model predicted (`rules:` in a run config; saved with the model, so `predict`, the
service and the final evaluation apply them alike).

A rule matches spans of the text: every match of its `pattern` (a regular expression), or every
occurrence of one of its `words` (longest first; a `words_file` holds one per line). For NER,
`type` is the entity type; for classification, `label` is the class:

- `add` (NER): a match becomes an entity where the model found none that overlaps it;
- `override`: NER: a match becomes an entity and replaces the model's overlapping ones;
  classification: a text with a match gets `label`;
- `veto`: NER: the model's entities that overlap a match (of `type`, when given) are removed;
  classification: when the model said `label` and the text matches, the next most probable
  class is taken instead.

Precedence is the order of the list: rules apply top to bottom, each to the result of the ones
before it. Every entity and every label says where it came from: `source: "model"` or
`source: "rule"` with `rule`, the rule's `name` (or its position, `rules[2]`).
"""

from __future__ import annotations

import re
from typing import Any

from bridgetune.config import RuleConfig
from bridgetune.knowledge.words import read_word_list


def loaded(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules with their words files read in (what a model directory keeps)."""
    result = []
    for index, raw in enumerate(rules):
        rule = RuleConfig.model_validate(raw).model_dump(exclude_none=True)
        words = list(rule.get("words") or [])
        if rule.get("words_file"):
            missing = f"does not exist (rules[{index}].words_file)"
            words += [word for _, word in read_word_list(rule.pop("words_file"), missing)]
        if words:
            rule["words"] = sorted(set(words), key=len, reverse=True)
        rule.setdefault("name", f"rules[{index}]")
        result.append(rule)
    return result


def matches(rule: dict[str, Any], text: str) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) spans of `text` the rule matches, in order."""
    spans = []
    if rule.get("pattern"):
        spans += [m.span() for m in re.finditer(rule["pattern"], text) if m.end() > m.start()]
    for word in rule.get("words") or []:
        spans += [m.span() for m in re.finditer(re.escape(word), text)]
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


def apply_to_entities(
    rules: list[dict[str, Any]], text: str, entities: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The model's entities after the rules, each with its `source` (and `rule`)."""
    current = [{**e, "source": e.get("source", "model")} for e in entities]
    for rule in rules:
        spans = matches(rule, text)
        if not spans:
            continue

        def hit(entity: dict[str, Any], rule: dict = rule, spans: list = spans) -> bool:
            if rule["action"] == "veto" and rule.get("type") not in (None, entity["type"]):
                return False
            return any(entity["start"] < end and start < entity["end"] for start, end in spans)

        if rule["action"] in ("veto", "override"):
            current = [e for e in current if not hit(e)]
        if rule["action"] in ("add", "override"):
            for start, end in spans:
                if any(e["start"] < end and start < e["end"] for e in current):
                    continue  # add never displaces the model; override removed its overlaps
                current.append({"type": rule["type"], "start": start, "end": end,
                                "text": text[start:end], "source": "rule",
                                "rule": rule["name"]})  # fmt: skip
    return sorted(current, key=lambda e: e["start"])


def apply_to_label(
    rules: list[dict[str, Any]], text: str, prediction: dict[str, Any]
) -> dict[str, Any]:
    """A classification prediction after the rules, with its `source` (and `rule`)."""
    result = {**prediction, "source": prediction.get("source", "model")}
    for rule in rules:
        if not matches(rule, text):
            continue
        if rule["action"] == "override":
            result.update(label=rule["label"], source="rule", rule=rule["name"])
            result["score"] = result["scores"].get(rule["label"], result["score"])
        elif rule["action"] == "veto" and result["label"] == rule["label"]:
            others = {k: v for k, v in result["scores"].items() if k != rule["label"]}
            best = max(others, key=others.get)
            result.update(label=best, score=others[best], source="rule", rule=rule["name"])
    return result
