"""`chainx compare A B`: which layers and filters two chains of one model share.

Two regions of one model (or a correctly and a wrongly classified set) give two chains;
the overlap of their kept filters says how much of the inference they share.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import graphviz

from chainx.errors import ChainxError

SHARED, ONLY_A, ONLY_B = "#5ec962", "#3b528b", "#f28e2b"


@dataclass
class LayerOverlap:
    node: str
    display: str
    total: int
    kept_a: int
    kept_b: int
    shared: int

    @property
    def jaccard(self) -> float:
        union = self.kept_a + self.kept_b - self.shared
        return self.shared / union if union else 0.0


@dataclass
class Comparison:
    a: str
    b: str
    layers: list[LayerOverlap]
    edges: list[tuple[str, str]]

    @property
    def filters_shared(self) -> int:
        return sum(layer.shared for layer in self.layers)

    @property
    def filter_jaccard(self) -> float:
        union = sum(layer.kept_a + layer.kept_b - layer.shared for layer in self.layers)
        return self.filters_shared / union if union else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "filters": {
                "kept_a": sum(layer.kept_a for layer in self.layers),
                "kept_b": sum(layer.kept_b for layer in self.layers),
                "shared": self.filters_shared,
                "jaccard": self.filter_jaccard,
            },
            "layers": [{**asdict(layer), "jaccard": layer.jaccard} for layer in self.layers],
        }


def read_chain(path: Path) -> dict[str, Any]:
    """chain.json of an output folder (or the file itself)."""
    file = path / "chain.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ChainxError(
            f"{path}: not a chainx output ({exc}). Give a folder written by chainx extract."
        ) from None
    if not isinstance(data, dict) or data.get("generator") != "chainx":
        raise ChainxError(f"{path}: not a chainx output. Give a folder written by chainx extract.")
    return data


def compare(a: Path, b: Path) -> Comparison:
    first, second = read_chain(a), read_chain(b)
    if first["source"]["sha256"] != second["source"]["sha256"]:
        raise ChainxError(
            f"{a} and {b} come from different models (sha256 {first['source']['sha256'][:12]}… "
            f"and {second['source']['sha256'][:12]}…); only chains of one model compare."
        )
    kept_b = {layer["node"]: layer for layer in second["layers"]}
    layers = []
    for layer in first["layers"]:
        other = kept_b[layer["node"]]
        mine = {f["index"] for f in layer["filters"]}
        theirs = {f["index"] for f in other["filters"]}
        layers.append(
            LayerOverlap(
                node=layer["node"],
                display=layer["display"],
                total=layer["total"],
                kept_a=len(mine),
                kept_b=len(theirs),
                shared=len(mine & theirs),
            )
        )
    edges = [tuple(edge) for edge in first.get("edges", [])]
    return Comparison(a=str(a), b=str(b), layers=layers, edges=edges)


def comparison_diagram(comparison: Comparison, label_a: str, label_b: str) -> graphviz.Digraph:
    """Every layer kept by either chain: its filters shared, only in A, only in B."""
    dot = graphviz.Digraph(name="compare")
    dot.attr("graph", rankdir="TB", fontname="Helvetica", labelloc="t", nodesep="0.3")
    dot.attr(
        "graph",
        label=f"<<B>{_e(label_a)}</B> vs <B>{_e(label_b)}</B><BR/>"
        f'<FONT POINT-SIZE="11">filters shared {comparison.filters_shared:,} · '
        f"overlap (Jaccard) {comparison.filter_jaccard:.2f}</FONT>>",
    )
    dot.attr("node", fontname="Helvetica", shape="plain")
    dot.attr("edge", color="#555555", arrowsize="0.6")
    ids = {layer.node: f"layer{i}" for i, layer in enumerate(comparison.layers)}
    kept = {layer.node for layer in comparison.layers if layer.kept_a or layer.kept_b}
    for layer in comparison.layers:
        if layer.node in kept:
            dot.node(ids[layer.node], _label(layer, label_a, label_b), tooltip=layer.node)
    for src, dst in comparison.edges:
        if src in kept and dst in kept:
            dot.edge(ids[src], ids[dst])
    return dot


def _label(layer: LayerOverlap, label_a: str, label_b: str) -> str:
    cells = [
        (SHARED, f"shared {layer.shared}", layer.shared),
        (ONLY_A, f"{label_a} only {layer.kept_a - layer.shared}", layer.kept_a - layer.shared),
        (ONLY_B, f"{label_b} only {layer.kept_b - layer.shared}", layer.kept_b - layer.shared),
    ]
    row = "".join(
        f'<TD BGCOLOR="{colour}"><FONT COLOR="white" POINT-SIZE="9">{_e(text)}</FONT></TD>'
        for colour, text, count in cells
        if count
    )
    return (
        '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" STYLE="ROUNDED">'
        f'<TR><TD COLSPAN="3"><B>{_e(layer.display)}</B> '
        f'<FONT COLOR="#555555">/{layer.total}</FONT></TD></TR><TR>{row}</TR></TABLE>>'
    )


def _e(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
