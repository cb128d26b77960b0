"""Inference paths: the strongest chains of kept filters across consecutive retained layers.

The weight of a link a → b, from filter a of one layer to filter b of a layer it feeds, is
how much b's mean response on the region changes when a alone is switched off (its
multiplier at zero). The chain runs once in onnxruntime; then, per kept filter, only the
part of it between a's layer and the layers it feeds runs again; of a layer that keeps more
than MAX_SOURCES filters, only its strongest are switched off. A path's
strength is the product of its links' shares (each link's weight divided by the total
weight that b receives), so a path is strong when each filter on it is a main input of the
next. The strongest paths are found by a beam search through the layer graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.graph import fixed_batch, live_nodes
from chainx.onnx.normalise import float32_channels_first
from chainx.onnx.runtime import run_tensors, session
from chainx.onnx.score_points import score_muls
from chainx.render.layers import unit_name

BEAM = 64
# Links run the part between two layers once per source filter: a layer with more kept
# filters has links from its strongest (largest multipliers) only, so the cost stays
# bounded when a chain keeps thousands.
MAX_SOURCES = 64


@dataclass(frozen=True)
class Path:
    """Filters (layer node name, original filter index) from input side to output side."""

    filters: tuple[tuple[str, int], ...]
    strength: float

    def describe(self, names: dict[str, str]) -> str:
        units = (unit_name(names.get(layer, layer), index) for layer, index in self.filters)
        return " → ".join(units)


@dataclass
class _Between:
    """The part of the chain between a source layer's scored tensor and its targets': the
    nodes that read the source, directly or not, and that a target depends on. Everything
    else they read is unchanged by switching a source filter off, so it is fed as computed."""

    model: onnx.ModelProto
    source: str
    inputs: list[str]  # the other tensors it reads, computed by the whole chain
    outputs: list[str]


def _between(chain: onnx.ModelProto, source: str, targets: list[str]) -> _Between:
    downstream, nodes = {source}, []
    for node in chain.graph.node:
        if any(name in downstream for name in node.input):
            downstream.update(name for name in node.output if name)
            nodes.append(node)
    targets = [name for name in targets if name in downstream]  # others: no link
    nodes = live_nodes(nodes, targets)
    produced = {name for node in nodes for name in node.output}
    constants = {init.name: init for init in chain.graph.initializer}
    read = list(dict.fromkeys(name for node in nodes for name in node.input if name))
    inputs = [name for name in read if name not in produced and name not in constants]
    external = [name for name in inputs if name != source]
    graph = helper.make_graph(
        nodes,
        "between",
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs],
        [helper.make_empty_tensor_value_info(name) for name in targets],
        [constants[name] for name in read if name in constants],
    )
    model = helper.make_model(graph, opset_imports=chain.opset_import, ir_version=chain.ir_version)
    return _Between(model, source, external, targets)


def link_weights(
    chain: onnx.ModelProto,
    images: np.ndarray,
    kept: dict[str, np.ndarray],
    edges: list[tuple[str, str]],
    axes: dict[str, int] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """(layer a, layer b) → (kept in a, kept in b): |change of b's mean response| with a off.

    `kept` maps each layer to the original indices of its kept filters, in chain order;
    `axes` gives a layer's unit axis where it is not 1 (a transformer's MLP neurons).
    Switching filter a off zeroes its channel of a's scored tensor, as a zero multiplier
    would; only the nodes between a and its targets run again, from the chain's own values.
    """
    # A float16 or channels-last chain is measured on its float32, NCHW twin.
    chain = float32_channels_first(chain)
    initializers = {init.name: init for init in chain.graph.initializer}
    muls = {layer: mul for layer, mul in score_muls(chain).items() if mul.input[1] in initializers}
    scored = {layer: mul.output[0] for layer, mul in muls.items()}
    values = {
        layer: numpy_helper.to_array(initializers[mul.input[1]]).reshape(-1)
        for layer, mul in muls.items()
    }
    # Only layers whose score vector lines up with their kept filters take part.
    layers = {k for k in scored if k in kept and values[k].size == len(kept[k])}
    pairs = [(a, b) for a, b in edges if a in layers and b in layers]
    sources = sorted({a for a, _ in pairs})
    targets = {a: [b for s, b in pairs if s == a] for a in sources}
    between = {a: _between(chain, scored[a], [scored[b] for b in targets[a]]) for a in sources}
    between = {a: part for a, part in between.items() if part.outputs}
    sessions = {a: session(part.model, cpu=True) for a, part in between.items()}
    layer_of = {name: layer for layer, name in scored.items()}
    axis_of = {name: (axes or {}).get(layer, 1) for layer, name in scored.items()}
    image = chain.graph.input[0].name
    inner = [name for part in between.values() for name in part.inputs if name != image]
    wanted = [scored[k] for k in layers] + inner
    totals = {(a, b): np.zeros((len(kept[a]), len(kept[b]))) for a, b in pairs}
    sources_of = {a: _strongest(values[a]) for a in between}
    # A chain that fixes its batch runs in pieces of it; each piece is its own whole run.
    step = fixed_batch(chain) or 32
    for start in range(0, len(images), step):
        piece = images[start : start + step]
        values = run_tensors(chain, piece, wanted, batch_size=len(piece), cpu=True)
        values[image] = piece
        for a, part in between.items():
            fed = {name: values[name] for name in part.inputs}
            reference = {name: _mean_response(values[name], axis_of[name]) for name in part.outputs}
            for position in sources_of[a]:
                off = values[part.source].copy()
                np.moveaxis(off, axis_of[part.source], 1)[:, position] = 0.0
                changed = sessions[a].run(part.outputs, {**fed, part.source: off})
                for name, value in zip(part.outputs, changed, strict=True):
                    response = _mean_response(value, axis_of[name])
                    change = np.abs(response - reference[name]).sum(axis=0)
                    totals[(a, layer_of[name])][position] += change
    return {pair: total / len(images) for pair, total in totals.items()}


def _strongest(multipliers: np.ndarray) -> np.ndarray:
    """Positions of the at most MAX_SOURCES largest multipliers, in chain order."""
    if len(multipliers) <= MAX_SOURCES:
        return np.arange(len(multipliers))
    return np.sort(np.argsort(-np.abs(multipliers), kind="stable")[:MAX_SOURCES])


def _mean_response(value: np.ndarray, axis: int = 1) -> np.ndarray:
    """(N, …) → (N, C): each unit's mean over its positions, its units on `axis`."""
    value = np.moveaxis(value, axis, 1)
    axes = tuple(range(2, value.ndim))
    return value.mean(axis=axes) if axes else value


def strongest_paths(
    links: dict[tuple[str, str], np.ndarray],
    kept: dict[str, np.ndarray],
    order: list[str],
    count: int = 10,
) -> list[Path]:
    """The `count` strongest paths through consecutive linked layers, strongest first."""
    shares = {
        pair: weight / np.maximum(weight.sum(axis=0, keepdims=True), 1e-12)
        for pair, weight in links.items()
    }
    position = {layer: i for i, layer in enumerate(order)}
    # Partial paths ending at each (layer, filter position), best first, at most BEAM each.
    partial: dict[tuple[str, int], list[tuple[float, tuple[tuple[str, int], ...]]]] = {}
    finished: list[tuple[float, tuple[tuple[str, int], ...]]] = []
    sources = {a for a, _ in links}
    for layer in sorted(kept, key=lambda name: position.get(name, 0)):
        incoming = [(a, share) for (a, b), share in shares.items() if b == layer]
        for j in range(len(kept[layer])):
            candidates = []
            for a, share in incoming:
                for i in range(share.shape[0]):
                    for strength, filters in partial.get((a, i), []):
                        candidates.append((strength * share[i, j], filters))
            if not incoming:
                candidates = [(1.0, ())]
            candidates.sort(key=lambda item: -item[0])
            here = (layer, int(kept[layer][j]))
            extended = [(s, (*filters, here)) for s, filters in candidates[:BEAM] if s > 0]
            partial[(layer, j)] = extended
            if layer not in sources:
                finished.extend(item for item in extended if len(item[1]) > 1)
    finished.sort(key=lambda item: -item[0])
    return [Path(filters=filters, strength=float(s)) for s, filters in finished[:count]]
