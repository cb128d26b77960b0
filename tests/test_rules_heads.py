"""The attention rules on tiny ONNX-text graphs: heads split from packed and separate Q/K/V
projections, carried through transposes, splits and batched MatMuls, merged back into the
output projection; MLP neurons on tokens; whole branches folded to their bias."""

from __future__ import annotations

import numpy as np
import pytest
from rules_helpers import build, node_input, ops, rule_of, shape_of, shrunk, states

from chainx.channels.rules.channelwise import SoftmaxRule
from chainx.channels.rules.heads import (
    HeadMatMulRule,
    HeadMergeRule,
    HeadSplitRule,
    OffAxisRule,
    TransposeRule,
)
from chainx.channels.rules.mixing import GemmRule
from chainx.onnx.graph import GraphIndex
from chainx.onnx.passes.head_batch import UnmergeHeadBatch
from chainx.onnx.passes.infer_shapes import InferShapes
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points

TOKENS, DIM, HEADS, SIZE = 3, 4, 2, 2  # 2 heads of 2 features each, on 3 tokens

# timm's layout: one Linear for q, k and v, reshaped to (B, N, 3, H, Dh) and permuted.
PACKED = """
net (float[N, 3, 4] x) => (float[N, 3, 4] y) {
    t = LayerNormalization <axis = -1> (x, ln_scale, ln_bias)
    m = MatMul (t, w_qkv)
    p = Add (m, b_qkv)
    r = Reshape (p, split_shape)
    tr = Transpose <perm = [2, 0, 3, 1, 4]> (r)
    q0, k0, v0 = Split <axis = 0> (tr, thirds)
    q = Squeeze (q0, first)
    k = Squeeze (k0, first)
    v = Squeeze (v0, first)
    kt = Transpose <perm = [0, 1, 3, 2]> (k)
    s = MatMul (q, kt)
    a = Softmax <axis = -1> (s)
    o = MatMul (a, v)
    om = Mul (o, head_mask)
    ot = Transpose <perm = [0, 2, 1, 3]> (om)
    c = Reshape (ot, merge_shape)
    pm = MatMul (c, w_out)
    pb = Add (pm, b_out)
    y = Add (t, pb)
}
"""

# torchvision's dynamo layout: separate q, k and v Linears, each reshaped to (B, N, H, Dh).
SEPARATE = """
net (float[N, 3, 4] x) => (float[N, 3, 4] y) {
    t = LayerNormalization <axis = -1> (x, ln_scale, ln_bias)
    q1 = MatMul (t, w_q)
    k1 = MatMul (t, w_k)
    v1 = MatMul (t, w_v)
    q2 = Reshape (q1, heads_shape)
    k2 = Reshape (k1, heads_shape)
    v2 = Reshape (v1, heads_shape)
    q = Transpose <perm = [0, 2, 1, 3]> (q2)
    kt = Transpose <perm = [0, 2, 3, 1]> (k2)
    v = Transpose <perm = [0, 2, 1, 3]> (v2)
    s = MatMul (q, kt)
    a = Softmax <axis = -1> (s)
    o = MatMul (a, v)
    om = Mul (o, head_mask)
    ot = Transpose <perm = [0, 2, 1, 3]> (om)
    c = Reshape (ot, merge_shape)
    pm = MatMul (c, w_out)
    pb = Add (pm, b_out)
    y = Add (t, pb)
}
"""

MLP = """
net (float[N, 3, 4] x) => (float[N, 3, 4] y) {
    t = LayerNormalization <axis = -1> (x, ln_scale, ln_bias)
    f = MatMul (t, w_fc1)
    fb = Add (f, b_fc1)
    d = Div (fb, root2)
    e = Erf (d)
    e1 = Add (e, one)
    g0 = Mul (fb, e1)
    gelu = Mul (g0, half)
    gm = Mul (gelu, neuron_mask)
    h = MatMul (gm, w_fc2)
    hb = Add (h, b_fc2)
    y = Add (t, hb)
}
"""

SHAPES = {
    "ln_scale": (DIM,),
    "ln_bias": (DIM,),
    "w_qkv": (DIM, 3 * DIM),
    "b_qkv": (3 * DIM,),
    "w_q": (DIM, DIM),
    "w_k": (DIM, DIM),
    "w_v": (DIM, DIM),
    "w_out": (DIM, DIM),
    "b_out": (DIM,),
    "w_fc1": (DIM, 6),
    "b_fc1": (6,),
    "w_fc2": (6, DIM),
    "b_fc2": (DIM,),
}


def weight(model: object, name: str) -> np.ndarray:
    return GraphIndex.build(model).constants[name]


def head_mask(kept: list[int]) -> np.ndarray:
    value = np.zeros((1, HEADS, 1, 1), np.float32)
    value[0, kept, 0, 0] = [0.5 + i for i in range(len(kept))]
    return value


def attention(text: str, kept: list[int]) -> object:
    values = {
        "split_shape": np.array([0, TOKENS, 3, HEADS, SIZE], np.int64),
        "heads_shape": np.array([0, TOKENS, HEADS, SIZE], np.int64),
        "merge_shape": np.array([0, TOKENS, DIM], np.int64),
        "thirds": np.array([1, 1, 1], np.int64),
        "first": np.array([0], np.int64),
        "head_mask": head_mask(kept),
    }
    return build(text, SHAPES, values)


def test_channel_axes_follow_tokens_heads_and_back() -> None:
    g = GraphIndex.build(attention(PACKED, [1]))
    assert g.axis["x"] == 1  # the input's axis is a convention
    assert (g.axis["t"], g.width["t"]) == (2, DIM)
    assert (g.axis["p"], g.width["p"]) == (2, 3 * DIM)
    assert (g.axis["r"], g.width["r"]) == (3, HEADS)
    assert (g.axis["tr"], g.axis["q"], g.axis["kt"], g.axis["o"]) == (2, 1, 1, 1)
    assert (g.axis["ot"], g.axis["c"], g.width["c"]) == (2, 2, DIM)


def test_packed_qkv_rules_answer_for_each_op() -> None:
    model = attention(PACKED, [1])
    expected = {
        "r": HeadSplitRule,
        "tr": TransposeRule,
        "q0": OffAxisRule,
        "q": OffAxisRule,
        "kt": TransposeRule,
        "s": HeadMatMulRule,
        "a": SoftmaxRule,
        "o": HeadMatMulRule,
        "c": HeadMergeRule,
        "pm": GemmRule,
        "m": GemmRule,
    }
    for name, rule in expected.items():
        assert isinstance(rule_of(model, name), rule), name


@pytest.mark.parametrize("text", [PACKED, SEPARATE], ids=["packed", "separate"])
def test_a_removed_head_drops_its_qkv_rows_and_output_columns(text: str) -> None:
    model = attention(text, [1])
    st = states(model)
    np.testing.assert_array_equal(st.zero["om"], [True, False])
    np.testing.assert_array_equal(st.need["o"], [False, True])
    np.testing.assert_array_equal(st.need["s"], [False, True])
    result = shrunk(model)
    assert [op for _, op in result.frozen] == ["LayerNormalization"]
    # Head 1 keeps features 2 and 3 of each of q, k and v, and rows 2, 3 of the output.
    if text is PACKED:
        w_qkv = node_input(result.model, "m", 1)
        assert w_qkv.shape == (DIM, 3 * SIZE)
        np.testing.assert_array_equal(w_qkv, weight(model, "w_qkv")[:, [2, 3, 6, 7, 10, 11]])
        np.testing.assert_array_equal(node_input(result.model, "r", 1), [0, TOKENS, 3, 1, SIZE])
    else:
        for name, original in (("q1", "w_q"), ("k1", "w_k"), ("v1", "w_v")):
            sliced = node_input(result.model, name, 1)
            np.testing.assert_array_equal(sliced, weight(model, original)[:, [2, 3]])
    np.testing.assert_array_equal(node_input(result.model, "pm", 1), weight(model, "w_out")[[2, 3]])
    np.testing.assert_array_equal(node_input(result.model, "c", 1), [0, TOKENS, SIZE])
    assert shape_of(result.model, "o")[1] == 1


@pytest.mark.parametrize("text", [PACKED, SEPARATE], ids=["packed", "separate"])
def test_an_attention_without_heads_folds_to_its_output_bias(text: str) -> None:
    model = attention(text, [])
    result = shrunk(model)
    assert not {"MatMul", "Softmax", "Transpose"} & set(ops(result.model))
    assert [op for _, op in result.frozen] == ["LayerNormalization"]


def mlp(kept: list[int]) -> object:
    values = {
        "root2": np.array(np.sqrt(2), np.float32),
        "one": np.array(1, np.float32),
        "half": np.array(0.5, np.float32),
        "neuron_mask": np.isin(np.arange(6), kept).astype(np.float32).reshape(1, 1, 6),
    }
    return build(MLP, SHAPES, values)


def test_mlp_neurons_on_tokens_drop_their_fc1_columns_and_fc2_rows() -> None:
    model = mlp([1, 4])
    assert isinstance(rule_of(model, "f"), GemmRule)
    for name in ("fb", "d", "e", "e1", "g0", "gelu", "gm"):  # elementwise on the last axis
        assert not rule_of(model, name).frozen, name
    result = shrunk(model)
    assert [op for _, op in result.frozen] == ["LayerNormalization"]
    np.testing.assert_array_equal(
        node_input(result.model, "f", 1), weight(model, "w_fc1")[:, [1, 4]]
    )
    np.testing.assert_array_equal(node_input(result.model, "h", 1), weight(model, "w_fc2")[[1, 4]])


def test_an_mlp_without_neurons_folds_to_its_output_bias() -> None:
    result = shrunk(mlp([]))
    assert not {"MatMul", "Erf"} & set(ops(result.model))


def test_score_points_are_heads_and_mlp_neurons() -> None:
    points = find_score_points(attention(PACKED, [0, 1]))
    assert [(p.layer, p.point, p.channels, p.axis, p.shape) for p in points] == [
        ("o", "o", HEADS, 1, [1, HEADS, 1, 1])
    ]
    points = find_score_points(mlp(list(range(6))))
    assert [(p.layer, p.point, p.channels, p.axis, p.shape) for p in points] == [
        ("f", "fb", 6, 2, [1, 1, 6])
    ]


# nn.MultiheadAttention through the TorchScript exporter, with a free batch: tokens first,
# the heads merged into the batch while Q·Kᵀ runs, the rows (tokens × batch) merged for the
# output projection.
SEQUENCE_FIRST = """
net (float[N, 3, 4] x) => (float[N, 3, 4] y) {
    t = LayerNormalization <axis = -1> (x, ln_scale, ln_bias)
    s0 = Transpose <perm = [1, 0, 2]> (t)
    q1 = MatMul (s0, w_q)
    k1 = MatMul (s0, w_k)
    v1 = MatMul (s0, w_v)
    q2 = Reshape (q1, merged)
    k2 = Reshape (k1, merged)
    v2 = Reshape (v1, merged)
    q3 = Transpose <perm = [1, 0, 2]> (q2)
    k3 = Transpose <perm = [1, 0, 2]> (k2)
    v3 = Transpose <perm = [1, 0, 2]> (v2)
    q = Reshape (q3, split)
    k = Reshape (k3, split)
    v = Reshape (v3, split)
    kt = Transpose <perm = [0, 1, 3, 2]> (k)
    s = MatMul (q, kt)
    a = Softmax <axis = -1> (s)
    o = MatMul (a, v)
    om = Mul (o, head_mask)
    ot = Transpose <perm = [2, 0, 1, 3]> (om)
    c = Reshape (ot, rows)
    pm = MatMul (c, w_out)
    pb = Add (pm, b_out)
    back = Reshape (pb, tokens_first)
    bt = Transpose <perm = [1, 0, 2]> (back)
    y = Add (t, bt)
}
"""


def test_heads_merged_into_a_free_batch_behind_the_tokens_are_removed() -> None:
    values = {
        "merged": np.array([TOKENS, -1, SIZE], np.int64),
        "split": np.array([-1, HEADS, TOKENS, SIZE], np.int64),
        "rows": np.array([-1, DIM], np.int64),
        "tokens_first": np.array([TOKENS, -1, DIM], np.int64),
        "head_mask": head_mask([1]),
    }
    merged = build(SEQUENCE_FIRST, SHAPES, values)
    unmerged = UnmergeHeadBatch()(merged)
    assert unmerged.modified
    model = InferShapes()(unmerged.model).model
    assert isinstance(rule_of(model, "q2"), HeadSplitRule)
    assert isinstance(rule_of(model, "c"), HeadMergeRule)
    result = shrunk(model)  # exact against the merged form's outputs too, below
    assert [op for _, op in result.frozen] == ["LayerNormalization"]
    for name, original in (("q1", "w_q"), ("k1", "w_k"), ("v1", "w_v")):
        np.testing.assert_array_equal(
            node_input(result.model, name, 1), weight(model, original)[:, [2, 3]]
        )
    np.testing.assert_array_equal(node_input(result.model, "pm", 1), weight(model, "w_out")[[2, 3]])
    x = np.random.default_rng(0).standard_normal((2, TOKENS, DIM)).astype(np.float32)
    np.testing.assert_allclose(run(session(model), x), run(session(merged), x), rtol=1e-6)
