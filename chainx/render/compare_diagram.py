"""Draw `chainx compare`'s diagram: each layer either chain keeps, its filters shared, only in
A, only in B."""

from __future__ import annotations

import graphviz

from chainx.chain.compare import Comparison, LayerOverlap
from chainx.render.diagram import render_svg
from chainx.render.html import escape as _e

SHARED, ONLY_A, ONLY_B = "#5ec962", "#3b528b", "#f28e2b"


def render_comparison_diagram(
    comparison: Comparison, label_a: str, label_b: str
) -> tuple[str, bytes]:
    """The diagram's DOT source and its SVG; a missing `dot` is a DiagramError (exit 2)."""
    dot = comparison_diagram(comparison, label_a, label_b)
    return dot.source, render_svg(dot)


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
