"""Pre-training corpora of any size: documents read from disk when needed, windows tokenized once.

`LazyLines` stands for the documents of a .txt file (one per non-empty line) or a JSONL file
(one row per line): it keeps each document's byte offset and line number (two integers) and
reads a document when it is indexed or iterated, so a corpus larger than memory can be read.

`windows` tokenizes the documents into masked-LM windows, streaming them in chunks, and writes
the token ids, masking units and window boundaries as flat arrays into a cache directory keyed
by the documents' text, the tokenizer's vocabulary and the masking settings
($BRIDGETUNE_CACHE/corpus, default ~/.cache/bridgetune/corpus). A second run on the same text
(another epoch count, a resume, a new learning rate) maps the arrays instead of tokenizing and
segmenting again. `WindowStore` serves the windows as the features the loop indexes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from bridgetune.data.schema import DataError, Example

CHUNK = 2048  # documents tokenized together
FILES = ("ids.bin", "units.bin", "starts.npy", "docs.npy")
PROGRESS_FROM = 50_000  # documents: a progress bar from this corpus size on


def cache_root() -> Path:
    """Where the windows are cached (bridgetune's cache, as for pulled models)."""
    from bridgetune.models.pulled import user_cache

    return user_cache()


class LazyLines(Sequence[Example]):
    """The documents of one line-per-document file, read when needed."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str, int], Example],
        starts: np.ndarray,
        numbers: np.ndarray,
    ) -> None:
        self.path, self.parse, self.starts, self.numbers = path, parse, starts, numbers

    @classmethod
    def scan(cls, path: Path, parse: Callable[[str, int], Example]) -> LazyLines:
        """Offsets and line numbers of the file's non-empty lines (one pass, no text kept)."""
        starts, numbers = [], []
        offset = 0
        with path.open("rb") as stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    starts.append(offset)
                    numbers.append(number)
                offset += len(line)
        return cls(path, parse, np.asarray(starts, np.int64), np.asarray(numbers, np.int64))

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> LazyLines: ...

    def __getitem__(self, index: int | slice) -> Example | LazyLines:
        if isinstance(index, slice):  # iteration reads forward: a reversed slice would not
            if (index.step or 1) < 0:
                raise ValueError("LazyLines: slices must run forward")
            return LazyLines(self.path, self.parse, self.starts[index], self.numbers[index])
        with self.path.open("rb") as stream:
            stream.seek(int(self.starts[index]))
            return self._parse(stream.readline(), int(self.numbers[index]))

    def __iter__(self) -> Iterator[Example]:
        wanted = iter(zip(self.starts.tolist(), self.numbers.tolist()))
        target = next(wanted, None)
        offset = 0
        with self.path.open("rb") as stream:
            for line in stream:
                if target is None:
                    return
                if offset == target[0]:
                    yield self._parse(line, target[1])
                    target = next(wanted, None)
                offset += len(line)

    def _parse(self, raw: bytes, number: int) -> Example:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(
                f"{self.path}:{number}: not UTF-8 text; convert the file "
                "(e.g. iconv -f GBK -t UTF-8)"
            ) from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        return self.parse(line.strip(), number)


class Window(dict):
    """One window's feature; its "example" (the document, read from disk) is fetched only when
    asked for (decoding dev windows), not when the loop sizes or batches windows."""

    def __init__(self, examples: Sequence[Example], doc: int, **fields: Any) -> None:
        super().__init__(**fields)
        self._examples, self._doc = examples, doc

    def __missing__(self, key: str) -> Any:
        if key != "example":
            raise KeyError(key)
        self["example"] = self._examples[self._doc]
        return self["example"]

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self or key == "example" else default


class WindowStore(Sequence[dict]):
    """Masked-LM windows in flat arrays: item i is the feature of window i."""

    def __init__(self, arrays: dict[str, np.ndarray], examples: Sequence[Example]) -> None:
        self.ids, self.units = arrays["ids"], arrays["units"]
        self.starts, self.docs = arrays["starts"], arrays["docs"]
        self.examples = examples

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):  # a part (one process's share of dev): materialized
            return [self[i] for i in range(*index.indices(len(self)))]
        start, end = int(self.starts[index]), int(self.starts[index + 1])
        return Window(
            self.examples,
            int(self.docs[index]),
            input_ids=self.ids[start:end].tolist(),
            units=self.units[start:end].tolist(),
            length=end - start,
            labels=None,
            truncated=False,
        )

    def lengths(self) -> list[int]:
        return np.diff(self.starts).tolist()


def cache_key(examples: Sequence[Example], tokenizer: Any, settings: dict[str, Any]) -> str:
    """sha256 of the documents' text (streamed), the tokenizer's vocabulary and `settings`."""
    digest = hashlib.sha256()
    vocabulary = sorted(tokenizer.get_vocab().items())
    digest.update(json.dumps([type(tokenizer).__name__, vocabulary, settings]).encode())
    for example in examples:
        digest.update(example.text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def windows(
    examples: Sequence[Example],
    tokenizer: Any,
    cut: Callable[[list[Example], Any], Iterator[tuple[int, list[int], list[int]]]],
    settings: dict[str, Any],
) -> WindowStore:
    """The windows of `examples`, from the cache or tokenized now and cached.

    `cut(chunk, tokenizer)` yields (document index within the chunk, window ids, window units)
    for a chunk of documents; `settings` is everything besides the text and the vocabulary that
    changes the windows (masking, phrases, max_length).
    """
    from bridgetune.lifecycle.atomic import atomic_directory

    directory = cache_root() / "corpus" / cache_key(examples, tokenizer, settings)
    if not all((directory / name).is_file() for name in FILES):
        directory.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(directory) as staging:
            _tokenize(examples, tokenizer, cut, staging)
    arrays = {
        "ids": _mapped(directory / "ids.bin", np.uint32),
        "units": _mapped(directory / "units.bin", np.int32),
        "starts": np.load(directory / "starts.npy"),
        "docs": np.load(directory / "docs.npy"),
    }
    return WindowStore(arrays, examples)


def _mapped(path: Path, dtype: Any) -> np.ndarray:
    """A flat array file mapped read-only (an empty file is an empty array)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def _tokenize(
    examples: Sequence[Example],
    tokenizer: Any,
    cut: Callable[[list[Example], Any], Iterator[tuple[int, list[int], list[int]]]],
    directory: Path,
) -> None:
    """Stream the documents through `cut` in chunks; the arrays are written to `directory`."""
    from rich.progress import Progress

    ids_path, units_path = directory / "ids.bin", directory / "units.bin"
    starts, docs = [0], []
    total = 0
    show = len(examples) >= PROGRESS_FROM
    with (
        ids_path.open("wb") as ids_out,
        units_path.open("wb") as units_out,
        Progress(transient=True, disable=not show) as progress,
    ):
        task = progress.add_task("tokenizing (cached for later runs)", total=len(examples))
        chunk: list[Example] = []
        first = 0

        def flush() -> None:
            nonlocal total
            for offset, ids, units in cut(chunk, tokenizer):
                np.asarray(ids, np.uint32).tofile(ids_out)
                np.asarray(units, np.int32).tofile(units_out)
                total += len(ids)
                starts.append(total)
                docs.append(first + offset)
            progress.advance(task, len(chunk))

        for example in examples:
            chunk.append(example)
            if len(chunk) == CHUNK:
                flush()
                first += len(chunk)
                chunk = []
        if chunk:
            flush()
    np.save(directory / "starts.npy", np.asarray(starts, np.int64))
    np.save(directory / "docs.npy", np.asarray(docs, np.int64))
