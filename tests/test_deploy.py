"""chain.deploy.onnx: zero-filter padding to whole channel blocks, scores folded, checked
against the chain in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import inputs_for, random_multipliers, tiny_model
from onnx import numpy_helper

from chainx.chain.deploy import check_deploy, deploy_model, fold_scores, padding_filters
from chainx.chain.export import export_chain
from chainx.channels.surgery import present_units, shrink
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import ScorePoint, find_score_points, score_muls, scored_model


def conv_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Conv node name → its filter count."""
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: inits[n.input[1]].dims[0] for n in model.graph.node if n.op_type == "Conv"}


def score_mul_count(model: onnx.ModelProto) -> int:
    return len(score_muls(model))


def chain_of(model: onnx.ModelProto, multipliers: dict[str, np.ndarray]) -> onnx.ModelProto:
    points = find_score_points(model)
    return export_chain(model, points, multipliers, {"sha256": "", "settings": {}}).model


def chain_and_deploy(
    name: str, keep: float, seed: int, block: int
) -> tuple[onnx.ModelProto, list[ScorePoint], onnx.ModelProto, onnx.ModelProto]:
    """A tiny model with random multipliers: the model, its points, its chain and the
    deploy form at `block`."""
    model = tiny_model(name)
    points = find_score_points(model)
    multipliers = random_multipliers(points, keep=keep, seed=seed)
    deploy = deploy_model(model, points, multipliers, block=block)
    return model, points, chain_of(model, multipliers), deploy


@pytest.mark.parametrize("name", ["plain", "identity", "depthwise", "squeeze-excite", "grouped"])
def test_the_deploy_form_computes_what_the_chain_computes(name: str) -> None:
    model, _, chain, deploy = chain_and_deploy(name, keep=0.3, seed=3, block=4)
    onnx.checker.check_model(deploy, full_check=True)
    check = check_deploy(deploy, chain, inputs_for(model, count=6))
    assert check.passed, check
    # Every score after its own Conv is folded (a grouped Conv's may follow a Gather).
    assert score_mul_count(deploy) < score_mul_count(chain)
    if name != "grouped":
        assert score_mul_count(deploy) == 0


def test_scored_layers_are_padded_to_whole_blocks_with_zero_filters() -> None:
    # stem 8, expand 24, depthwise 24, project 8, head 16
    _, points, chain, deploy = chain_and_deploy("depthwise", keep=0.3, seed=3, block=4)
    chain_rows, deploy_rows = conv_rows(chain), conv_rows(deploy)
    widths = {p.layer: p.channels for p in points}
    for layer, rows in deploy_rows.items():
        if layer in widths:
            assert rows % 4 == 0 or rows == widths[layer], (layer, rows)
            assert rows >= chain_rows.get(layer, 0)
    assert sum(deploy_rows.values()) > sum(chain_rows.values())  # some padding happened


def test_padding_prefers_channels_other_layers_of_the_width_compute() -> None:
    first = ScorePoint("a", "a_out", 8, 4)
    second = ScorePoint("b", "b_out", 8, 4)
    other = ScorePoint("c", "c_out", 6, 4)
    present = {"a": np.array([5]), "b": np.array([1, 2, 3]), "c": np.array([0, 1, 2])}
    padding = padding_filters([first, second, other], present, block=4)
    np.testing.assert_array_equal(padding[first], [1, 2, 3])  # b's channels, not 0
    np.testing.assert_array_equal(padding[second], [5])
    assert other not in padding or len(padding[other]) == 1  # 3 → 4 (of 6)


def test_block_one_only_folds_the_scores() -> None:
    model, _, chain, deploy = chain_and_deploy("plain", keep=0.4, seed=1, block=1)
    assert conv_rows(deploy) == conv_rows(chain)
    assert check_deploy(deploy, chain, inputs_for(model)).passed


def test_carried_channels_are_computed_although_their_multiplier_is_zero() -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    first = points[0]
    multipliers = {p.layer: np.zeros(p.channels, np.float32) for p in points}
    for p in points:
        multipliers[p.layer][:2] = 1.0
    carried = np.zeros(first.channels, bool)
    carried[[5, 6]] = True
    scored = scored_model(model, points, multipliers)
    plain, padded = shrink(scored), shrink(scored, {first.point: carried, first.scored: carried})
    layers = {p.layer: p.channels for p in points}
    np.testing.assert_array_equal(
        present_units(plain.model, plain.slices, layers)[first.layer], [0, 1]
    )
    np.testing.assert_array_equal(
        present_units(padded.model, padded.slices, layers)[first.layer], [0, 1, 5, 6]
    )
    x = inputs_for(model)
    np.testing.assert_allclose(
        run(session(padded.model), x), run(session(plain.model), x), rtol=1e-5, atol=1e-6
    )


def test_a_score_folded_into_its_conv_scales_the_weights_and_bias() -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    multipliers = random_multipliers(points, keep=1.0, seed=2)
    chain = shrink(scored_model(model, points, multipliers)).model
    folded = fold_scores(chain)
    assert score_mul_count(folded) == 0
    first = next(n for n in folded.graph.node if n.op_type == "Conv")
    weight = numpy_helper.to_array(
        next(i for i in folded.graph.initializer if i.name == first.input[1])
    )
    original = numpy_helper.to_array(
        next(
            i
            for i in model.graph.initializer
            if i.name == next(n for n in model.graph.node if n.name == first.name).input[1]
        )
    )
    scale = multipliers[first.name]
    np.testing.assert_allclose(weight, original * scale[:, None, None, None], rtol=1e-6)
    x = inputs_for(model)
    np.testing.assert_allclose(
        run(session(folded), x), run(session(chain), x), rtol=1e-5, atol=1e-6
    )


def test_a_deploy_file_that_differs_fails_its_check() -> None:
    model, _, chain, deploy = chain_and_deploy("plain", keep=0.5, seed=4, block=4)
    conv = next(n for n in deploy.graph.node if n.op_type == "Conv")
    init = next(i for i in deploy.graph.initializer if i.name == conv.input[1])
    value = numpy_helper.to_array(init) * 1.01
    init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
    assert not check_deploy(deploy, chain, inputs_for(model)).passed
