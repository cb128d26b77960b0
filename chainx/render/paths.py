"""Inference paths: the strongest chains of kept filters across consecutive retained layers.

The weight of a link a → b, from filter a of one layer to filter b of a layer it feeds, is
how much b's mean response on the region changes when a alone is switched off (its
multiplier at zero). The chain runs once in onnxruntime; then, per kept filter, only the
part of it between a's layer and the layers it feeds runs again (`ablation.py`: a Conv
reached through channel-keeping ops runs only the ablated channel's column, and a part whose
targets are all reached so runs once for all its filters); of a layer that keeps more than
MAX_SOURCES filters, only its strongest are switched off. A path's
strength is the product of its links' shares (each link's weight divided by the total
weight that b receives), so a path is strong when each filter on it is a main input of the
next. The strongest paths are found by a beam search through the layer graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import fixed_batch
from chainx.onnx.normalise import float32_channels_first
from chainx.onnx.runtime import pad_batch, run_tensors, session
from chainx.onnx.score_points import score_muls
from chainx.render.ablation import ablation_part
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
    multipliers = {
        layer: numpy_helper.to_array(initializers[mul.input[1]]).reshape(-1)
        for layer, mul in muls.items()
    }
    # Only layers whose score vector lines up with their kept filters take part.
    layers = {k for k in scored if k in kept and multipliers[k].size == len(kept[k])}

    def axes_of(layer: str) -> int:
        return (axes or {}).get(layer, 1)

    pairs = [(a, b) for a, b in edges if a in layers and b in layers]
    sources = sorted({a for a, _ in pairs})
    targets = {a: [b for s, b in pairs if s == a] for a in sources}
    parts = {
        a: ablation_part(chain, scored[a], [scored[b] for b in targets[a]], axes_of(a))
        for a in sources
    }
    parts = {a: part for a, part in parts.items() if part.outputs}
    # Links are measurements, not checks: onnxruntime's fusions may run (1e-6 relative).
    sessions = {a: session(part.model, optimised=True, cpu=True) for a, part in parts.items()}
    layer_of = {name: layer for layer, name in scored.items()}
    axis_of = {name: axes_of(layer) for layer, name in scored.items()}
    image = chain.graph.input[0].name
    inner = [name for part in parts.values() for name in part.reads() if name != image]
    wanted = [scored[k] for k in layers] + inner
    totals = {(a, b): np.zeros((len(kept[a]), len(kept[b]))) for a, b in pairs}
    sources_of = {a: _strongest(multipliers[a]) for a in parts}
    # A chain that fixes its batch runs in pieces of it; each piece is its own whole run.
    fixed = fixed_batch(chain)
    step = fixed or 32
    for start in range(0, len(images), step):
        piece = images[start : start + step]
        count = len(piece)
        piece = pad_batch(piece, fixed) if fixed else piece
        values = run_tensors(chain, piece, wanted, batch_size=len(piece), cpu=True)
        values[image] = piece
        for a, part in parts.items():
            # The reference from the same session: an unreached filter's response is then
            # the same bits with and without the ablation, its link exactly 0.
            fed, unchanged = part.unablated(sessions[a], values)
            # Padding's images (a fixed batch) are run, not counted.
            reference = {
                name: _mean_response(value, axis_of[name])[:count]
                for name, value in zip(part.outputs, unchanged, strict=True)
            }
            # A confined part's filters are all switched off in one run (`AblationPart`).
            runs = [sources_of[a]] if part.confined else [[p] for p in sources_of[a]]
            for positions in runs:
                off = values[part.source].copy()
                np.moveaxis(off, axis_of[part.source], 1)[:, positions] = 0.0
                feed = {**fed, **part.ablating(positions[0]), part.source: off}
                changed = sessions[a].run(part.outputs, feed)
                for name, value in zip(part.outputs, changed, strict=True):
                    response = _mean_response(value, axis_of[name])[:count]
                    change = np.abs(response - reference[name]).sum(axis=0)
                    total = totals[(a, layer_of[name])]
                    if part.confined:
                        total[positions, positions] += change[positions]
                    else:
                        total[positions[0]] += change
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


@dataclass
class _Beam:
    """A layer's partial paths, BEAM per kept filter, strongest first; strength 0 marks an
    empty slot. Slot (j, k) extends slot (source_slot[j, k]) of filter source_filter[j, k]
    of layer sources[source_layer[j, k]]; a layer without incoming links starts paths."""

    strength: np.ndarray  # (filters, BEAM)
    sources: list[str]
    source_layer: np.ndarray | None  # (filters, BEAM) indices into sources
    source_filter: np.ndarray | None
    source_slot: np.ndarray | None


# Candidates scored at once when extending a layer: bounds the memory of wide layers.
CANDIDATE_BLOCK = 1 << 22


def strongest_paths(
    links: dict[tuple[str, str], np.ndarray],
    kept: dict[str, np.ndarray],
    order: list[str],
    count: int = 10,
) -> list[Path]:
    """The `count` strongest paths through consecutive linked layers, strongest first.

    A beam search: each kept filter keeps its BEAM strongest partial paths, each the
    extension of a partial path of a filter that links to it; ties go to the earlier
    candidate (incoming layer, then filter, then rank). Vectorised over the filters, so a
    chain that keeps thousands costs seconds.
    """
    shares = {
        pair: weight / np.maximum(weight.sum(axis=0, keepdims=True), 1e-12)
        for pair, weight in links.items()
    }
    position = {layer: i for i, layer in enumerate(order)}
    sources = {a for a, _ in links}
    beams: dict[str, _Beam] = {}
    finished: list[tuple[np.ndarray, str, np.ndarray, np.ndarray]] = []
    for layer in sorted(kept, key=lambda name: position.get(name, 0)):
        width = len(kept[layer])
        incoming = [(a, share) for (a, b), share in shares.items() if b == layer]
        if not incoming:
            strength = np.zeros((width, BEAM))
            strength[:, 0] = 1.0
            beams[layer] = _Beam(strength, [], None, None, None)
            continue
        beam = _extend(beams, incoming, width)
        beams[layer] = beam
        if layer not in sources:
            j, k = np.nonzero(beam.strength > 0)
            finished.append((beam.strength[j, k], layer, j, k))
    if not finished:
        return []
    strength = np.concatenate([item[0] for item in finished])
    owner = np.concatenate([np.full(len(item[0]), n) for n, item in enumerate(finished)])
    j = np.concatenate([item[2] for item in finished])
    k = np.concatenate([item[3] for item in finished])
    best = np.argsort(-strength, kind="stable")[:count]
    return [
        Path(_trace(beams, kept, finished[owner[n]][1], int(j[n]), int(k[n])), float(strength[n]))
        for n in best
    ]


def _extend(beams: dict[str, _Beam], incoming: list[tuple[str, np.ndarray]], width: int) -> _Beam:
    """The BEAM strongest extensions per filter of a layer from its incoming layers' beams.

    Only candidates that can be positive are scored: source filters with a path and a link
    (links come from a wide layer's strongest filters only), and beam ranks some source
    fills. Leaving out zeros changes neither the order nor the ties of the others.
    """
    names, blocks = [], []
    for a, share in incoming:
        if a not in beams:  # a source after this layer has no paths yet
            continue
        paths = beams[a].strength
        active = np.flatnonzero((paths[:, 0] > 0) & (share > 0).any(axis=1))
        ranks = int((paths[active] > 0).sum(axis=1).max(initial=0))
        if ranks:
            names.append(a)
            blocks.append((active, ranks, paths[active, :ranks], share[active]))
    strength = np.zeros((width, BEAM))
    picked = np.zeros((width, BEAM), dtype=np.int64)
    sizes = [paths.size for _, _, paths, _ in blocks]
    if not blocks:
        return _Beam(strength, names, picked, picked.copy(), picked.copy())
    step = max(1, CANDIDATE_BLOCK // sum(sizes))
    for start in range(0, width, step):
        filters = slice(start, min(start + step, width))
        # (filters, candidates), candidates in order: incoming layer, source filter, rank.
        candidates = np.concatenate(
            [
                (share[:, filters].T[:, :, None] * paths[None]).reshape(-1, paths.size)
                for _, _, paths, share in blocks
            ],
            axis=1,
        )
        index, value = _stable_top(candidates, BEAM)
        strength[filters, : index.shape[1]] = value
        picked[filters, : index.shape[1]] = index
    offsets = np.cumsum([0, *sizes])
    layer_index = np.searchsorted(offsets, picked, side="right") - 1
    source_filter, source_slot = np.zeros_like(picked), np.zeros_like(picked)
    for n, (active, ranks, _, _) in enumerate(blocks):
        here = layer_index == n
        within = picked[here] - offsets[n]
        source_filter[here], source_slot[here] = active[within // ranks], within % ranks
    return _Beam(strength, names, layer_index, source_filter, source_slot)


def _stable_top(candidates: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (rows, n): the indices of the `top` largest positive values, largest
    first, ties to the lower index, and those values; (rows, ≤ top) each, 0 where a row has
    fewer."""
    rows, n = candidates.shape
    chosen = candidates > 0  # a path of strength 0 is no path
    if n > top:
        chosen &= candidates >= np.partition(candidates, n - top, axis=1)[:, n - top : n - top + 1]
    row, index = np.nonzero(chosen)
    value = candidates[row, index]
    order = np.lexsort((index, -value, row))
    row, index, value = row[order], index[order], value[order]
    rank = np.arange(len(row)) - np.searchsorted(row, np.arange(rows))[row]
    keep = rank < top
    index_out = np.zeros((rows, min(top, n)), dtype=np.int64)
    value_out = np.zeros((rows, min(top, n)))
    index_out[row[keep], rank[keep]] = index[keep]
    value_out[row[keep], rank[keep]] = value[keep]
    return index_out, value_out


def _trace(
    beams: dict[str, _Beam], kept: dict[str, np.ndarray], layer: str, j: int, k: int
) -> tuple[tuple[str, int], ...]:
    """The filters of the partial path in slot k of filter j of `layer`, input side first."""
    filters = []
    while True:
        filters.append((layer, int(kept[layer][j])))
        beam = beams[layer]
        if beam.source_layer is None:
            return tuple(reversed(filters))
        layer, j, k = (
            beam.sources[beam.source_layer[j, k]],
            int(beam.source_filter[j, k]),
            int(beam.source_slot[j, k]),
        )
