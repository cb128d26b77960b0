"""Baseline filter importances on real tiny models, checked against direct computations."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import inputs_for, model_with_weights, tiny_model
from onnx import helper

from chainx.errors import ChainxError
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points
from chainx.scoring import importance
from chainx.scoring.model import ScoringModel

CONV_GEMM = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N, 3, 6, 6] x) => (float[N, 4] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r = Relu (c)
    p = GlobalAveragePool (r)
    f = Flatten (p)
    h = Gemm <transB = 1> (f, w2, b2)
    a = Relu (h)
    y = Gemm <transB = 1> (a, w3, b3)
}
"""


def conv_gemm() -> onnx.ModelProto:
    return normalise(
        model_with_weights(
            CONV_GEMM,
            {"w1": (5, 3, 3, 3), "b1": (5,), "w2": (7, 5), "b2": (7,), "w3": (4, 7), "b3": (4,)},
        )
    )


def test_weight_l1_is_the_l1_norm_of_each_filter_and_neuron() -> None:
    model = conv_gemm()
    points = find_score_points(model)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    gemm = next(
        n for n in model.graph.node if n.op_type == "Gemm" and n.name in {p.layer for p in points}
    )
    result = importance.weight_l1(model, points)
    assert set(result) == {conv.name, gemm.name}
    np.testing.assert_allclose(
        result[conv.name], np.abs(weights[conv.input[1]]).sum((1, 2, 3)), rtol=1e-6
    )
    np.testing.assert_allclose(result[gemm.name], np.abs(weights[gemm.input[1]]).sum(1), rtol=1e-6)


def test_mean_activation_is_the_mean_magnitude_at_the_score_point() -> None:
    model = conv_gemm()
    points = find_score_points(model)
    images = inputs_for(model, count=3)
    result = importance.mean_activation(model, points, images)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.make_empty_tensor_value_info(p.point) for p in points)
    sess = session(probe)
    for point in points:
        value = np.concatenate([sess.run([point.point], {"x": image[None]})[0] for image in images])
        axes = (0, 2, 3) if value.ndim == 4 else (0,)
        np.testing.assert_allclose(result[point.layer], np.abs(value).mean(axes), rtol=1e-5)


def test_taylor_equals_the_finite_difference_gradient_of_each_multiplier() -> None:
    model = tiny_model("identity")
    points = find_score_points(model)
    scoring = ScoringModel(model, points)
    images = inputs_for(model, count=2)
    result = importance.taylor(scoring, images, "logits")
    target = run(session(model), images).argmax(1)

    def loss(image: int, layer: int, unit: int, delta: float) -> float:
        multipliers = [torch.ones(p.channels, dtype=torch.float64) for p in points]
        multipliers[layer][unit] += delta
        scoring.double()
        with torch.no_grad():
            out = scoring.run(torch.from_numpy(images[image : image + 1]).double(), multipliers)
        scoring.float()
        return float(-torch.log_softmax(out.reshape(1, -1), -1)[0, target[image]])

    checked = 0
    for layer, point in enumerate(points):
        for unit in range(min(point.channels, 3)):
            grads = [
                abs(loss(i, layer, unit, 1e-4) - loss(i, layer, unit, -1e-4)) / 2e-4
                for i in range(len(images))
            ]
            assert result[point.layer][unit] == pytest.approx(np.mean(grads), rel=1e-3, abs=1e-7)
            checked += 1
    assert checked >= 6


def test_keep_top_keeps_the_budget_per_layer_and_breaks_ties_by_index() -> None:
    ranking = {"a": np.array([0.5, 2.0, 0.5, 0.5, 1.0]), "b": np.array([1.0, 3.0])}
    kept = importance.keep_top(ranking, {"a": 3, "b": 0})
    np.testing.assert_array_equal(kept["a"], [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(kept["b"], [0, 0])
    with pytest.raises(ChainxError, match="not finite"):
        importance.keep_top({"a": np.array([np.nan, 1.0])}, {"a": 1})


def test_baselines_keep_the_chains_per_layer_count_and_unscaled_keeps_its_filters() -> None:
    model = tiny_model("projection")
    points = find_score_points(model)
    rng = np.random.default_rng(3)
    chain = {
        p.layer: (rng.uniform(0.1, 2, p.channels) * (rng.random(p.channels) < 0.4)).astype(
            np.float32
        )
        for p in points
    }
    random = importance.baseline_multipliers(
        "random", chain, lambda: importance.random_order(points, 7)
    )
    unscaled = importance.baseline_multipliers("unscaled", chain, dict)
    for p in points:
        assert np.count_nonzero(random[p.layer]) == np.count_nonzero(chain[p.layer])
        assert set(np.unique(random[p.layer])) <= {0.0, 1.0}
        np.testing.assert_array_equal(unscaled[p.layer], (chain[p.layer] != 0).astype(np.float32))
    again = importance.baseline_multipliers(
        "random", chain, lambda: importance.random_order(points, 7)
    )
    assert all(np.array_equal(random[k], again[k]) for k in random)
