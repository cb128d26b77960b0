"""A transformer block as tf2onnx writes Keras layers, on a tiny ONNX-text graph: Dense on
tokens flattened with the batch, MultiHeadAttention's einsums as batched MatMuls over heads
merged into the batch, per-head projection biases, GELU in its tanh form. Each pass that
brings it to the form the channel analysis follows, then heads and neurons removed."""

from __future__ import annotations

import numpy as np
import onnx
from rules_helpers import build, node_input, ops

from chainx.channels.surgery import shrink
from chainx.onnx.graph import GraphIndex
from chainx.onnx.passes.head_batch import UnmergeHeadBatch
from chainx.onnx.passes.head_bias import BiasBeforeHeadSplit
from chainx.onnx.passes.infer_shapes import InferShapes
from chainx.onnx.passes.token_matmul import FoldTokenFlatten
from chainx.onnx.runtime import session
from chainx.onnx.score_points import find_score_points, scored_model

TOKENS, DIM, HEADS, SIZE, HIDDEN = 4, 4, 2, 2, 6

BLOCK = """
net (float[N, 4, 4] x) => (float[N, 4, 4] y) {
    t = LayerNormalization <axis = -1> (x, ln_scale, ln_bias)
    q0 = MatMul (t, w_q)
    q1 = Reshape (q0, split)
    q = Add (q1, b_q)
    qu = Unsqueeze (q, three)
    qt = Transpose <perm = [0, 2, 1, 3, 4]> (qu)
    qm = Reshape (qt, merge_tokens_size)
    k0 = MatMul (t, w_k)
    k1 = Reshape (k0, split)
    k = Add (k1, b_k)
    ku = Unsqueeze (k, one)
    kt = Transpose <perm = [0, 3, 1, 2, 4]> (ku)
    km = Reshape (kt, merge_tokens_size)
    kmt = Transpose <perm = [0, 2, 1]> (km)
    s = MatMul (qm, kmt)
    s5 = Reshape (s, unmerge_scores)
    ss = Squeeze (s5, four)
    sc = Mul (ss, scale)
    a = Softmax <axis = -1> (sc)
    au = Unsqueeze (a, three)
    am = Reshape (au, merge_tokens_tokens)
    v0 = MatMul (t, w_v)
    v1 = Reshape (v0, split)
    v = Add (v1, b_v)
    vu = Unsqueeze (v, two)
    vt = Transpose <perm = [0, 3, 2, 4, 1]> (vu)
    vm = Reshape (vt, merge_size_tokens)
    vmt = Transpose <perm = [0, 2, 1]> (vm)
    o = MatMul (am, vmt)
    o5 = Reshape (o, unmerge_values)
    os = Squeeze (o5, four)
    ot = Transpose <perm = [0, 2, 1, 3]> (os)
    om = Reshape (ot, tokens_dim)
    p = MatMul (om, w_o)
    r = Add (t, p)
    f = Reshape (r, flat_dim)
    h0 = MatMul (f, w_1)
    h = Reshape (h0, tokens_hidden)
    hb = Add (h, b_1)
    g1 = Mul (hb, half)
    g2 = Pow (hb, cube)
    g3 = Mul (g2, c1)
    g4 = Add (hb, g3)
    g5 = Mul (g4, c2)
    g6 = Tanh (g5)
    g7 = Add (g6, unit)
    g = Mul (g1, g7)
    f2 = Reshape (g, flat_hidden)
    m0 = MatMul (f2, w_2)
    m = Reshape (m0, tokens_dim)
    y = Add (r, m)
}
"""

SHAPES = {
    "ln_scale": (DIM,),
    "ln_bias": (DIM,),
    "w_q": (DIM, DIM),
    "w_k": (DIM, DIM),
    "w_v": (DIM, DIM),
    "w_o": (DIM, DIM),
    "b_q": (HEADS, SIZE),
    "b_k": (HEADS, SIZE),
    "b_v": (HEADS, SIZE),
    "w_1": (DIM, HIDDEN),
    "b_1": (HIDDEN,),
    "w_2": (HIDDEN, DIM),
}


def _shape(*dims: int) -> np.ndarray:
    return np.array(dims, np.int64)


VALUES = {
    "split": _shape(-1, TOKENS, HEADS, SIZE),
    "merge_tokens_size": _shape(-1, TOKENS, SIZE),
    "merge_tokens_tokens": _shape(-1, TOKENS, TOKENS),
    "merge_size_tokens": _shape(-1, SIZE, TOKENS),
    "unmerge_scores": _shape(-1, HEADS, TOKENS, TOKENS, 1),
    "unmerge_values": _shape(-1, HEADS, TOKENS, SIZE, 1),
    "tokens_dim": _shape(-1, TOKENS, DIM),
    "flat_dim": _shape(-1, DIM),
    "tokens_hidden": _shape(-1, TOKENS, HIDDEN),
    "flat_hidden": _shape(-1, HIDDEN),
    "one": _shape(1),
    "two": _shape(2),
    "three": _shape(3),
    "four": _shape(4),
    "scale": np.array(SIZE**-0.5, np.float32),
    "half": np.array(0.5, np.float32),
    "cube": np.array(3.0, np.float32),
    "c1": np.array(0.044715, np.float32),
    "c2": np.array(np.sqrt(2 / np.pi), np.float32),
    "unit": np.array(1.0, np.float32),
}

X = np.random.default_rng(3).standard_normal((3, TOKENS, DIM)).astype(np.float32)


def block() -> onnx.ModelProto:
    return build(BLOCK, SHAPES, VALUES)


def outputs(model: onnx.ModelProto) -> np.ndarray:
    return session(model, cpu=True).run(None, {"x": X})[0]


def shape_constant(model: onnx.ModelProto, node: str) -> list[int]:
    return node_input(model, node, 1).tolist()


def normalised() -> onnx.ModelProto:
    model = block()
    for step in (FoldTokenFlatten(), UnmergeHeadBatch(), BiasBeforeHeadSplit()):
        model = InferShapes()(step(model).model).model
    return model


def test_token_flatten_matmul_unflatten_becomes_one_matmul_on_tokens() -> None:
    model = block()
    result = FoldTokenFlatten()(block())
    assert result.modified
    folded = result.model
    assert not {"f", "h", "f2", "m"} & {node.name for node in folded.graph.node}
    matmuls = {
        node.name: list(node.input) for node in folded.graph.node if node.name in {"h0", "m0"}
    }
    assert matmuls == {"h0": ["r", "w_1"], "m0": ["g", "w_2"]}
    np.testing.assert_array_equal(outputs(folded), outputs(model))


def test_heads_merged_into_the_batch_get_their_own_axis() -> None:
    model = block()
    result = UnmergeHeadBatch()(block())
    assert result.modified
    unmerged = InferShapes()(result.model).model
    assert shape_constant(unmerged, "qm") == [-1, HEADS, TOKENS, SIZE]
    assert shape_constant(unmerged, "am") == [-1, HEADS, TOKENS, TOKENS]
    assert shape_constant(unmerged, "vm") == [-1, HEADS, SIZE, TOKENS]
    perms = {
        n.name: list(n.attribute[0].ints) for n in unmerged.graph.node if n.name in {"kmt", "vmt"}
    }
    assert perms == {"kmt": [0, 1, 3, 2], "vmt": [0, 1, 3, 2]}
    g = GraphIndex.build(unmerged)
    assert g.shapes["o"][1:] == [HEADS, TOKENS, SIZE]
    # The flattened tokens of the MLP merge the batch too, but a MatMul by a weight reads
    # them: they stay.
    assert shape_constant(unmerged, "f") == [-1, DIM]
    np.testing.assert_array_equal(outputs(unmerged), outputs(model))


def test_merged_heads_read_by_another_op_stay_merged() -> None:
    # A Relu on the merged queries: q and k (joined by their MatMul) stay merged; the
    # softmax and v, a group of their own, still get their heads axis.
    text = BLOCK.replace("s = MatMul (qm, kmt)", "qr = Relu (qm)\n    s = MatMul (qr, kmt)")
    model = build(text, SHAPES, VALUES)
    unmerged = InferShapes()(UnmergeHeadBatch()(build(text, SHAPES, VALUES)).model).model
    assert shape_constant(unmerged, "qm") == [-1, TOKENS, SIZE]
    assert shape_constant(unmerged, "km") == [-1, TOKENS, SIZE]
    assert shape_constant(unmerged, "am") == [-1, HEADS, TOKENS, TOKENS]
    assert shape_constant(unmerged, "vm") == [-1, HEADS, SIZE, TOKENS]
    np.testing.assert_array_equal(outputs(unmerged), outputs(model))


def test_a_group_joined_after_one_of_its_merges_was_read_elsewhere_stays_merged() -> None:
    # v's merged values are also an output (read as they are), before the MatMul by the
    # softmax joins v's group to the softmax's: neither may change shape.
    text = BLOCK.replace("=> (float[N, 4, 4] y)", "=> (float[N, 4, 4] y, float[M, 2, 4] vr)")
    text = text.replace("vmt = Transpose", "vr = Relu (vm)\n    vmt = Transpose")
    unmerged = UnmergeHeadBatch()(build(text, SHAPES, VALUES)).model
    assert shape_constant(unmerged, "vm") == [-1, SIZE, TOKENS]
    assert shape_constant(unmerged, "am") == [-1, TOKENS, TOKENS]
    assert shape_constant(unmerged, "qm") == [-1, HEADS, TOKENS, SIZE]  # a group apart


def test_a_per_head_bias_moves_before_the_head_split_bit_for_bit() -> None:
    model = block()
    result = BiasBeforeHeadSplit()(block())
    assert result.modified
    moved = InferShapes()(result.model).model
    producer = {node.output[0]: node for node in moved.graph.node}
    assert producer["q"].op_type == "Reshape"
    bias_add = producer[producer["q"].input[0]]
    assert bias_add.op_type == "Add" and bias_add.input[0] == "q0"
    bias = GraphIndex.build(moved).constants[bias_add.input[1]]
    np.testing.assert_array_equal(bias, GraphIndex.build(model).constants["b_q"].reshape(-1))
    np.testing.assert_array_equal(outputs(moved), outputs(model))


def test_keras_heads_and_tanh_gelu_neurons_are_scored_and_removed() -> None:
    model = normalised()
    points = {p.kind: p for p in find_score_points(model)}
    assert (points["head"].layer, points["head"].channels, points["head"].axis) == ("o", 2, 1)
    assert (points["neuron"].layer, points["neuron"].point) == ("h0", "hb")
    assert points["neuron"].channels == HIDDEN
    multipliers = {
        points["head"].layer: np.array([0.0, 1.3], np.float32),
        points["neuron"].layer: np.array([0, 0.7, 0, 0, 1.1, 0], np.float32),
    }
    scored = scored_model(model, list(points.values()), multipliers)
    result = shrink(scored)
    expected, actual = outputs(scored), outputs(result.model)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    constants = GraphIndex.build(model).constants
    head = [2, 3]  # head 1's features of q, k and v, and its rows of the output projection
    for node, weight in (("q0", "w_q"), ("k0", "w_k"), ("v0", "w_v")):
        np.testing.assert_array_equal(node_input(result.model, node, 1), constants[weight][:, head])
    np.testing.assert_array_equal(node_input(result.model, "p", 1), constants["w_o"][head])
    np.testing.assert_array_equal(node_input(result.model, "h0", 1), constants["w_1"][:, [1, 4]])
    np.testing.assert_array_equal(node_input(result.model, "m0", 1), constants["w_2"][[1, 4]])
    assert "Pow" in ops(result.model)  # GELU's cube, on the two kept neurons


LAYER_NORM = """
net (float[N, 4, 4] x) => (float[N, 1, 6] y) {
    h = MatMul (x, w)
    mean = GlobalAveragePool (h)
    d = Sub (h, mean)
    d2 = Mul (d, d)
    var = GlobalAveragePool (d2)
    ve = Add (var, epsilon)
    root = Sqrt (ve)
    inverse = Reciprocal (root)
    n = Mul (d, inverse)
    grid = Reshape (n, grid_shape)
    y = ReduceMean <axes = [1], keepdims = 1> (n)
}
"""


def test_tf2onnx_layer_norm_and_token_pooling_keep_the_features_last() -> None:
    # tf2onnx's LayerNorm: GlobalAveragePool of (N, T, D) averages D; the mean keeps the
    # feature axis, with size 1, so the normalised tokens keep theirs.
    values = {"epsilon": np.array(1e-6, np.float32), "grid_shape": _shape(-1, 2, 2, 6)}
    g = GraphIndex.build(build(LAYER_NORM, {"w": (DIM, 6)}, values))
    assert {name: g.axis[name] for name in ("h", "mean", "d", "var", "inverse", "n")} == {
        name: 2 for name in ("h", "mean", "d", "var", "inverse", "n")
    }
    assert (g.axis["grid"], g.width["grid"]) == (3, 6)  # tokens to a grid, features last
    assert (g.axis["y"], g.width["y"]) == (2, 6)  # pooled over the tokens
