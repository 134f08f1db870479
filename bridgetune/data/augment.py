"""Augmentation of the training split: seeded, label-preserving ops registered by name.

An augmenter is a callable `(example, rng) -> iterator of examples`. `AUGMENTERS` maps an op name
to a factory that builds one from an `AugmentContext` (config, tagged or not, tokenizer, the
whole split), so ops that need a model or split-wide statistics load or collect them once.
Augmenters that also have `batch(pairs) -> list[Example | None]` are run batched (the
model-backed ones, in augment_models.py).

Ops work on "units": a word (a character in CJK text) that may change, or, for NER, a whole
entity mention that word ops keep as it is; tags are re-encoded from the units, so every output
is a valid sequence of the scheme.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, NamedTuple

from bridgetune.config import AugmentConfig, ConfigError
from bridgetune.data.edits import (
    CJK_CHAR,
    AugmentContext,
    Augmenter,
    Unit,
    change_count,
    editable,
    replace_words,
    to_units,
    unit_augmenter,
)
from bridgetune.data.schema import Example
from bridgetune.data.tags import check_sequence, split_tag
from bridgetune.registry import Registry
from bridgetune.runtime.processes import processes, shared

PROGRESS_MIN_EXAMPLES = 1000  # smaller splits augment in seconds: no progress bar
CHUNK = 256  # jobs per call of an augmenter's batch(); the progress bar advances per chunk


AUGMENTERS: Registry[Callable[[AugmentContext], Augmenter]] = Registry("augmentation")


class _Job(NamedTuple):
    index: int  # of the original example
    op: str
    seed: int


def swap_words(units: list[Unit], rng: random.Random, p: float) -> list[Unit] | None:
    """Swap two different words, max(1, round(p * n)) times (EDA's random swap)."""
    slots = editable(units)
    if len({units[i] for i in slots}) < 2:
        return None
    units = list(units)
    for _ in range(change_count(len(slots), p)):
        first = rng.choice(slots)
        second = rng.choice([i for i in slots if units[i] != units[first]])
        units[first], units[second] = units[second], units[first]
    return units


def delete_words(units: list[Unit], rng: random.Random, p: float) -> list[Unit] | None:
    """Drop max(1, round(p * n)) words, never every word of the example."""
    slots = editable(units)
    count = min(change_count(len(slots), p), len(slots) - (len(slots) == len(units)))
    if count <= 0:
        return None
    dropped = set(rng.sample(slots, count))
    return [unit for index, unit in enumerate(units) if index not in dropped]


def insert_words(units: list[Unit], rng: random.Random, p: float) -> list[Unit] | None:
    """Insert copies of words of the example at random places (EDA without a thesaurus)."""
    slots = editable(units)
    if not slots:
        return None
    copies = [units[rng.choice(slots)] for _ in range(change_count(len(slots), p))]
    units = list(units)
    for unit in copies:
        units.insert(rng.randint(0, len(units)), unit)
    return units


def replace_mentions(
    units: list[Unit], rng: random.Random, p: float, mentions: dict[str, list[tuple[str, ...]]]
) -> list[Unit] | None:
    """Replace max(1, round(p * entities)) mentions by other mentions of the same type."""
    slots = [i for i, u in enumerate(units) if u.entity and len(mentions.get(u.entity, [])) > 1]
    if not slots:
        return None
    units = list(units)
    n_entities = sum(unit.entity is not None for unit in units)
    for index in rng.sample(slots, min(len(slots), change_count(n_entities, p))):
        entity = units[index].entity
        choices = [m for m in mentions[entity] if m != units[index].words]  # type: ignore[index]
        units[index] = Unit(rng.choice(choices), entity)
    return units


def collect_mentions(examples: list[Example], scheme: str) -> dict[str, list[tuple[str, ...]]]:
    """Distinct mentions per entity type in the split, in order of first appearance."""
    mentions: dict[str, dict[tuple[str, ...], None]] = defaultdict(dict)
    for example in examples:
        for unit in to_units(example, scheme) or []:
            if unit.entity is not None:
                mentions[unit.entity][unit.words] = None
    return {entity: list(found) for entity, found in mentions.items()}


def _word_op(edit: Callable[..., list[Unit] | None]) -> Callable[[AugmentContext], Augmenter]:
    return lambda ctx: unit_augmenter(partial(edit, p=ctx.cfg.p), ctx.tag_scheme)


AUGMENTERS.register("swap")(_word_op(swap_words))
AUGMENTERS.register("delete")(_word_op(delete_words))
AUGMENTERS.register("insert")(_word_op(insert_words))


@AUGMENTERS.register("mask")
def _mask(ctx: AugmentContext) -> Augmenter:
    token = getattr(ctx.tokenizer, "mask_token", None)
    if not token:
        raise ConfigError(
            f"augment op 'mask' needs a tokenizer with a mask token; the tokenizer of "
            f"{ctx.model_path} has none. Remove 'mask' from augment.ops (try 'delete')."
        )
    edit = partial(replace_words, p=ctx.cfg.p, substitute=lambda core, rng: token)
    return unit_augmenter(edit, ctx.tag_scheme)


@AUGMENTERS.register("mention")
def _mention(ctx: AugmentContext) -> Augmenter:
    mentions = collect_mentions(ctx.examples, ctx.tag_scheme)
    if not any(len(found) > 1 for found in mentions.values()):
        raise ConfigError(
            "augment op 'mention' needs an entity type with at least two different mentions in "
            f"the training split; found {len(mentions)} type(s) with fewer. Remove 'mention' "
            "from augment.ops or add examples."
        )
    edit = partial(replace_mentions, p=ctx.cfg.p, mentions=mentions)
    return unit_augmenter(edit, ctx.tag_scheme)


def _model_op(name: str) -> Callable[[AugmentContext], Augmenter]:
    def build(ctx: AugmentContext) -> Augmenter:
        # imported on use: torch and transformers only load when a model-backed op is asked for
        from bridgetune.data import augment_models

        return augment_models.AUGMENTER_CLASSES[name](ctx)

    return build


for _name in ("synonym", "contextual", "backtranslation"):
    AUGMENTERS.register(_name)(_model_op(_name))


def infer_tag_scheme(examples: list[Example]) -> str:
    """The tag scheme the examples' tags are valid in (BMES when only B/E/S and CJK text)."""
    prefixes = {split_tag(tag)[0] for e in examples for tag in e.tags or [] if tag != "O"}
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S"}:
        if "I" in prefixes or not any(CJK_CHAR.search(e.text) for e in examples):
            return "BIOES"
        return "BMES"
    valid = all(check_sequence(e.tags, "IOB2") is None for e in examples if e.tags)
    return "IOB2" if valid else "IOB1"


def check_ops(cfg: AugmentConfig, tagged: bool) -> None:
    """Raise ConfigError for ops the data cannot take (tags that cannot stay aligned)."""
    if tagged and "backtranslation" in cfg.ops:
        raise ConfigError(
            "augment op 'backtranslation' cannot keep token tags aligned; for task 'ner' use "
            "swap, delete, insert, mask, synonym, contextual or mention"
        )
    if not tagged and "mention" in cfg.ops:
        raise ConfigError("augment op 'mention' replaces entity mentions: task 'ner' only")


def _plan(n_examples: int, cfg: AugmentConfig) -> list[_Job]:
    """One job per copy, each with its op and own seed, so results do not depend on batching."""
    rng = random.Random(cfg.seed)
    return [
        _Job(index, rng.choice(cfg.ops), rng.getrandbits(64))
        for index in range(n_examples)
        for _ in range(cfg.copies)
    ]


def _apply(
    augmenter: Augmenter, pairs: list[tuple[Example, random.Random]]
) -> list[Example | None]:
    batch = getattr(augmenter, "batch", None)
    if batch is not None:
        return batch(pairs)
    return [next(iter(augmenter(example, rng)), None) for example, rng in pairs]


def _run(
    jobs: list[_Job], examples: list[Example], augmenters: dict, advance: Callable[[int], None]
) -> list[Example | None]:
    """Each job's result, running the jobs of one op together in chunks."""
    results: list[Example | None] = [None] * len(jobs)
    by_op: dict[str, list[int]] = defaultdict(list)
    for position, job in enumerate(jobs):
        by_op[job.op].append(position)
    for op, positions in by_op.items():
        for start in range(0, len(positions), CHUNK):
            chunk = positions[start : start + CHUNK]
            pairs = [(examples[jobs[k].index], random.Random(jobs[k].seed)) for k in chunk]
            for k, result in zip(chunk, _apply(augmenters[op], pairs)):
                results[k] = result
            advance(len(chunk))
    return results


def _run_part(
    jobs: list[_Job],
    examples: list[Example],
    augmenters: dict,
    advance: Callable[[int], None],
    part: slice,
) -> list[Example | None]:
    return _run(jobs[part], examples, augmenters, advance)


def _content(example: Example) -> tuple:
    return example.text, example.text_pair, tuple(example.tokens or ()), tuple(example.tags or ())


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("[bold]augmenting", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("augmenting", total=total)
        yield lambda n: bar.advance(task, n)


def _augment(
    examples: list[Example],
    context: AugmentContext,
    limit: int | None = None,
) -> list[tuple[int, Example, str]]:
    """(original index, augmented example, op), in plan order; stops after `limit` results."""
    cfg = context.cfg
    check_ops(cfg, context.tagged)
    if not cfg.ops or not examples:
        return []
    augmenters = {op: AUGMENTERS.get(op)(context) for op in dict.fromkeys(cfg.ops)}
    jobs = _plan(len(examples), cfg)
    window = len(jobs) if limit is None else max(4 * limit, 32)
    found: list[tuple[int, Example, str]] = []
    seen = {(i, _content(e)) for i, e in enumerate(examples)}
    # a distributed run shares the work: each process makes every n-th copy, all get all
    # (the same split everywhere; model-backed ops take 1/n of the time); previews run alone
    rank, n = processes() if limit is None else (0, 1)
    enabled = limit is None and rank == 0 and len(examples) > PROGRESS_MIN_EXAMPLES
    with _progress(len(jobs[::n]), enabled) as advance:  # the main process's share
        for start in range(0, len(jobs), window):
            batch = jobs[start : start + window]
            if limit is None:
                part_of = partial(_run_part, batch, examples, augmenters, advance)
                results = shared(len(batch), part_of)
            else:
                results = _run(batch, examples, augmenters, advance)
            for job, result in zip(batch, results):
                key = (job.index, _content(result)) if result else None
                if key is None or key in seen:
                    continue  # nothing changed, or the same as another copy
                seen.add(key)
                where = examples[job.index].source or f"example {job.index + 1}"
                found.append((job.index, replace(result, source=f"{where} ({job.op})"), job.op))
            if limit is not None and len(found) >= limit:
                break
    return found


def _context(
    examples: list[Example],
    cfg: AugmentConfig,
    tagged: bool,
    tokenizer: Any,
    model_path: str,
    tag_scheme: str | None,
) -> AugmentContext:
    if tag_scheme is None:
        tag_scheme = infer_tag_scheme(examples) if tagged else "IOB2"
    return AugmentContext(cfg, tagged, tokenizer, model_path, examples, tag_scheme)


def augment_split(
    examples: list[Example],
    cfg: AugmentConfig,
    tagged: bool,
    tokenizer: Any,
    model_path: str,
    tag_scheme: str | None = None,
) -> list[Example]:
    """The examples followed by up to `cfg.copies` augmented copies of each, in order.

    Each copy is made by one op drawn with `cfg.seed`: the same inputs give the same output.
    A copy an op cannot make (one word to swap, no O token, ...) or that repeats the original
    or another copy is left out.

    Args:
        examples: the training split (never dev or test).
        cfg: the `augment` section.
        tagged: the examples carry word tags (NER; the task's `reader.tagged`): entity
            mentions and tags stay aligned.
        tokenizer: the model's tokenizer (mask token, vocabulary of 'synonym').
        model_path: the model's directory or hub id (input embeddings of 'synonym').
        tag_scheme: NER tag scheme (data.tag_scheme); inferred from the tags when None.

    Raises:
        ConfigError: an op cannot run as configured (no mask token, a model that cannot load,
            no entity type with two mentions, an op the task does not support).
    """
    context = _context(examples, cfg, tagged, tokenizer, model_path, tag_scheme)
    return list(examples) + [example for _, example, _ in _augment(examples, context)]


def preview(
    examples: list[Example],
    cfg: AugmentConfig,
    tagged: bool,
    tokenizer: Any,
    model_path: str,
    n: int,
    tag_scheme: str | None = None,
) -> list[tuple[Example, Example, str]]:
    """(original, augmented, op) of the first `n` copies `augment_split` would add.

    Only the jobs needed for `n` copies run, so previews of large splits are quick (model-backed
    ops and 'mention' still load their model or scan the split once).
    """
    context = _context(examples, cfg, tagged, tokenizer, model_path, tag_scheme)
    found = _augment(examples, context, limit=n)[:n]
    return [(examples[index], example, op) for index, example, op in found]
