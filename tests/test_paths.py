"""Inference paths: link weights from the chain itself, and the strongest paths."""

from __future__ import annotations

import numpy as np
from conftest import inputs_for, tiny_model
from onnx import numpy_helper

from chainx.channels.surgery import present_units, shrink
from chainx.onnx.graph import GraphIndex
from chainx.onnx.score_points import find_score_points, scored_model
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
