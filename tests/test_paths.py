"""Inference paths: link weights from the chain itself, and the strongest paths."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import onnx
import pytest
from conftest import MODELS, inputs_for, random_multipliers, tiny_model
from onnx import numpy_helper

from chainx.channels.surgery import present_units, shrink
from chainx.onnx.graph import GraphIndex
from chainx.onnx.runtime import run_tensors
from chainx.onnx.score_points import find_score_points, score_muls, scored_model
from chainx.render import paths
from chainx.render.layers import layer_edges
from chainx.render.paths import link_weights, strongest_paths


def test_the_strongest_path_follows_the_largest_shares() -> None:
    kept = {"a": np.array([0, 5]), "b": np.array([1, 2, 7]), "c": np.array([4])}
    links = {
        ("a", "b"): np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]]),
        ("b", "c"): np.array([[1.0], [1.0], [2.0]]),
    }
    paths = strongest_paths(links, kept, ["a", "b", "c"], count=3)
    # Shares into b: filter 7 gets all of a0 (share 1), filter 2 all of a5, filter 1 half each.
    # Into c: b7 has half. So a0 → b7 → c4 is strongest at 1 × 0.5.
    assert paths[0].filters == (("a", 0), ("b", 7), ("c", 4))
    assert paths[0].strength == 0.5
    assert [p.strength for p in paths] == sorted((p.strength for p in paths), reverse=True)
    assert all(p.filters[-1] == ("c", 4) for p in paths)


def _all_paths(
    links: dict[tuple[str, str], np.ndarray], kept: dict[str, np.ndarray], order: list[str]
) -> list[tuple[float, tuple[tuple[str, int], ...]]]:
    """Every path by enumeration: from a layer without incoming links to one without
    outgoing links, its strength the product of its links' shares."""
    shares = {
        pair: w / np.maximum(w.sum(axis=0, keepdims=True), 1e-12) for pair, w in links.items()
    }
    targets = {b for _, b in links}

    def walk(layer: str, j: int, strength: float, filters: tuple) -> list:
        here = (*filters, (layer, int(kept[layer][j])))
        onward = [(b, share) for (a, b), share in shares.items() if a == layer]
        if not onward:
            return [(strength, here)] if len(here) > 1 and strength > 0 else []
        return [
            found
            for b, share in onward
            for i in range(share.shape[1])
            for found in walk(b, i, strength * share[j, i], here)
        ]

    starts = [layer for layer in order if layer not in targets]
    found = [
        p for layer in starts for j in range(len(kept[layer])) for p in walk(layer, j, 1.0, ())
    ]
    return sorted(found, key=lambda item: -item[0])


@pytest.mark.parametrize("seed", range(6))
def test_the_beam_search_finds_the_strongest_of_all_paths(seed: int) -> None:
    """On graphs small enough that every partial path fits in the beam, the search is exact:
    its paths are the strongest of the full enumeration, in order."""
    rng = np.random.default_rng(seed)
    order = ["l0", "l1", "l2", "l3"]
    kept = {layer: np.sort(rng.choice(16, size=3, replace=False)) for layer in order}
    pairs = [("l0", "l1"), ("l1", "l2"), ("l0", "l2"), ("l2", "l3")]
    # Some links are zero: a filter that feeds nothing ends no path.
    links = {pair: rng.random((3, 3)) * (rng.random((3, 3)) > 0.3) for pair in pairs}
    expected = _all_paths(links, kept, order)
    found = strongest_paths(links, kept, order, count=20)
    assert len(found) == min(20, len(expected))
    for path, (strength, filters) in zip(found, expected, strict=False):
        assert path.filters == filters
        assert path.strength == pytest.approx(strength, rel=1e-12)


def test_wide_layers_are_searched_in_blocks_with_the_same_paths(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    order = ["a", "b", "c", "d"]
    kept = {layer: np.arange(40) for layer in order}
    links = {(a, b): rng.random((40, 40)) ** 4 for a, b in pairwise(order)}
    whole = strongest_paths(links, kept, order, count=50)
    monkeypatch.setattr(paths, "CANDIDATE_BLOCK", 1000)  # a few columns per block
    assert strongest_paths(links, kept, order, count=50) == whole
    assert len(whole) == 50 and len({p.filters for p in whole}) == 50


def test_links_follow_the_weights_of_the_chain() -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    conv1, conv2 = (p.layer for p in points)
    weight_name = next(n.input[1] for n in model.graph.node if n.name == conv2)
    weight = next(i for i in model.graph.initializer if i.name == weight_name)
    values = numpy_helper.to_array(weight).copy()
    values[1:, 2] = 0.0  # conv1's filter 2 reaches only conv2's filter 0
    weight.CopyFrom(numpy_helper.from_array(values, weight_name))
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    surgery = shrink(scored_model(model, points, multipliers))
    present = present_units(surgery.model, surgery.slices, {p.layer: p.channels for p in points})
    edges = layer_edges(GraphIndex.build(model), [conv1, conv2])
    links = link_weights(surgery.model, inputs_for(model, count=4), present, edges)
    weights = links[(conv1, conv2)]
    assert weights.shape == (8, 12)
    assert (weights[2, 1:] == 0).all() and weights[2, 0] > 0
    assert (weights[[0, 1, 3], 1:] > 0).any()
    paths = strongest_paths(links, present, [conv1, conv2], count=50)
    assert paths
    assert all(p.filters[1] == (conv2, 0) for p in paths if p.filters[0] == (conv1, 2))


def links_by_whole_runs(
    chain: onnx.ModelProto, images: np.ndarray, kept: dict, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], np.ndarray]:
    """The definition, run literally: the whole chain once per kept filter, its multiplier
    set to zero, and b's mean response compared."""
    muls = score_muls(chain)

    names = [muls[layer].output[0] for layer in kept]
    base = run_tensors(chain, images, names)
    links = {}
    for a, b in pairs:
        init = next(i for i in chain.graph.initializer if i.name == muls[a].input[1])
        weights = np.zeros((len(kept[a]), len(kept[b])))
        for position in range(len(kept[a])):
            off = onnx.ModelProto()
            off.CopyFrom(chain)
            value = numpy_helper.to_array(init).copy()
            value.reshape(-1)[position] = 0
            target = next(i for i in off.graph.initializer if i.name == init.name)
            target.CopyFrom(numpy_helper.from_array(value, init.name))
            changed = run_tensors(off, images, [muls[b].output[0]])[muls[b].output[0]]
            reference = base[muls[b].output[0]]
            positions = tuple(range(2, changed.ndim))  # a dense layer's outputs have none
            weights[position] = np.abs(
                changed.mean(axis=positions) - reference.mean(axis=positions)
            ).mean(axis=0)
        links[(a, b)] = weights
    return links


# Every tiny architecture with links: conv-classifier scores one layer, and grouped's
# layers are not linked.
LINKED = sorted(set(MODELS) - {"conv-classifier", "grouped"})


@pytest.mark.parametrize("name", LINKED)
def test_links_from_the_part_between_layers_equal_whole_chain_runs(name: str) -> None:
    model = tiny_model(name)
    points = find_score_points(model)
    multipliers = random_multipliers(points, keep=0.6, seed=5)
    surgery = shrink(scored_model(model, points, multipliers))
    present = present_units(surgery.model, surgery.slices, {p.layer: p.channels for p in points})
    order = [p.layer for p in points]
    edges = layer_edges(GraphIndex.build(model), order)
    images = inputs_for(model, count=5)
    links = link_weights(surgery.model, images, present, edges)
    assert any(weights.any() for weights in links.values())
    expected = links_by_whole_runs(surgery.model, images, present, list(links))
    for pair, weights in links.items():
        np.testing.assert_allclose(weights, expected[pair], rtol=1e-4, atol=1e-6)


def test_a_wide_layer_links_from_its_strongest_filters_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    conv1, conv2 = (p.layer for p in points)
    multipliers = {p.layer: np.linspace(0.5, 1.5, p.channels, dtype=np.float32) for p in points}
    surgery = shrink(scored_model(model, points, multipliers))
    present = present_units(surgery.model, surgery.slices, {p.layer: p.channels for p in points})
    edges = layer_edges(GraphIndex.build(model), [conv1, conv2])
    monkeypatch.setattr(paths, "MAX_SOURCES", 3)
    weights = link_weights(surgery.model, inputs_for(model, count=4), present, edges)[
        (conv1, conv2)
    ]
    linked = np.flatnonzero(weights.any(axis=1))
    np.testing.assert_array_equal(linked, [5, 6, 7])  # the three largest multipliers
