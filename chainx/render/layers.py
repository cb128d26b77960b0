"""Layer-level views of the graph: short display names and the flow between scored layers."""

from __future__ import annotations

import re

from chainx.onnx.graph import GraphIndex
from chainx.onnx.score_points import ScorePoint

_RESNET = re.compile(r"layer(\d+)\.(\d+)\.(?:(conv)(\d+)|(downsample|shortcut))")


def module_path(node_name: str) -> str:
    """The dotted module path inside a torch-exported node name.

    "/layer1/layer1.0/conv1/Conv" becomes "layer1.0.conv1"; other names pass unchanged.
    """
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return node_name
    path = ""
    for part in parts[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


def display_name(node_name: str) -> str:
    """ "L4B1C2" for torchvision's layer4.1.conv2 and "…SC" for a shortcut; else the path."""
    path = module_path(node_name)
    match = _RESNET.search(path)
    if match:
        stage, block, _, conv, _ = match.groups()
        return f"L{stage}B{block}" + (f"C{conv}" if conv else "SC")
    return ".".join(part.lstrip("_") for part in path.split("."))


def display_names(node_names: list[str]) -> dict[str, str]:
    """Short names, unique: a repeated one takes the next free `#n`."""
    bases = {node: display_name(node) for node in node_names}
    own = set(bases.values())  # a numbered repeat must not take a name some node has itself
    names: dict[str, str] = {}
    used: set[str] = set()
    for node, base in bases.items():
        name, number = base, 1
        while name in used or (name != base and name in own):
            number += 1
            name = f"{base}#{number}"
        names[node] = name
        used.add(name)
    return names


def point_display_names(points: list[ScorePoint]) -> dict[str, str]:
    """`display_names`, except that a transformer's units are named by block, in the paper's
    style: "B3.H" holds the heads of block 3 ("B3.H5" is head 5), "B3.M" the MLP neurons
    ("B3.M127"). Blocks count from 0 in graph order: the n-th attention (or MLP) is block n.
    """
    names = display_names([p.layer for p in points])
    blocks = {"head": 0, "token-neuron": 0}
    for point in points:
        kind = "token-neuron" if point.kind == "neuron" and point.rank == 3 else point.kind
        if kind in blocks:
            names[point.layer] = f"B{blocks[kind]}.{'H' if kind == 'head' else 'M'}"
            blocks[kind] += 1
    return names


_BLOCK_UNITS = re.compile(r"B\d+\.[HM]")


def unit_name(layer_display: str, index: int) -> str:
    """ "L4B1C2 48" for filter 48 of L4B1C2; "B3.H5" for head 5 of block 3."""
    if _BLOCK_UNITS.fullmatch(layer_display):
        return f"{layer_display}{index}"
    return f"{layer_display} {index}"


def layer_edges(g: GraphIndex, layers: list[str]) -> list[tuple[str, str]]:
    """Edges between scored layers (and "input"/"output"), collapsing every other op."""
    layer_set = set(layers)
    # For every tensor: the nearest scored layers (or "input") upstream of it.
    sources: dict[str, frozenset[str]] = {g.input_name: frozenset({"input"})}
    edges: list[tuple[str, str]] = []
    for node in g.nodes:
        upstream = frozenset().union(*(sources.get(name, frozenset()) for name in node.input))
        if node.name in layer_set:
            edges += [(src, node.name) for src in sorted(sources.get(node.input[0], ()))]
            upstream = frozenset({node.name})
        for name in node.output:
            sources[name] = upstream
    for output in g.output_names:
        edges += [(src, "output") for src in sorted(sources.get(output, ()))]
    return list(dict.fromkeys(edges))
