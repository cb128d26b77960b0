"""ONNX surgery: structure of the shrunk graph, and exactness against the scored model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import (
    inputs_for,
    model_with_weights,
    random_multipliers,
    shrink_and_compare,
    tiny_model,
)
from onnx import numpy_helper

from chainx.channels.surgery import shrink
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points, scored_model

TOLERANCE = 1e-5


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Conv/Gemm node name → its weight."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        node.name: inits[node.input[1]]
        for node in model.graph.node
        if node.op_type in {"Conv", "Gemm", "MatMul"}
    }


def conv_named(model: onnx.ModelProto, part: str) -> str:
    return next(n.name for n in model.graph.node if n.op_type == "Conv" and part in n.name)


def parameter_count(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(i.dims) for i in model.graph.initializer))


def test_plain_chain_keeps_exactly_the_scored_filters() -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    conv1, conv2 = (p.layer for p in points)
    multipliers = {conv1: np.zeros(8, np.float32), conv2: np.zeros(12, np.float32)}
    multipliers[conv1][[1, 4]] = [0.5, 1.25]
    multipliers[conv2][[0, 3, 7]] = [1.0, 0.75, 2.0]
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    chain = weights(result.model)
    original = weights(model)
    assert chain[conv1].shape == (2, 3, 3, 3)
    assert chain[conv2].shape == (3, 2, 3, 3)
    np.testing.assert_array_equal(chain[conv1], original[conv1][[1, 4]])
    np.testing.assert_array_equal(chain[conv2], original[conv2][np.ix_([0, 3, 7], [1, 4])])
    gemm = next(n.name for n in result.model.graph.node if n.op_type == "Gemm")
    assert chain[gemm].shape == (5, 3)
    muls = [n for n in result.model.graph.node if n.op_type == "Mul"]
    assert sorted(m.name for m in muls) == sorted(f"chainx.score.{c}" for c in (conv1, conv2))
    assert result.frozen == []


FAMILIES = [
    "plain",
    "identity",
    "projection",
    "option-a",
    "depthwise",
    "inception",
    "grouped",
    "pre-activation",
    "squeeze-excite",
    "conv-classifier",
    "shuffle-split",
    "upsampling",
    "mlp-head",
]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("keep", [0.1, 0.3, 0.7])
def test_random_masks_export_exactly_and_smaller(name: str, keep: float) -> None:
    model = tiny_model(name)
    multipliers = random_multipliers(find_score_points(model), keep, seed=int(keep * 10))
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert parameter_count(result.model) < parameter_count(model)
    assert result.frozen == []
    # No dense Conv computes a filter whose score is zero (a grouped one may pad its groups).
    kept = {conv: int((m != 0).sum()) for conv, m in multipliers.items()}
    for node, weight in weights(result.model).items():
        if node in kept and name != "grouped":
            assert weight.shape[0] <= kept[node]


def test_concat_offsets_follow_the_kept_channels_of_each_input() -> None:
    model = tiny_model("inception")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    branch1, branch3, mix = (conv_named(model, part) for part in ("branch1", "branch3", "mix"))
    multipliers[branch1][:] = 0
    multipliers[branch1][[1, 4]] = 1
    multipliers[branch3][:] = 0
    multipliers[branch3][[0, 9]] = 1
    multipliers[mix][:] = 0
    multipliers[mix][[3]] = 1
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    original = weights(model)
    # The mix conv reads concat channels 1, 4 (branch1) and 6 + 0, 6 + 9 (branch3).
    np.testing.assert_array_equal(
        weights(result.model)[mix], original[mix][np.ix_([3], [1, 4, 6, 15])]
    )
    # The head reads mix filter 3 and the same four joined channels at offset 12.
    gemm = next(n.name for n in result.model.graph.node if n.op_type == "Gemm")
    assert weights(result.model)[gemm].shape == (4, 5)
    assert result.frozen == []


def test_grouped_conv_keeps_whole_groups_of_equal_size() -> None:
    model = tiny_model("grouped")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    grouped = conv_named(model, "grouped")
    # 4 groups of 6 filters reading 4 channels each; keep filters in groups 0 and 2.
    multipliers[grouped][:] = 0
    multipliers[grouped][[1, 13, 14]] = 1
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    node = next(n for n in result.model.graph.node if n.name == grouped)
    assert next(a.i for a in node.attribute if a.name == "group") == 2
    # Group 0 pads its one kept filter with a real filter of the group: (0, 1) and (13, 14).
    weight = weights(result.model)[grouped]
    assert weight.shape == (4, 4, 3, 3)
    original = weights(model)[grouped]
    np.testing.assert_array_equal(weight, original[[0, 1, 13, 14]])
    # The padding filter's score is zero, so the 1×1 projection reads only the kept three.
    assert weights(result.model)[conv_named(model, "project")].shape[1] == 3


def test_constants_fold_into_pointwise_conv_and_gemm_but_not_padded_conv() -> None:
    model = tiny_model("pre-activation")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    stem, pointwise, spatial = (conv_named(model, p) for p in ("stem", "pointwise", "spatial"))
    multipliers[stem][:] = 0
    multipliers[stem][[2, 5, 7]] = 1
    multipliers[pointwise][:] = 0
    multipliers[pointwise][[0, 3]] = 1
    multipliers[spatial][:] = 0
    multipliers[spatial][[6]] = 1
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    chain = weights(result.model)
    # Removed stem filters reach both convs as BN(0) constants through ReLU.
    assert chain[pointwise].shape == (2, 3, 1, 1)  # folded into its bias
    assert chain[spatial].shape[1] > 3  # zero padding at the borders: carried
    gemm = next(n.name for n in result.model.graph.node if n.op_type == "Gemm")
    assert chain[gemm].shape == (4, 3)  # the removed concat channels are folded
    assert result.frozen == []


def test_a_removed_excitation_becomes_a_constant_gate() -> None:
    model = tiny_model("squeeze-excite")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    multipliers[conv_named(model, "expand")][:] = 0  # every gate is sigmoid(0) = 0.5
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    ops = [n.op_type for n in result.model.graph.node]
    assert "Sigmoid" not in ops
    assert conv_named(model, "reduce") not in weights(result.model)


def test_hidden_gemm_neurons_are_scored_and_removed() -> None:
    model = tiny_model("mlp-head")
    points = find_score_points(model)
    hidden = next(p for p in points if p.rank == 2)
    assert hidden.channels == 16
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    multipliers[hidden.layer][:] = 0
    multipliers[hidden.layer][[2, 9, 11]] = 1
    conv = conv_named(model, "conv")
    multipliers[conv][[0, 5]] = 0
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    chain = weights(result.model)
    # Its weight keeps 3 neurons, reading the 4 flattened pixels of each of the 4 kept filters.
    assert sorted(chain[hidden.layer].shape) == [3, 16]
    gemms = [n.name for n in result.model.graph.node if n.op_type == "Gemm"]
    assert chain[next(g for g in gemms if g != hidden.layer)].shape == (4, 3)


@pytest.mark.parametrize("dynamo", [False, True])
def test_shuffle_and_split_follow_the_permuted_channels(dynamo: bool) -> None:
    model = tiny_model("shuffle-split", dynamo=dynamo)
    ops = {n.op_type for n in model.graph.node}
    assert "Transpose" not in ops and "Gather" in ops  # the shuffle is one Gather
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    stem, branch = points[0].layer, points[1].layer  # graph order; dynamo names differ
    multipliers[stem][:] = 0
    multipliers[stem][[0, 7]] = 1  # one channel in each half of the chunk
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert result.frozen == []
    assert weights(result.model)[stem].shape[0] == 2
    assert weights(result.model)[branch].shape[1] == 1


def test_a_conv_classifier_is_not_scored() -> None:
    model = tiny_model("conv-classifier")
    points = find_score_points(model)
    assert [p.layer for p in points] == [conv_named(model, "stem")]
    multipliers = random_multipliers(points, 0.5, seed=1)
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert weights(result.model)[conv_named(model, "classifier")].shape[0] == 5


def test_removed_branch_makes_the_block_an_identity() -> None:
    model = tiny_model("identity")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    for p in points:
        if "/block1/" in p.layer:
            multipliers[p.layer][:] = 0
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    block1 = [n.op_type for n in result.model.graph.node if n.name.startswith("/block1/")]
    # Only block1's closing ReLU remains: relu(x + 0) = relu(x).
    assert block1 == ["Relu"]
    assert sum(n.op_type == "Add" for n in result.model.graph.node) == 1


def test_depthwise_conv_keeps_one_group_per_kept_channel() -> None:
    model = tiny_model("depthwise")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    depthwise = conv_named(model, "depthwise")
    multipliers[depthwise][:] = 0
    multipliers[depthwise][[2, 5, 11, 20]] = [0.5, 1.0, 1.5, 0.25]
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    node = next(n for n in result.model.graph.node if n.name == depthwise)
    group = next(a.i for a in node.attribute if a.name == "group")
    assert group == 4
    assert weights(result.model)[depthwise].shape == (4, 1, 3, 3)
    # The expand conv only computes the channels that the depthwise conv still reads.
    assert weights(result.model)[conv_named(model, "expand")].shape[0] == 4


def test_option_a_shortcut_shifts_channels_without_padding_zeros() -> None:
    model = tiny_model("option-a")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    # Keep only two stream channels of stage 1; block2's own branch keeps three filters.
    for p in points:
        if "/block2/" not in p.layer:
            multipliers[p.layer][2:] = 0
    block2_conv2 = next(p.layer for p in points if "/block2/conv2" in p.layer)
    multipliers[block2_conv2][:] = 0
    multipliers[block2_conv2][[0, 7, 15]] = 1
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    add = next(n for n in result.model.graph.node if n.op_type == "Add" and "/block2/" in n.name)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim[1:2]]
        for v in onnx.shape_inference.infer_shapes(result.model).graph.value_info
    }
    # The stream after block2 carries the 2 shifted stage-1 channels plus 3 branch filters.
    assert shapes[add.output[0]] == [5]


def test_a_dead_layer_before_a_biased_conv_stays_exact() -> None:
    model = tiny_model("plain")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    multipliers[points[0].layer][:] = 0  # conv2 then sees only zeros: its output is its bias
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert points[0].layer not in weights(result.model)


def test_an_unknown_op_is_frozen_and_the_export_stays_exact() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] input) => (float[N, 4] logits) {
        a = Conv <pads = [1, 1, 1, 1]> (input, w1, b1)
        r = Relu (a)
        n = LRN <size = 3> (r)
        c = Conv <pads = [1, 1, 1, 1]> (n, w2, b2)
        p = GlobalAveragePool (c)
        f = Flatten (p)
        logits = Gemm <transB = 1> (f, w3, b3)
    }
    """
    model = model_with_weights(
        text,
        {
            "w1": (6, 3, 3, 3),
            "b1": (6,),
            "w2": (5, 6, 3, 3),
            "b2": (5,),
            "w3": (4, 5),
            "b3": (4,),
        },
    )
    model = normalise(model)
    points = find_score_points(model)
    multipliers = random_multipliers(points, 0.5, seed=3)
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert [op for _, op in result.frozen] == ["LRN"]
    # The frozen LRN sees all 6 channels in their original order, zero-filled where the
    # first conv dropped a filter...
    shapes = onnx.shape_inference.infer_shapes(result.model).graph.value_info
    lrn = next(n for n in result.model.graph.node if n.op_type == "LRN")
    lrn_input = next(v for v in shapes if v.name == lrn.input[0])
    assert lrn_input.type.tensor_type.shape.dim[1].dim_value == 6
    # ...while both convs hold only their non-zero filters.
    for point in points:
        kept = int((multipliers[point.layer] != 0).sum())
        assert weights(result.model)[point.layer].shape[0] == kept


def test_shrink_is_exact_on_batches_of_any_size() -> None:
    model = tiny_model("projection")
    multipliers = random_multipliers(find_score_points(model), 0.4)
    scored = scored_model(model, find_score_points(model), multipliers)
    chain = shrink(scored).model
    for count in (1, 7):
        x = inputs_for(model, count=count)
        np.testing.assert_allclose(
            run(session(chain), x), run(session(scored), x), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("opset", [11, 17])
def test_split_on_channels_keeps_each_piece_separately(opset: int) -> None:
    sizes = "<axis = 1, split = [2, 4]>" if opset == 11 else "<axis = 1>"
    split_inputs = "(c)" if opset == 11 else "(c, sizes)"
    text = f"""
    <ir_version: 7, opset_import: ["" : {opset}]>
    net (float[N, 3, 6, 6] input) => (float[N, 4] logits) {{
        sizes = Constant <value = int64[2] {{2, 4}}> ()
        c = Conv <pads = [1, 1, 1, 1]> (input, w1, b1)
        a, b = Split {sizes} {split_inputs}
        ra = Relu (a)
        cb = Conv <pads = [1, 1, 1, 1]> (b, w2, b2)
        rb = Relu (cb)
        j = Concat <axis = 1> (ra, rb)
        p = GlobalAveragePool (j)
        f = Flatten (p)
        logits = Gemm <transB = 1> (f, w3, b3)
    }}
    """
    model = model_with_weights(
        text,
        {
            "w1": (6, 3, 3, 3),
            "b1": (6,),
            "w2": (5, 4, 3, 3),
            "b2": (5,),
            "w3": (4, 7),
            "b3": (4,),
        },
    )
    model = normalise(model)
    assert "Split" in {n.op_type for n in model.graph.node}
    points = find_score_points(model)
    first, second = (p.layer for p in points)
    multipliers = {first: np.zeros(6, np.float32), second: np.ones(5, np.float32)}
    multipliers[first][[1, 3, 4]] = 1  # one channel of piece a, two of piece b
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert result.frozen == []
    split = next(n for n in result.model.graph.node if n.op_type == "Split")
    assert split.name in {n.name for n in model.graph.node}
    assert weights(result.model)[first].shape[0] == 3
    assert weights(result.model)[second].shape[1] == 2


def test_constants_that_padding_makes_vary_are_brought_back() -> None:
    """BN turns removed filters into constants; padding at the borders makes them vary."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] input) => (float[N, 4] logits) {
        a = Conv <pads = [1, 1, 1, 1]> (input, w1)
        r = Relu (a)
        n = BatchNormalization (r, scale, bias, mean, var)
        pooled = AveragePool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], count_include_pad = 1> (n)
        padded = Pad (n, pads)
        c = Conv (pooled, w2, b2)
        d = Conv (padded, w3, b3)
        s = Add (c, d)
        p = ReduceMean <axes = [2, 3], keepdims = 0> (s)
        logits = Gemm <transB = 1> (p, w4, b4)
    }
    """
    model = model_with_weights(
        text,
        {
            "w1": (6, 3, 3, 3),
            "scale": (6,),
            "bias": (6,),
            "mean": (6,),
            "w2": (5, 6, 1, 1),
            "b2": (5,),
            "w3": (5, 6, 3, 3),
            "b3": (5,),
            "w4": (4, 5),
            "b4": (4,),
            "var": (6,),
        },
    )
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    )
    model = normalise(model)
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    first = points[0].layer
    multipliers[first][[0, 2, 3, 5]] = 0
    result, error = shrink_and_compare(model, multipliers)
    assert error <= TOLERANCE
    assert result.frozen == []
    # Both 1×1 convs read all six channels: the removed ones vary at the borders now.
    chain = weights(result.model)
    assert [chain[p.layer].shape[1] for p in points[1:3]] == [6, 6]
