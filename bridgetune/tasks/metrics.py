"""Metrics of every task (scikit-learn, seqeval): classification, multi-label, entities,
language-model loss, relations (SemEval-2010 Task 8's official score). The reports they go
into are bridgetune.lifecycle.reports."""

from __future__ import annotations

from typing import Any

from bridgetune.data.tags import to_canonical

AVERAGES = ("macro", "micro", "weighted")


def _precision_recall_f1(y_true: Any, y_pred: Any, names: list[str], **kwargs: Any) -> dict:
    """P/R/F1 averaged three ways plus the per-class table (scikit-learn)."""
    from sklearn.metrics import precision_recall_fscore_support

    result: dict[str, Any] = {}
    for average in AVERAGES:
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0, **kwargs
        )
        result.update(
            {
                f"precision_{average}": float(p),
                f"recall_{average}": float(r),
                f"f1_{average}": float(f),
            }
        )
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0, **kwargs)
    result["per_class"] = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
        }
        for i, label in enumerate(names)
    }
    return result


def classification_metrics(gold: list[str], predicted: list[str], labels: list[str]) -> dict:
    """Accuracy, P/R/F1 (macro, micro, weighted), per-class table and confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    result: dict[str, Any] = {"accuracy": float(accuracy_score(gold, predicted))}
    result.update(_precision_recall_f1(gold, predicted, labels, labels=labels))
    result["confusion_matrix"] = confusion_matrix(gold, predicted, labels=labels).tolist()
    result["labels"] = list(labels)
    return result


def multilabel_metrics(
    gold: list[list[str]], predicted: list[list[str]], labels: list[str]
) -> dict:
    """Subset accuracy, P/R/F1 over label indicators (macro, micro, weighted) and per class."""
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import MultiLabelBinarizer

    binarizer = MultiLabelBinarizer(classes=labels).fit([labels])
    y_true, y_pred = binarizer.transform(gold), binarizer.transform(predicted)
    result: dict[str, Any] = {"subset_accuracy": float(accuracy_score(y_true, y_pred))}
    result.update(_precision_recall_f1(y_true, y_pred, labels))
    return result


def entity_metrics(gold: list[list[str]], predicted: list[list[str]], scheme: str) -> dict:
    """Entity-level P/R/F1 with strict span matching (seqeval), overall and per type."""
    from seqeval.metrics import classification_report

    y_true = [to_canonical(tags, scheme)[0] for tags in gold]
    y_pred = [to_canonical(tags, scheme)[0] for tags in predicted]
    seq_scheme = to_canonical(["O"], scheme)[1]
    report = classification_report(
        y_true, y_pred, mode="strict", scheme=seq_scheme, output_dict=True, zero_division=0
    )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    per_type = {
        kind: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for kind, v in report.items()
        if not kind.endswith(" avg")
    }
    tokens = sum(len(t) for t in gold)
    correct = sum(g == p for gs, ps in zip(gold, predicted) for g, p in zip(gs, ps))
    return {
        "entity_precision": float(micro["precision"]),
        "entity_recall": float(micro["recall"]),
        "entity_f1": float(micro["f1-score"]),
        "entity_f1_macro": float(report.get("macro avg", {}).get("f1-score", 0.0)),
        "token_accuracy": correct / max(tokens, 1),
        "per_type": per_type,
    }


def loss_metrics(predictions: list[dict[str, Any]]) -> dict:
    """Language models' dev scores from per-example summed losses ("nll") over "tokens": the
    mean loss per token, its perplexity, and the tokens scored."""
    import math

    tokens = sum(p["tokens"] for p in predictions)
    loss = sum(p["nll"] for p in predictions) / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}


def relation_type(label: str) -> str:
    """A relation label without its direction suffix: `Cause-Effect(e2,e1)` -> `Cause-Effect`."""
    import re

    return re.sub(r"\((e1,e2|e2,e1)\)$", "", label)


def relation_metrics(
    gold: list[str], predicted: list[str], labels: list[str], no_relation: str | None
) -> dict:
    """Relation classification: SemEval-2010 Task 8's official score and the per-label view.

    `macro_f1` is the official score (the task's scorer v1.2, "(9+1)-way evaluation with
    directionality taken into account"): per relation type of the gold labels (the direction
    suffix `(e1,e2)`/`(e2,e1)` dropped; labels without one are their own type), precision =
    right predictions (type and direction) / predictions of that type, recall = right / gold of
    that type; the F1s averaged over the types, the no-relation label left out. `micro_f1` pools
    the same counts. `macro_f1_directed` averages the F1 of each directed label but the
    no-relation one; `accuracy`, the per-label table and the confusion matrix are those of
    every label (classification_metrics)."""
    result = classification_metrics(gold, predicted, labels)
    none = relation_type(no_relation) if no_relation else None
    types = sorted({relation_type(g) for g in gold} - {none})
    per_type: dict[str, dict[str, float | int]] = {}
    pooled = {"correct": 0, "proposed": 0, "gold": 0}
    for kind in types:
        counts = {
            "correct": sum(g == p and relation_type(g) == kind for g, p in zip(gold, predicted)),
            "proposed": sum(relation_type(p) == kind for p in predicted),
            "gold": sum(relation_type(g) == kind for g in gold),
        }
        counts["wrong_direction"] = sum(
            g != p and relation_type(g) == kind == relation_type(p) for g, p in zip(gold, predicted)
        )
        for key in pooled:
            pooled[key] += counts[key]
        per_type[kind] = {**counts, **_prf(counts["correct"], counts["proposed"], counts["gold"])}
    result["macro_f1"] = (
        sum(float(t["f1"]) for t in per_type.values()) / len(per_type) if per_type else 0.0
    )
    result["macro_precision"] = (
        sum(float(t["precision"]) for t in per_type.values()) / len(per_type) if per_type else 0.0
    )
    result["macro_recall"] = (
        sum(float(t["recall"]) for t in per_type.values()) / len(per_type) if per_type else 0.0
    )
    micro = _prf(pooled["correct"], pooled["proposed"], pooled["gold"])
    result.update({f"micro_{key}": value for key, value in micro.items()})
    directed = [label for label in labels if label != no_relation]
    scores = [
        result["per_class"][label]["f1"] for label in directed if label in result["per_class"]
    ]
    result["macro_f1_directed"] = sum(scores) / len(scores) if scores else 0.0
    result["per_relation_type"] = per_type
    result["no_relation"] = no_relation
    return result


def _prf(correct: int, proposed: int, gold: int) -> dict[str, float]:
    precision = correct / proposed if proposed else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
