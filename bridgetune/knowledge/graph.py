"""A knowledge graph of extracted triples (head, relation, tail), merged by normalized mention,
and its files: GraphML (networkx, Gephi), node and edge CSV in the header style of Neo4j's
`neo4j-admin database import`, a summary (JSON and Markdown) and a small plot.

A node is a normalized mention (NFKC, case-folded, white space collapsed: "ACME  Corp" and
"Acme Corp" are one node); it keeps its most frequent surface form as `name`, its entity types
and how often it was mentioned. An edge is one (head, relation, tail) with how many triples
said it, their best and mean score and a few example sentences. Every file is written
atomically (bridgetune.lifecycle.atomic).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from bridgetune.lifecycle.atomic import atomic_write_bytes, atomic_write_text
from bridgetune.lifecycle.reports import cjk_font, pyplot, save_figure, table_cell

EXAMPLES_PER_EDGE = 3
PLOT_TOP = 25
FILES = {
    "graphml": "graph.graphml",
    "nodes": "nodes.csv",
    "edges": "edges.csv",
    "summary": "summary.json",
    "summary_md": "summary.md",
    "plot": "graph.png",
}
NODE_HEADER = ["id:ID", "name", "type:LABEL", "mentions:int"]
EDGE_HEADER = [":START_ID", ":END_ID", ":TYPE", "count:int", "score:float", "mean_score:float",
               "example"]  # fmt: skip


def normalize_mention(text: str) -> str:
    """The key that merges mentions into one node: NFKC, case-folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class Node:
    """An entity: its surface forms and types with how often each was seen."""

    key: str
    names: Counter = field(default_factory=Counter)
    types: Counter = field(default_factory=Counter)

    @property
    def name(self) -> str:
        """The most frequent surface form (the first seen among equals)."""
        return self.names.most_common(1)[0][0]

    @property
    def type(self) -> str:
        """The most frequent entity type ("" when none was given)."""
        return self.types.most_common(1)[0][0] if self.types else ""

    @property
    def mentions(self) -> int:
        return sum(self.names.values())


@dataclass
class Edge:
    """A (head, relation, tail) with the triples that said it."""

    head: str
    relation: str
    tail: str
    count: int = 0
    score_max: float = 0.0
    score_sum: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def score_mean(self) -> float:
        return self.score_sum / self.count if self.count else 0.0


class KnowledgeGraph:
    """Triples merged by normalized mention: `KnowledgeGraph().add_all(triples)`.

    A triple is a mapping with `head`, `relation`, `tail` and optionally `head_type`,
    `tail_type`, `score`, `sentence`; with `doc`, `sentence_start` and the mentions' offsets
    (`head_start`, ... as triples.jsonl has them) a mention in several triples of its sentence
    is counted once, when the triples come sentence by sentence.
    """

    def __init__(self, examples_per_edge: int = EXAMPLES_PER_EDGE) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple[str, str, str], Edge] = {}
        self.triples = 0
        self.examples_per_edge = examples_per_edge
        self._sentence: tuple[Any, Any] | None = None
        self._counted: set[tuple[Any, Any, str]] = set()

    def add_all(self, triples: Iterable[Mapping[str, Any]]) -> KnowledgeGraph:
        for triple in triples:
            self.add(triple)
        return self

    def add(self, triple: Mapping[str, Any]) -> None:
        """Merge one triple; one whose head or tail normalizes to nothing is left out."""
        if not (normalize_mention(str(triple["head"])) and normalize_mention(str(triple["tail"]))):
            return
        head, tail = self._mention(triple, "head"), self._mention(triple, "tail")
        self.triples += 1
        key = (head, str(triple["relation"]), tail)
        edge = self.edges.get(key) or self.edges.setdefault(key, Edge(*key))
        score = float(triple.get("score", 1.0))
        edge.count += 1
        edge.score_sum += score
        edge.score_max = max(edge.score_max, score)
        sentence = triple.get("sentence")
        room = len(edge.examples) < self.examples_per_edge
        if sentence and room and sentence not in edge.examples:
            edge.examples.append(sentence)

    def _mention(self, triple: Mapping[str, Any], role: str) -> str:
        """The node key of the triple's head or tail, counted once per mention."""
        surface = str(triple[role]).strip()
        key = normalize_mention(surface)
        node = self.nodes.get(key) or self.nodes.setdefault(key, Node(key))
        sentence = (triple.get("doc"), triple.get("sentence_start"))
        if sentence != self._sentence:
            self._sentence, self._counted = sentence, set()
        span = (triple.get(f"{role}_start"), triple.get(f"{role}_end"), key)
        if span[0] is None or span not in self._counted:
            self._counted.add(span)
            node.names[surface] += 1
            kind = triple.get(f"{role}_type")
            if kind:
                node.types[str(kind)] += 1
        return key

    def degree(self) -> Counter:
        """Edges (distinct head, relation, tail) per node key."""
        counts: Counter = Counter({key: 0 for key in self.nodes})
        for head, _, tail in self.edges:
            counts[head] += 1
            counts[tail] += 1
        return counts

    def top_nodes(self, count: int = PLOT_TOP) -> list[str]:
        """The keys of the `count` most connected nodes (more mentions first among equals)."""
        degree = self.degree()
        ranked = sorted(self.nodes, key=lambda k: (-degree[k], -self.nodes[k].mentions))
        return ranked[:count]

    def to_networkx(self) -> nx.MultiDiGraph:
        """A MultiDiGraph keyed by relation; every attribute a GraphML-legal scalar."""
        graph = nx.MultiDiGraph()
        for key, node in self.nodes.items():
            graph.add_node(key, name=node.name, label=node.name, type=node.type,
                           types=";".join(t for t, _ in node.types.most_common()),
                           mentions=node.mentions)  # fmt: skip
        for (head, relation, tail), edge in self.edges.items():
            graph.add_edge(head, tail, key=relation, relation=relation, label=relation,
                           count=edge.count, score=float(edge.score_max),
                           mean_score=float(edge.score_mean),
                           examples=json.dumps(edge.examples, ensure_ascii=False))  # fmt: skip
        return graph

    def summary(self, top: int = PLOT_TOP) -> dict[str, Any]:
        """Counts: triples, nodes, edges, per relation, nodes per type; the most connected."""
        relations: dict[str, dict[str, int]] = {}
        for edge in self.edges.values():
            row = relations.setdefault(edge.relation, {"triples": 0, "edges": 0})
            row["triples"] += edge.count
            row["edges"] += 1
        types = Counter(node.type or "(none)" for node in self.nodes.values())
        degree = self.degree()
        return {
            "triples": self.triples,
            "nodes": len(self.nodes),
            "edges": len(self.edges),
            "relations": dict(sorted(relations.items(), key=lambda kv: -kv[1]["triples"])),
            "node_types": dict(types.most_common()),
            "top_nodes": [
                {
                    "rank": rank,
                    "id": key,
                    "name": self.nodes[key].name,
                    "type": self.nodes[key].type,
                    "degree": degree[key],
                    "mentions": self.nodes[key].mentions,
                }
                for rank, key in enumerate(self.top_nodes(top), 1)
            ],
        }


def write_graph_files(
    graph: KnowledgeGraph, directory: Path, extra: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Every file of the graph into `directory` (FILES); `extra` joins the summary (run
    counts such as documents and sentences). Returns the paths by kind."""
    directory = Path(directory)
    paths = {kind: directory / name for kind, name in FILES.items()}
    write_graphml(graph, paths["graphml"])
    write_neo4j_csv(graph, paths["nodes"], paths["edges"])
    summary = {**(extra or {}), **graph.summary()}
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(paths["summary_md"], summary_markdown(summary))
    plot_graph(graph, paths["plot"])
    return paths


def write_graphml(graph: KnowledgeGraph, path: Path) -> None:
    """GraphML that networkx.read_graphml and Gephi read (node ids: the normalized mentions)."""
    buffer = io.BytesIO()
    nx.write_graphml(graph.to_networkx(), buffer, encoding="utf-8")
    atomic_write_bytes(path, buffer.getvalue())


def write_neo4j_csv(graph: KnowledgeGraph, nodes_path: Path, edges_path: Path) -> None:
    """nodes.csv and edges.csv with the headers `neo4j-admin database import` reads (several
    types of one node: labels separated by ';', its default array delimiter)."""
    nodes = _csv_text(
        NODE_HEADER,
        ([key, node.name, ";".join(t for t, _ in node.types.most_common()), node.mentions]
         for key, node in graph.nodes.items()),
    )  # fmt: skip
    edges = _csv_text(
        EDGE_HEADER,
        ([e.head, e.tail, e.relation, e.count, round(e.score_max, 6), round(e.score_mean, 6),
          e.examples[0] if e.examples else ""] for e in graph.edges.values()),
    )  # fmt: skip
    atomic_write_text(nodes_path, nodes)
    atomic_write_text(edges_path, edges)


def _csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """summary.json as Markdown: the counts, relations, entity types, most connected nodes."""
    counted = ", ".join(f"{summary[k]:,} {k}" for k in ("documents", "sentences") if k in summary)
    source = f" from {counted}" if counted else ""
    lines = ["# Knowledge graph", "",
             f"{summary['triples']:,} triples, {summary['nodes']:,} entities, "
             f"{summary['edges']:,} edges (distinct head, relation, tail){source}",
             "", "## Relations", "", "| relation | triples | edges |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {table_cell(r)} | {row['triples']} | {row['edges']} |"
              for r, row in summary["relations"].items()]  # fmt: skip
    lines += ["", "## Entity types", "", "| type | entities |", "|---|---|"]
    lines += [f"| {table_cell(t)} | {n} |" for t, n in summary["node_types"].items()]
    lines += ["", "## Most connected entities (numbered as in graph.png)", "",
              "| # | name | type | degree | mentions |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {n['rank']} | {table_cell(n['name'])} | {table_cell(n['type'] or ' ')} | "
              f"{n['degree']} | {n['mentions']} |" for n in summary["top_nodes"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_graph(graph: KnowledgeGraph, path: Path, top: int = PLOT_TOP) -> None:
    """The `top` most connected entities and the relations between them, numbered as in
    summary.md, coloured by type. Text is drawn with DejaVu Sans and a Chinese font where one
    is installed (label_fonts); a name neither can draw is shown by its number alone (a note
    under the plot says so), so the plot never has empty boxes and matplotlib never warns."""
    plt = pyplot()
    family, drawable = label_fonts()
    keys = graph.top_nodes(top)
    labels = {key: f"{rank} {graph.nodes[key].name}" if drawable(graph.nodes[key].name)
              else str(rank) for rank, key in enumerate(keys, 1)}  # fmt: skip
    relations: dict[tuple[str, str], list[str]] = {}
    for head, relation, tail in graph.edges:
        if head in labels and tail in labels:
            relations.setdefault((head, tail), []).append(relation if drawable(relation) else "?")
    shown = nx.DiGraph()
    shown.add_nodes_from(keys)
    shown.add_edges_from(relations)
    figure, axis = plt.subplots(figsize=(9, 7))
    axis.axis("off")
    if keys:
        _draw(shown, labels, relations, axis, family, graph, drawable)
    axis.set_title(f"the {len(keys)} most connected of {len(graph.nodes)} entities, "
                   f"{len(graph.edges)} edges", family=family)  # fmt: skip
    if any(label == str(rank) for rank, label in enumerate(labels.values(), 1)):
        figure.text(0.01, 0.01, "numbers alone: names no installed font can draw (install a CJK "
                    "font such as fonts-noto-cjk); summary.md lists them", fontsize=7,
                    color="dimgrey", family=family)  # fmt: skip
    save_figure(figure, path)
    plt.close(figure)


def _draw(shown: Any, labels: dict, relations: dict, axis: Any, family: list[str],
          graph: KnowledgeGraph, drawable: Any) -> None:  # fmt: skip
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    layout = nx.spring_layout(shown, seed=0, k=1.5 / max(1, len(shown)) ** 0.5)
    kinds = list(dict.fromkeys(graph.nodes[k].type for k in shown))
    colour = {kind: colormaps["tab10"](i % 10) for i, kind in enumerate(kinds)}
    nx.draw_networkx_nodes(shown, layout, ax=axis, node_size=420, alpha=0.85,
                           node_color=[colour[graph.nodes[k].type] for k in shown])  # fmt: skip
    nx.draw_networkx_edges(shown, layout, ax=axis, arrows=True, arrowsize=12, node_size=420,
                           edge_color="grey", connectionstyle="arc3,rad=0.08")  # fmt: skip
    nx.draw_networkx_labels(shown, layout, labels, ax=axis, font_size=8, font_family=family)
    edge_labels = {pair: ", ".join(names) for pair, names in relations.items()}
    nx.draw_networkx_edge_labels(shown, layout, edge_labels, ax=axis, font_size=7,
                                 font_family=family, font_color="dimgrey",
                                 connectionstyle="arc3,rad=0.08")  # fmt: skip
    handles = [Patch(color=colour[kind], label=kind if drawable(kind) else f"type {i}")
               for i, kind in enumerate(kinds, 1) if kind]  # fmt: skip
    if handles:
        axis.legend(handles=handles, loc="upper right", frameon=False,
                    prop={"family": family, "size": 7})  # fmt: skip


@functools.cache
def label_fonts() -> tuple[list[str], Any]:
    """(font families for labels, a test of whether they draw a text): DejaVu Sans, and the
    Chinese font of bridgetune.lifecycle.reports.cjk_font where one is installed; a text is
    drawable when every character has a glyph in one of them."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    family = ["DejaVu Sans", *filter(None, [cjk_font()])]
    covered: set[int] = set()
    for name in family:
        properties = font_manager.FontProperties(family=name)
        covered |= set(FT2Font(font_manager.findfont(properties)).get_charmap())

    def drawable(text: str) -> bool:
        return all(ord(c) in covered or c.isspace() for c in text)

    return family, drawable
