"""The controls of issue 12: random weights, the within-layer shuffle, the LRP relevance
baseline, and fine-tuned baselines that keep every selected filter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from conftest import (
    SAMPLE_MODEL,
    SAMPLE_REGION,
    inputs_for,
    model_with_weights,
    random_multipliers,
    tiny_model,
)
from onnx import numpy_helper

import chainx
from chainx.chain.exactness import check_exactness
from chainx.chain.export import export_chain
from chainx.errors import ChainxError
from chainx.images import load_images, model_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.random_weights import random_weights_model
from chainx.onnx.runtime import run, run_tensors, session
from chainx.onnx.score_points import find_score_points
from chainx.scoring.importance import shuffled_multipliers
from chainx.scoring.model import ScoringModel, masked_outputs
from chainx.scoring.optimise import finetune_selection
from chainx.scoring.relevance import explainable, relevance
from chainx.scoring.settings import OptimiseSettings
from tools.random_weights import write_random_weights


@pytest.fixture(scope="module")
def sample() -> tuple[onnx.ModelProto, np.ndarray]:
    model = normalise(load_model(SAMPLE_MODEL))
    prep = model_preprocessing(model, None, 28, None, None)  # 1 channel: mean and std 0.5
    return model, load_images(SAMPLE_REGION, prep).array


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def weight_names(model: onnx.ModelProto) -> set[str]:
    return {n.input[1] for n in model.graph.node if n.op_type in {"Conv", "Gemm", "MatMul"}}


def graph_of(model: onnx.ModelProto) -> list[tuple]:
    return [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def assert_chain_exact(model: onnx.ModelProto, images: np.ndarray) -> None:
    points = find_score_points(model)
    multipliers = random_multipliers(points, keep=0.5)
    chain = export_chain(model, points, multipliers, {"sha256": "", "settings": {}}).model
    expected = masked_outputs(ScoringModel(model, points), images, multipliers)
    exactness = check_exactness(run(session(chain), images), expected)
    assert exactness.max_abs_output > 0
    assert exactness.reference == "float64" and exactness.passed


def test_random_weights_redraws_each_weight_at_its_std_and_keeps_everything_else(sample) -> None:
    model, images = sample
    randomised = random_weights_model(model, images, seed=0)
    onnx.checker.check_model(randomised, full_check=True)
    assert graph_of(randomised) == graph_of(model)
    before, after = initializers(model), initializers(randomised)
    assert before.keys() == after.keys()
    weights = weight_names(model)
    assert len(weights) == 10  # 9 Conv and the Gemm
    for name, value in before.items():
        assert after[name].shape == value.shape and after[name].dtype == value.dtype
        if name in weights:
            assert abs(after[name].mean()) < 4 * value.std() / np.sqrt(value.size)  # mean 0
            assert after[name].std() == pytest.approx(value.std(), rel=0.1)
            assert np.corrcoef(after[name].ravel(), value.ravel())[0, 1] < 0.2
        else:  # biases, shapes
            np.testing.assert_array_equal(after[name], value)
    # BatchNorm is folded into the convs here: nothing to re-estimate, no images needed.
    again = random_weights_model(model, None, seed=0)
    assert all(np.array_equal(v, initializers(again)[k]) for k, v in after.items())
    other = initializers(random_weights_model(model, None, seed=1))
    assert all(not np.array_equal(other[name], after[name]) for name in weights)


def test_random_weights_reestimates_batchnorm_statistics_layer_by_layer() -> None:
    model = tiny_model("projection")
    images = inputs_for(model, count=12)
    randomised = random_weights_model(model, images, seed=3)
    norms = [n for n in randomised.graph.node if n.op_type == "BatchNormalization"]
    assert len(norms) == 6
    inputs = run_tensors(randomised, images, [n.input[0] for n in norms])
    stats = initializers(randomised)
    original = initializers(model)
    for node in norms:
        value = inputs[node.input[0]].astype(np.float64)
        np.testing.assert_allclose(
            stats[node.input[3]], value.mean((0, 2, 3)), rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(stats[node.input[4]], value.var((0, 2, 3)), rtol=1e-4)
        assert not np.allclose(stats[node.input[4]], original[node.input[4]])
        for scale_or_shift in node.input[1:3]:
            np.testing.assert_array_equal(stats[scale_or_shift], original[scale_or_shift])
    with pytest.raises(ChainxError, match="give images"):
        random_weights_model(model, None, seed=3)


def test_a_chain_of_a_random_weights_model_is_exact(sample) -> None:
    model, images = sample
    assert_chain_exact(random_weights_model(model, images, seed=0), images)
    tiny = tiny_model("projection")
    tiny_images = inputs_for(tiny, count=8)
    assert_chain_exact(random_weights_model(tiny, tiny_images, seed=0), tiny_images)


def test_the_random_weights_tool_writes_a_model_that_chainx_extracts(tmp_path) -> None:
    out = tmp_path / "random.onnx"
    write_random_weights(SAMPLE_MODEL, SAMPLE_REGION, out, seed=2, resize=28)
    written = onnx.load(out)
    assert graph_of(written) == graph_of(normalise(load_model(SAMPLE_MODEL)))
    result = chainx.extract(out, SAMPLE_REGION, resize=28, steps=30, finetune_steps=5)
    assert result.verification.passed


def test_shuffle_keeps_each_layers_values_and_moves_them() -> None:
    rng = np.random.default_rng(0)
    chain = {
        f"layer{i}": (rng.uniform(0.1, 2, 32) * (rng.random(32) < 0.3)).astype(np.float32)
        for i in range(4)
    }
    shuffled = shuffled_multipliers(chain, seed=5)
    assert list(shuffled) == list(chain)
    for layer, values in chain.items():
        assert shuffled[layer].dtype == values.dtype
        assert np.count_nonzero(shuffled[layer]) == np.count_nonzero(values)
        np.testing.assert_array_equal(np.sort(shuffled[layer]), np.sort(values))
        assert not np.array_equal(shuffled[layer] != 0, values != 0)
    reordered = dict(reversed(list(chain.items())))
    for again in (shuffled_multipliers(chain, seed=5), shuffled_multipliers(reordered, seed=5)):
        assert all(np.array_equal(again[k], shuffled[k]) for k in chain)
    other = shuffled_multipliers(chain, seed=6)
    assert any(not np.array_equal(other[k], shuffled[k]) for k in chain)


RELU_NET = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[N, 3, 6, 6] x) => (float[N, 4] y) {
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
    r1 = Relu (c1)
    c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2)
    r2 = Relu (c2)
    p = GlobalAveragePool (r2)
    f = Flatten (p)
    h = Gemm <transB = 1> (f, w3)
    a = Relu (h)
    y = Gemm <transB = 1> (a, w4)
}
"""
RELU_SHAPES = {"w1": (6, 3, 3, 3), "w2": (8, 6, 3, 3), "w3": (10, 8), "w4": (4, 10)}


def relu_net(positive_head: bool = False, softmax: bool = False) -> onnx.ModelProto:
    """A tiny all-ReLU network without biases, where LRP conserves the explained logit."""
    text = RELU_NET
    if softmax:
        text = text.replace("=> (float[N, 4] y)", "=> (float[N, 4] s)").replace(
            "(a, w4)\n", "(a, w4)\n    s = Softmax (y)\n"
        )
    model = model_with_weights(text, RELU_SHAPES)
    if positive_head:
        for init in model.graph.initializer:
            if init.name in {"w3", "w4"}:
                init.CopyFrom(
                    numpy_helper.from_array(np.abs(numpy_helper.to_array(init)), init.name)
                )
    return normalise(model)


@pytest.mark.parametrize("rule", ["epsilon", "epsilon-plus"])
def test_relevance_is_conserved_at_every_layer_of_a_relu_net_without_biases(rule) -> None:
    model = relu_net()
    points = find_score_points(model)
    assert len(points) == 3  # two convs and the hidden Gemm
    images = inputs_for(model, count=6)
    explained = run(session(model), images).max(1)
    result = relevance(ScoringModel(model, points), images, "logits", rule)
    assert {p.layer: v.shape for p, v in zip(points, result.values(), strict=True)} == {
        p.layer: (p.channels,) for p in points
    }
    for point in points:
        assert result[point.layer].sum() == pytest.approx(explained.sum(), rel=1e-4)


def test_epsilon_relevance_is_gradient_times_input_on_a_relu_net_without_biases() -> None:
    # LRP-0 on a bias-free ReLU net is gradient × input: at a score point, Σ a·∂y/∂a, which is
    # the gradient of the explained logit with respect to the point's multiplier at 1.
    model = relu_net()
    points = find_score_points(model)
    scoring = ScoringModel(model, points)
    images = inputs_for(model, count=6)
    ones = [torch.ones(p.channels, requires_grad=True) for p in points]
    output = scoring.run(torch.from_numpy(images), ones)
    grads = torch.autograd.grad(output.max(-1).values.sum(), ones)
    result = relevance(scoring, images, "logits", "epsilon")
    for point, grad in zip(points, grads, strict=True):
        np.testing.assert_allclose(result[point.layer], grad.numpy(), rtol=1e-4, atol=1e-5)


def test_the_plus_rule_keeps_relevance_non_negative_below_a_positive_head() -> None:
    # ε on the two dense layers with non-negative weights, then z+ on the convs.
    model = relu_net(positive_head=True)
    points = find_score_points(model)
    images = inputs_for(model, count=6)
    scoring = ScoringModel(model, points)
    plus = relevance(scoring, images, "logits")
    assert all(values.min() >= 0 for values in plus.values())
    assert all(values.max() > 0 for values in plus.values())


def test_relevance_explains_the_logit_under_a_softmax() -> None:
    logits, probabilities = relu_net(), relu_net(softmax=True)
    images = inputs_for(logits, count=4)
    expected = relevance(ScoringModel(logits, find_score_points(logits)), images, "logits")
    scoring = ScoringModel(probabilities, find_score_points(probabilities))
    actual = relevance(scoring, images, "probabilities")
    for layer, values in expected.items():
        np.testing.assert_allclose(actual[layer], values, rtol=1e-5)
    with pytest.raises(ChainxError, match="no logit"):
        relevance(ScoringModel(logits, find_score_points(logits)), images, "probabilities")


def test_relevance_on_batchnorm_and_residuals(sample) -> None:
    model = tiny_model("projection")
    points = find_score_points(model)
    scoring = ScoringModel(model, points)
    images = inputs_for(model, count=5)
    net = explainable(scoring, "logits")
    ones = [torch.ones(1, p.channels, 1, 1) for p in points]
    with torch.no_grad():
        expected = scoring.unscored(torch.from_numpy(images))
        merged = net(torch.from_numpy(images), *ones)
    torch.testing.assert_close(merged, expected, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    # The scoring model itself is not changed.
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in scoring.net.modules()) == 6
    sample_model, sample_images = sample
    sample_points = find_score_points(sample_model)
    result = relevance(ScoringModel(sample_model, sample_points), sample_images, "logits")
    assert [len(result[p.layer]) for p in sample_points] == [p.channels for p in sample_points]
    assert all(np.isfinite(v).all() for v in result.values())


def test_finetuned_baselines_keep_every_selected_filter_with_a_floor(sample) -> None:
    model, images = sample
    points = find_score_points(model)
    selection = {
        layer: (values != 0).astype(np.float32)
        for layer, values in random_multipliers(points, keep=0.3, seed=4).items()
    }
    settings = replace(OptimiseSettings(), finetune_steps=40, finetune_lr=0.3)
    scoring = ScoringModel(model, points)
    free = finetune_selection(scoring, images, "logits", settings, selection)
    floored = finetune_selection(scoring, images, "logits", settings, selection, min_score=0.05)
    dropped = sum(int(((selection[k] != 0) & (free[k] == 0)).sum()) for k in selection)
    assert dropped > 0  # without the floor some selected filters end at 0
    for layer, chosen in selection.items():
        assert np.array_equal(floored[layer] != 0, chosen != 0)
        assert (floored[layer][chosen != 0] > 0).all()
