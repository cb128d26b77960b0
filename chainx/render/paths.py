"""Inference paths: the strongest chains of kept filters across consecutive retained layers.

The weight of a link a → b, from filter a of one layer to filter b of a layer it feeds, is
how much b's mean response on the region changes when a alone is switched off: the chain
runs once per kept filter, in onnxruntime, with that filter's multiplier at zero. A path's
strength is the product of its links' shares (each link's weight divided by the total
weight that b receives), so a path is strong when each filter on it is a main input of the
next. The strongest paths are found by a beam search through the layer graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.normalise import float32_channels_first
from chainx.onnx.runtime import session, with_outputs
from chainx.onnx.score_points import SCORE_PREFIX

BEAM = 64


@dataclass(frozen=True)
class Path:
    """Filters (layer node name, original filter index) from input side to output side."""

    filters: tuple[tuple[str, int], ...]
    strength: float

    def describe(self, names: dict[str, str]) -> str:
        return " → ".join(f"{names.get(layer, layer)} {index}" for layer, index in self.filters)


def _probe(chain: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str], dict[str, np.ndarray]]:
    """The chain with its score constants as inputs and each scored tensor as an output."""
    scores = {
        node.name[len(SCORE_PREFIX) :]: (node.input[1], node.output[0])
        for node in chain.graph.node
        if node.name.startswith(SCORE_PREFIX)
    }
    constants = {init.name for init in chain.graph.initializer}
    outputs = {
        layer: scored for layer, (multiplier, scored) in scores.items() if multiplier in constants
    }
    probe = with_outputs(chain, outputs.values())
    initializers = {init.name: init for init in probe.graph.initializer}
    values: dict[str, np.ndarray] = {}
    for layer in outputs:
        multiplier = scores[layer][0]
        values[layer] = numpy_helper.to_array(initializers[multiplier]).copy()
        probe.graph.initializer.remove(initializers[multiplier])
        probe.graph.input.append(
            helper.make_tensor_value_info(multiplier, onnx.TensorProto.FLOAT, values[layer].shape)
        )
    return probe, outputs, values


def link_weights(
    chain: onnx.ModelProto,
    images: np.ndarray,
    kept: dict[str, np.ndarray],
    edges: list[tuple[str, str]],
) -> dict[tuple[str, str], np.ndarray]:
    """(layer a, layer b) → (kept in a, kept in b): |change of b's mean response| with a off.

    `kept` maps each layer to the original indices of its kept filters, in chain order.
    """
    # A float16 or channels-last chain is measured on its float32, NCHW twin, whose scores
    # can be fed as float32.
    probe, outputs, values = _probe(float32_channels_first(chain))
    # Only layers whose score vector lines up with their kept filters take part.
    values = {k: v for k, v in values.items() if k in kept and v.size == len(kept[k])}
    sess = session(probe)
    image_input = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) else len(images)  # a fixed batch runs in pieces
    multiplier_inputs = {
        layer: next(n.input[1] for n in chain.graph.node if n.name == SCORE_PREFIX + layer)
        for layer in values
    }
    names = [o.name for o in sess.get_outputs()]

    def responses(overrides: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {image_input: images}
        for layer, value in values.items():
            feed[multiplier_inputs[layer]] = overrides.get(layer, value)
        runs = [
            sess.run(names, {**feed, image_input: images[i : i + step]})
            for i in range(0, len(images), step)
        ]
        results = {name: np.concatenate([r[k] for r in runs]) for k, name in enumerate(names)}
        mean = {}
        for layer, name in outputs.items():
            value = results[name]
            axes = tuple(range(2, value.ndim))
            mean[layer] = value.mean(axis=axes) if axes else value  # (N, kept)
        return mean

    base = responses({})
    links: dict[tuple[str, str], np.ndarray] = {}
    pairs = [(a, b) for a, b in edges if a in values and b in values]
    for source in sorted({a for a, _ in pairs}):
        targets = [b for a, b in pairs if a == source]
        weights = {b: np.zeros((len(kept[source]), len(kept[b]))) for b in targets}
        for position in range(len(kept[source])):
            off = values[source].copy()
            off.reshape(-1)[position] = 0.0
            changed = responses({source: off})
            for b in targets:
                weights[b][position] = np.abs(changed[b] - base[b]).mean(axis=0)
        for b in targets:
            links[(source, b)] = weights[b]
    return links


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
