"""The reader of `task: embedding` (bridgetune.tasks.embedding): query + positive [+ hard
negatives] rows, or the ranking task's relevance file, grouped into one example per query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridgetune.config import DataConfig
from bridgetune.data.io import column, detect_format, iter_lines, read_records, read_text
from bridgetune.data.schema import DataError, Example
from bridgetune.tasks.ranking import RankingReader

NEGATIVE_COLUMNS = ("negative", "negatives")


class EmbeddingReader:
    """Rows of CSV, TSV or JSONL (module docstring). Layouts:

    - pairs: the query (`data.text_column`), a positive (`data.text_pair_column`, default
      column `positive`) and optionally hard negatives (`negative`: a text; `negatives`: a
      list of texts or one text; `negative_1`, `negative_2` ...: one text each);
    - relevance: with `data.text_pair_column` set and a `data.label_column` in the rows, the
      ranking task's file (candidate and relevance per row: > 0 relevant, 0 a hard negative).

    Unlabelled files (prediction, `bridgetune embed --file`) are texts in `data.text_column`."""

    tagged = False

    def read_file(self, path: Path, cfg: DataConfig, labelled: bool) -> list[Example]:
        fmt = detect_format(path, cfg.format, tagged=False)
        if fmt == "conll":
            raise DataError(f"{path}: embedding reads CSV/TSV/JSONL rows, not a token file")
        if not labelled:
            return [
                Example(
                    text=self._text(row, cfg.text_column, path, number), source=f"{path}:{number}"
                )  # fmt: skip
                for number, row in self._rows(path, fmt, cfg)
            ]
        groups: dict[str, Example] = {}
        for number, row in self._rows(path, fmt, cfg):
            query = self._text(row, cfg.text_column, path, number)
            candidates, relevance = self._candidates(row, cfg, path, number)
            key = query
            if cfg.group_column:
                key = str(column(row, cfg.group_column, path, number)).strip()
            group = groups.get(key)
            if group is None:
                group = Example(text=query, candidates=[], label=[], id=key,
                                source=f"{path}:{number}")  # fmt: skip
                groups[key] = group
            elif group.text != query:
                raise DataError(
                    f"{path}:{number}: query id {key!r} has another query text than at "
                    f"{group.source}; one id, one query: fix the id or the text"
                )
            assert group.candidates is not None and isinstance(group.label, list)
            group.candidates.extend(candidates)
            group.label.extend(relevance)  # type: ignore[arg-type]
        examples = list(groups.values())
        for example in examples:
            if max(example.label) <= 0:  # type: ignore[arg-type, type-var]
                raise DataError(
                    f"{example.source}: query {example.text[:60]!r} has no positive (only hard "
                    "negatives, or relevance 0 everywhere): give it a positive or remove it"
                )
        return examples

    @staticmethod
    def _rows(path: Path, fmt: str, cfg: DataConfig) -> Any:
        for number, raw in read_records(path, fmt):
            yield number, {cfg.column_map.get(k, k): v for k, v in raw.items()}

    _text = staticmethod(RankingReader._text)  # a non-empty text in the column, or DataError

    def _candidates(
        self, row: dict[str, Any], cfg: DataConfig, path: Path, number: int
    ) -> tuple[list[str], list[float]]:
        """A row's candidates and their relevance (module docstring's layouts)."""
        if cfg.text_pair_column and cfg.label_column in row:
            candidate = self._text(row, cfg.text_pair_column, path, number)
            relevance = RankingReader._relevance(row[cfg.label_column], cfg, path, number)
            return [candidate], [relevance]  # 0: a hard negative; in (0, 1]: a pair score too
        positive = self._text(row, cfg.text_pair_column or "positive", path, number)
        negatives: list[str] = []
        for name in sorted(row, key=str):
            if name in NEGATIVE_COLUMNS or str(name).startswith("negative_"):
                value = row[name]
                values = value if isinstance(value, list) else [value]
                for text in values:
                    if text is None or (isinstance(text, str) and not text.strip()):
                        continue  # an empty negative cell: no negative
                    if not isinstance(text, str):
                        raise DataError(
                            f"{path}:{number}: column '{name}' holds {type(text).__name__}, "
                            "not text; hard negatives are texts (a list of texts in JSONL)"
                        )
                    negatives.append(text)
        return [positive, *negatives], [1.0] + [0.0] * len(negatives)

    def read_passages(self, path: Path, column_name: str = "text") -> list[str]:
        """Passages of a TXT file (a line each; blank lines skipped) or of `column_name` in
        CSV/TSV/JSONL rows (DataError at file:line for a row without it)."""
        path = Path(path)
        if path.suffix.lower() in (".txt", ".text", ".md"):
            return [line for line in iter_lines(read_text(path)) if line.strip()]
        cfg = DataConfig(train=str(path), text_column=column_name)
        return [e.text for e in self.read_file(path, cfg, labelled=False)]

    def read_row(self, row: dict[str, Any], cfg: DataConfig, where: tuple[Path, int]) -> Example:
        path, number = where
        query = self._text(row, cfg.text_column, path, number)
        candidates, relevance = self._candidates(row, cfg, path, number)
        return Example(text=query, candidates=candidates, label=relevance,  # type: ignore[arg-type]
                       source=f"{path}:{number}")  # fmt: skip

    def infer_labels(self, train: list[Example], scheme: str | None) -> list[str]:
        return ["relevance"]

    def check_label_set(self, labels: list[str], source: str) -> None:
        if labels != ["relevance"]:
            raise DataError(f"{source}: embedding learns no classes; data.labels gave {labels}")

    def stratum(self, example: Example) -> str | None:
        return None
