"""Length-bucketed batches under an example count and a token budget (no padding to max_length).

Examples are shuffled, cut into chunks of many batches, sorted by length inside each chunk and
packed; the batches are shuffled again. Similar lengths share a batch, so little padding is
computed, while the order still changes every epoch (seeded by seed and epoch).
"""

from __future__ import annotations

import random

CHUNK_BATCHES = 50
PAD_MULTIPLE = 8  # tensor cores and vectorized kernels like widths divisible by 8

IGNORE = -100  # label of positions that do not count (word pieces after the first, padding)
# batch entries the loss reads and the model never sees ("teacher": distillation's soft targets)
LOSS_KEYS = ("labels", "groups", "teacher")


def feature_length(feature: dict) -> int:
    """What a feature costs in a batch: its token count, or (a feature of several rows: a
    ranking query with its candidates, a long QA context in windows) its declared `length`."""
    return feature.get("length") or len(feature["input_ids"])


def padded(length: int) -> int:
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def pack(
    order: list[int], lengths: list[int], batch_size: int, batch_tokens: int | None
) -> list[list[int]]:
    """Cut `order` into consecutive batches of at most batch_size examples and the token budget."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for index in order:
        width = padded(max(longest, lengths[index]))
        over_tokens = batch_tokens is not None and width * (len(batch) + 1) > batch_tokens
        if batch and (len(batch) >= batch_size or over_tokens):
            batches.append(batch)
            batch, longest = [], 0
        batch.append(index)
        longest = max(longest, lengths[index])
    if batch:
        batches.append(batch)
    return batches


def train_batches(
    lengths: list[int], batch_size: int, batch_tokens: int | None, seed: int, epoch: int
) -> list[list[int]]:
    """Shuffled length-bucketed batches of one epoch; the same for every process of a run."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * CHUNK_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches.extend(pack(part, lengths, batch_size, batch_tokens))
    rng.shuffle(batches)
    return batches


def eval_batches(
    lengths: list[int], batch_size: int, batch_tokens: int | None = None
) -> list[list[int]]:
    """Batches sorted by length (least padding); callers restore the original order."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return pack(order, lengths, batch_size, batch_tokens)


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: every world-th one, the same count on every process."""
    usable = len(batches) // world * world if world > 1 else len(batches)
    return batches[rank:usable:world]
