"""Draw the extracted chain as a Graphviz diagram (DOT source and SVG)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import graphviz

from chainx.chain.result import LayerGraph, LayerResult
from chainx.errors import ChainxError
from chainx.render.html import escape as _e
from chainx.render.html import viridis_hex

INPUT = "input"
OUTPUT = "output"
MAX_CELLS = 16  # filter cells drawn per layer; the rest become "+N more"
CELLS_PER_ROW = 8  # keeps layer nodes narrow enough to stack neatly

_LEGEND_STEPS = 10

_FONT = "Helvetica"
_INK = "#333333"
_GREY = "#9e9e9e"
_GREY_TEXT = "#7a7a7a"  # darker than the outline so removed-run labels stay legible
_PALE = "#f4f4f4"


PATHS_SHOWN = 3
_PATH = "#d62728"


class DiagramError(ChainxError):
    """The diagram could not be rendered (e.g. Graphviz's `dot` is not installed)."""


@dataclass
class _Box:
    """One drawn node: a retained layer, or a run of consecutive removed layers."""

    id: str
    layers: list[LayerResult]

    @property
    def retained(self) -> bool:
        return self.layers[0].kept > 0


def chain_diagram(graph: LayerGraph, title: str) -> graphviz.Digraph:
    """Build the diagram: retained layers with colour-coded kept filters, removed runs greyed."""
    _check(graph)
    boxes = _boxes(graph.layers)
    where = {layer.node: box.id for box in boxes for layer in box.layers}
    where.update({INPUT: INPUT, OUTPUT: OUTPUT})
    scores = [s for layer in graph.layers for s in layer.kept_scores]
    top = max(scores, default=0.0)

    dot = graphviz.Digraph(name="chain")
    dot.attr(
        "graph",
        label=_title_label(graph, title),
        labelloc="t",
        fontname=_FONT,
        rankdir="TB",
        nodesep="0.3",
        ranksep="0.35",
        bgcolor="white",
    )
    dot.attr("node", fontname=_FONT, fontcolor=_INK, color=_INK)
    dot.attr("edge", color="#555555", arrowsize="0.6")

    dot.node(INPUT, INPUT, shape="ellipse", fontsize="11")
    for box in boxes:
        if box.retained:
            layer = box.layers[0]
            dot.node(box.id, _layer_label(layer, top), shape="plain", tooltip=_tip(layer.node))
        else:
            dot.node(
                box.id,
                _removed_label(box.layers),
                shape="box",
                style="dashed,rounded",
                color=_GREY,
                fontcolor=_GREY_TEXT,
                margin="0.08,0.02",
                tooltip=_tip("removed: " + ", ".join(layer.node for layer in box.layers)),
            )
    dot.node(OUTPUT, OUTPUT, shape="ellipse", fontsize="11")

    retained = {box.id for box in boxes if box.retained} | {INPUT, OUTPUT}
    order = [INPUT, *(box.id for box in boxes), OUTPUT]
    spine = set(pairwise(order))
    # Edges inside a collapsed run vanish; several edges can map onto the same pair.
    pairs = {(where[src], where[dst]) for src, dst in graph.edges} - {(b, b) for b in order}
    for pair in _order_pairs(order, _drop_long_implied(pairs, order)):
        # Heavier edges between neighbours in graph order keep the main path straight, so
        # the skips are what bends.
        attrs = {"weight": "4"} if pair in spine else {}
        if not set(pair) <= retained:
            attrs |= {"style": "dashed", "color": _GREY}
        dot.edge(*pair, **attrs)

    if scores:
        # Sits beside the input so it reads as a key before the chain itself.
        with dot.subgraph() as side:
            side.attr(rank="same")
            side.node(INPUT)
            side.node("legend", _legend_label(min(scores), top), shape="plain")
    # The strongest path, drawn over the layout (constraint=false keeps the layout).
    hops = [where[layer] for layer in graph.top_path if layer in where]
    for src, dst in pairwise(hops):
        if src != dst:
            dot.edge(src, dst, color=_PATH, penwidth="2.4", constraint="false", arrowsize="0.8")
    if graph.paths:
        with dot.subgraph() as side:
            side.attr(rank="same")
            side.node(OUTPUT)
            side.node("paths", _paths_label(graph.paths), shape="plain")
    return dot


def _paths_label(paths: list[str]) -> str:
    rows = "".join(
        f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{i}. {_e(path)}</FONT></TD></TR>'
        for i, path in enumerate(paths[:PATHS_SHOWN], start=1)
    )
    return (
        '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1">'
        '<TR><TD ALIGN="LEFT"><B>strongest inference paths</B> '
        f'<FONT COLOR="{_PATH}">(1. in red)</FONT></TD></TR>'
        f"{rows}</TABLE>>"
    )


def _order_pairs(order: list[str], pairs: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs in a stable order: by source, then target, in graph order."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(pairs, key=lambda pair: (rank[pair[0]], rank[pair[1]]))


def _drop_long_implied(
    pairs: set[tuple[str, str]], order: list[str], span: int = 3
) -> set[tuple[str, str]]:
    """Drop an edge a→c that jumps over more than `span` boxes when c is reachable another way.

    A residual stream joins every block's output to every later reader; drawn in full, a
    ResNet becomes a hairball. Short skips (a block's own shortcut) stay visible, and so
    does reachability, the order of the chain.
    """
    rank = {name: i for i, name in enumerate(order)}
    successors: dict[str, set[str]] = {}
    for src, dst in pairs:
        successors.setdefault(src, set()).add(dst)

    def reachable_without(src: str, dst: str) -> bool:
        stack = [n for n in successors.get(src, ()) if n != dst]
        seen = set(stack)
        while stack:
            node = stack.pop()
            if node == dst:
                return True
            for nxt in successors.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    return {
        (src, dst)
        for src, dst in pairs
        if rank[dst] - rank[src] <= span or not reachable_without(src, dst)
    }


def render_chain_diagram(graph: LayerGraph, title: str) -> tuple[str, bytes]:
    """The diagram's DOT source and its SVG."""
    dot = chain_diagram(graph, title)
    return dot.source, render_svg(dot)


def render_svg(dot: graphviz.Digraph) -> bytes:
    """Graphviz's SVG of `dot`; a missing or failing `dot` is a DiagramError (exit 2)."""
    try:
        return dot.pipe(format="svg", engine="dot")
    except graphviz.ExecutableNotFound:
        raise DiagramError(
            "Graphviz's `dot` executable was not found; install graphviz: apt-get install graphviz"
        ) from None
    except graphviz.CalledProcessError as exc:
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        raise DiagramError(
            f"Graphviz's dot failed to render the diagram: {stderr.strip()}"
        ) from None


def _check(graph: LayerGraph) -> None:
    """Reject graphs whose edges name unknown layers, rather than drawing a wrong picture."""
    names = [layer.node for layer in graph.layers]
    if len(set(names)) != len(names) or {INPUT, OUTPUT} & set(names):
        raise ValueError("layer node names must be unique and not 'input'/'output'")
    known = set(names) | {INPUT, OUTPUT}
    unknown = sorted({n for edge in graph.edges for n in edge} - known)
    if unknown:
        raise ValueError(f"edges name unknown layers: {unknown}")


def _boxes(layers: list[LayerResult]) -> list[_Box]:
    """One box per retained layer; each run of consecutive removed layers shares one box.

    Runs are contiguous in graph (topological) order, so contracting them cannot create
    cycles, and the rerouted edges still show where residual skips go around them.
    """
    boxes: list[_Box] = []
    for index, layer in enumerate(layers):
        if layer.kept == 0 and boxes and not boxes[-1].retained:
            boxes[-1].layers.append(layer)
        else:
            prefix = "layer" if layer.kept > 0 else "removed"
            boxes.append(_Box(id=f"{prefix}{index}", layers=[layer]))
    return boxes


def _colour(t: float) -> str:
    return viridis_hex(t)


def _text_colour(fill: str) -> str:
    """Black or white, whichever contrasts more with the fill (WCAG relative luminance)."""
    channels = [int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "black" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "white"


def _scale(score: float, top: float) -> float:
    return min(max(score / top, 0.0), 1.0) if top > 0 else 0.0


def _tip(text: str) -> str:
    # Backslashes would otherwise be read as DOT escapes (\N, \l ...) and a name such as
    # "<x>" as an HTML label.
    return graphviz.escape(text)


def _title_label(graph: LayerGraph, title: str) -> str:
    layers_kept = sum(1 for layer in graph.layers if layer.kept > 0)
    filters_kept = sum(layer.kept for layer in graph.layers)
    filters_total = sum(layer.total for layer in graph.layers)
    share = f" ({100 * filters_kept / filters_total:.1f}%)" if filters_total else ""
    return (
        f'<<FONT POINT-SIZE="16"><B>{_e(title)}</B></FONT><BR/>'
        f'<FONT POINT-SIZE="11">layers kept {layers_kept}/{len(graph.layers)}'
        f"  ·  filters kept {filters_kept:,}/{filters_total:,}{share}</FONT>>"
    )


def _layer_label(layer: LayerResult, top: float) -> str:
    ranked = sorted(
        zip(layer.kept_indices, layer.kept_scores, strict=True), key=lambda f: (-f[1], f[0])
    )
    shown = ranked[:MAX_CELLS]
    width = min(len(shown), CELLS_PER_ROW)
    rows: list[str] = []
    for start in range(0, len(shown), CELLS_PER_ROW):
        cells: list[str] = []
        for index, score in shown[start : start + CELLS_PER_ROW]:
            fill = _colour(_scale(score, top))
            cells.append(
                f'<TD BGCOLOR="{fill}" WIDTH="24"><FONT POINT-SIZE="8" '
                f'COLOR="{_text_colour(fill)}">{index}</FONT></TD>'
            )
        rows.append("<TR>" + "".join(cells) + "</TR>")
    if len(ranked) > len(shown):
        rows.append(
            f'<TR><TD COLSPAN="{width}"><FONT POINT-SIZE="8" COLOR="#666666">'
            f"+{len(ranked) - len(shown)} more</FONT></TD></TR>"
        )
    grid = (
        f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="2">{"".join(rows)}</TABLE>'
    )
    # The cells sit in a padded inner table so their fills stay inside the rounded border.
    return (
        f'<<TABLE BORDER="1" STYLE="rounded" COLOR="{_INK}" BGCOLOR="white" CELLBORDER="0" '
        f'CELLSPACING="0" CELLPADDING="0"><TR><TD CELLPADDING="4"><B>{_e(layer.display)}</B>'
        f'  <FONT COLOR="#555555">{layer.kept}/{layer.total}</FONT></TD></TR>'
        f'<TR><TD CELLPADDING="3">{grid}</TD></TR></TABLE>>'
    )


def _removed_label(layers: list[LayerResult]) -> str:
    if len(layers) == 1:
        text = f"{_e(layers[0].display)} removed"
    else:
        span = f"{_e(layers[0].display)} … {_e(layers[-1].display)}"
        text = f"{len(layers)} layers removed<BR/>{span}"
    return f'<<FONT POINT-SIZE="9">{text}</FONT>>'


def _legend_label(low: float, top: float) -> str:
    cells = "".join(
        f'<TD BGCOLOR="{_colour(i / (_LEGEND_STEPS - 1))}" WIDTH="10" HEIGHT="10"></TD>'
        for i in range(_LEGEND_STEPS)
    )
    half = _LEGEND_STEPS // 2
    return (
        f'<<TABLE BORDER="1" COLOR="#cccccc" BGCOLOR="{_PALE}" CELLBORDER="0" CELLSPACING="0" '
        f'CELLPADDING="2"><TR><TD COLSPAN="{_LEGEND_STEPS}"><FONT POINT-SIZE="9">filter score'
        f"</FONT></TD></TR><TR>{cells}</TR>"
        f'<TR><TD COLSPAN="{half}" ALIGN="LEFT"><FONT POINT-SIZE="8">0</FONT></TD>'
        f'<TD COLSPAN="{_LEGEND_STEPS - half}" ALIGN="RIGHT"><FONT POINT-SIZE="8">{top:.3g}'
        f'</FONT></TD></TR><TR><TD COLSPAN="{_LEGEND_STEPS}"><FONT POINT-SIZE="8" '
        f'COLOR="#666666">kept scores {low:.3g} – {top:.3g}</FONT></TD></TR></TABLE>>'
    )
