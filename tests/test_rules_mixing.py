"""Per-rule unit tests of the mixing rules: BinaryRule (Add, Sub, Mul, Div), ConvRule
(dense, depthwise, grouped) and GemmRule (Gemm with and without transB, MatMul)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper
from rules_helpers import (
    SHIFT,
    SHIFTED,
    ZERO,
    build,
    channel_values,
    mask,
    masked,
    node,
    node_input,
    ops,
    rule_of,
    shape_of,
    shrunk,
    states,
)

from chainx.channels.rules.base import FROZEN
from chainx.channels.rules.mixing import BinaryRule, ConvRule, GemmRule

RNG = np.random.default_rng(7)


def weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def flags(width: int, true: list[int]) -> np.ndarray:
    out = np.zeros(width, bool)
    out[true] = True
    return out


# ---------------------------------------------------------------- BinaryRule

TWO_BRANCHES = """
net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {{
    c1 = Conv (x, w1, b1)
    c2 = Conv (x, w2, b2)
    a = Mul (c1, mask_a)
    b = Mul (c2, mask_b)
    s = {op} (a, b)
    y = Conv (s, w3, b3)
}}
"""
BRANCH_SHAPES = {
    "w1": (5, 3, 1, 1),
    "b1": (5,),
    "w2": (5, 3, 1, 1),
    "b2": (5,),
    "w3": (2, 5, 1, 1),
    "b3": (2,),
}


@pytest.mark.parametrize(
    ("op", "zero", "columns"),
    [("Add", [3], 4), ("Sub", [3], 4), ("Mul", [1, 3, 4], 2)],
)
def test_binary_of_two_activations(op: str, zero: list[int], columns: int) -> None:
    """Branch a is zero on 1 and 3, branch b on 3 and 4: Add and Sub are zero where both
    are, Mul where either is."""
    values = {"mask_a": mask(5, [1, 3]), "mask_b": mask(5, [3, 4])}
    model = build(TWO_BRANCHES.format(op=op), BRANCH_SHAPES, values)
    assert isinstance(rule_of(model, "s"), BinaryRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["s"], flags(5, zero))
    if op == "Mul":
        # A product needs neither factor where the other is zero.
        np.testing.assert_array_equal(s.need["a"], flags(5, [0, 1, 2]))
        np.testing.assert_array_equal(s.need["b"], flags(5, [0, 2, 4]))
    else:
        assert s.need["a"].all() and s.need["b"].all()
    result = shrunk(model)
    assert node_input(result.model, "y", 1).shape[1] == columns
    kept = 2 if op == "Mul" else 3  # filters of each branch that are needed and not zero
    assert node_input(result.model, "c1", 1).shape[0] == kept
    assert node_input(result.model, "c2", 1).shape[0] == kept
    if op != "Mul":
        # Branch a lacks channel 1 that b carries: it is filled with zeros where they meet.
        assert {"Pad", "Gather"} & set(ops(result.model))


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("Add", [np.nan, 1.5, np.nan, -2.0, 0.0]),
        ("Sub", [np.nan, -1.5, np.nan, 2.0, 0.0]),
        ("Mul", [np.nan, 0.0, 0.0, 0.0, 0.0]),
        ("Div", None),  # v holds zeros: frozen
    ],
)
def test_binary_with_a_per_channel_constant(op: str, expected: list[float] | None) -> None:
    """m is zero on 1, 3 and 4; v = [0.5, 1.5, 0, -2, 0]."""
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        r = {op} (m, v)
        y = Conv (r, w1, b1)
    }}
    """
    values = {"mask": mask(5, [1, 3, 4]), "v": channel_values([0.5, 1.5, 0, -2, 0])}
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}, values)
    if expected is None:
        assert rule_of(model, "r") is FROZEN
        return
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], np.asarray(expected) == 0)
    np.testing.assert_allclose(s.const["r"], expected)
    result = shrunk(model)
    live = int(np.isnan(expected).sum())
    # The operator computes the live channels only, with v sliced alike.
    assert shape_of(result.model, "r")[1] == live
    assert node_input(result.model, "r", 1).shape == (1, live, 1, 1)
    assert node_input(result.model, "y", 1).shape[1] == live


def test_div_by_a_non_zero_per_channel_constant() -> None:
    model = masked("r = Div (k, v)", values={"v": channel_values([2, 4, 0.5, -4, 1])})
    assert isinstance(rule_of(model, "r"), BinaryRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(5, [ZERO]))
    assert s.const["r"][SHIFTED] == -0.5
    result = shrunk(model)
    np.testing.assert_array_equal(node_input(result.model, "r", 1).ravel(), [2, 0.5, 1])


def test_mul_by_a_scalar_keeps_its_scalar() -> None:
    model = masked("r = Mul (k, two)", values={"two": np.array(2.0, np.float32)})
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(5, [ZERO]))
    assert s.const["r"][SHIFTED] == 2 * SHIFT
    result = shrunk(model)
    assert node_input(result.model, "r", 1).shape == ()
    assert shape_of(result.model, "r")[1] == 3


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("r = Mul (k, v)", {"v": RNG.uniform(1, 2, (1, 5, 4, 4))}),  # varies in space
        ("r = Div (v, e)", {"v": channel_values([1, 2, 3, 4, 5])}),  # constant numerator
        ("r = Add (k, side)", {}),  # broadcasts a one-channel activation
    ],
)
def test_binary_rule_refuses_what_is_not_per_channel(line: str, values: dict) -> None:
    lines = f"side = ReduceMean <axes = [1]> (k)\n        e = Exp (k)\n        {line}"
    model = masked(lines, values=values)
    assert rule_of(model, "r") is FROZEN
    result = shrunk(model)
    assert ("r", node(model, "r").op_type) in result.frozen
    # Its activation inputs arrive whole: every channel, in the original order.
    original = [name for name in node(model, "r").input if name in ("k", "e", "side")]
    emitted = node(result.model, "r").input
    for before, after in zip(original, [n for n in emitted if n not in values], strict=True):
        assert shape_of(result.model, after)[1] == shape_of(model, before)[1]


def test_se_gate_is_zero_where_the_gate_is_zero() -> None:
    """x · gate, the gate one value per channel (N, C, 1, 1): a zero gate channel needs no x."""
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c = Conv (x, w0, b0)
        p = GlobalAveragePool (c)
        e = Conv (p, we, be)
        g = Mul (e, mask)
        s = Sigmoid (g)
        h = Mul (g, s)
        r = Mul (c, h)
        y = Conv (r, w1, b1)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "we": (5, 5, 1, 1), "be": (5,)}
    shapes |= {"w1": (2, 5, 1, 1), "b1": (2,)}
    model = build(text, shapes, {"mask": mask(5, [2])})
    assert isinstance(rule_of(model, "r"), BinaryRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(5, [2]))
    np.testing.assert_array_equal(s.need["e"], ~flags(5, [2]))
    assert s.need["c"].all()  # the squeeze reads every channel of c
    result = shrunk(model)
    assert node_input(result.model, "e", 1).shape == (4, 5, 1, 1)
    assert shape_of(result.model, "r")[1] == 4
    assert node_input(result.model, "y", 1).shape == (2, 4, 1, 1)


def test_residual_add_of_a_dead_branch_is_the_identity() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c1 = Conv (x, w1, b1)
        c2 = Conv (x, w2, b2)
        a = Mul (c1, dead)
        b = Mul (c2, mask_b)
        s = Add (b, a)
        y = Conv (s, w3, b3)
    }
    """
    values = {"dead": mask(5, [0, 1, 2, 3, 4]), "mask_b": mask(5, [3])}
    model = build(text, BRANCH_SHAPES, values)
    assert states(model).is_dead(node(model, "c1"))
    result = shrunk(model)
    names = {n.name for n in result.model.graph.node}
    assert "c1" not in names and "s" not in names and "a" not in names
    assert node_input(result.model, "y", 1).shape == (2, 4, 1, 1)


def test_add_carries_no_channel_that_is_constant_at_its_output() -> None:
    """Channel 3 is 2 + 0 on both branches: a constant, folded by the 1×1 consumer."""
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c1 = Conv (x, w1, b1)
        c2 = Conv (x, w2, b2)
        a = Mul (c1, mask_a)
        k = Add (a, shift)
        b = Mul (c2, mask_b)
        s = Add (k, b)
        y = Conv (s, w3, b3)
    }
    """
    values = {
        "mask_a": mask(5, [3]),
        "mask_b": mask(5, [3]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
    }
    model = build(text, BRANCH_SHAPES, values)
    assert states(model).const["s"][3] == SHIFT
    result = shrunk(model)
    assert shape_of(result.model, "s")[1] == 4
    assert node_input(result.model, "y", 1).shape == (2, 4, 1, 1)


# ---------------------------------------------------------------- ConvRule: dense

DENSE = """
net (float[N, 3, 6, 6] x) => (float[N, 2, 6, 6] y) {
    c = Conv <pads = [1, 1, 1, 1]> (x, w0, b0)
    r = Relu (c)
    y = Conv <pads = [1, 1, 1, 1]> (r, w1, b1)
}
"""


def dense(w0: np.ndarray, b0: np.ndarray, w1: np.ndarray | None = None) -> object:
    values = {"w0": w0, "b0": b0, "w1": weights(2, 5, 3, 3) if w1 is None else w1}
    return build(DENSE, {"b1": (2,)}, values)


def test_conv_filters_with_zero_weights_and_bias_are_zero_and_removed() -> None:
    w0, b0 = weights(5, 3, 3, 3), weights(5)
    w0[[1, 3]] = 0
    b0[[1, 3]] = 0
    w0[4] = 0  # zero weights, but a bias: the constant b0[4], not zero
    b0[4] = abs(b0[4]) + 0.5  # positive, so that it passes the Relu
    model = dense(w0, b0)
    assert isinstance(rule_of(model, "c"), ConvRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["c"], flags(5, [1, 3]))
    np.testing.assert_array_equal(s.const["c"][[1, 3, 4]], [0, 0, b0[4]])
    assert np.isnan(s.const["c"][[0, 2]]).all()
    result = shrunk(model)
    chain_w0 = node_input(result.model, "c", 1)
    np.testing.assert_array_equal(chain_w0, w0[[0, 2]])  # bit-identical rows
    np.testing.assert_array_equal(node_input(result.model, "c", 2), b0[[0, 2]])
    # The padded 3×3 conv after it reads the constant channel, carried as a constant.
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 2, 4]]
    )
    recorded = {(piece.node, piece.original): piece.axes for piece in result.slices}
    assert recorded[("c", "w0")] == ([0, 2], [0, 1, 2])
    assert recorded[("y", "w1")] == ([0, 1], [0, 2, 4])


def test_conv_filter_reading_only_zero_channels_is_zero() -> None:
    """Filter 0 of y reads only input channels 1 and 3 (zero) and has no bias: zero."""
    w0, b0 = weights(5, 3, 3, 3), weights(5)
    w0[[1, 3]] = 0
    b0[[1, 3]] = 0
    text = DENSE.replace("y = Conv <pads = [1, 1, 1, 1]> (r, w1, b1)", "y = Conv (r, w1)")
    text = text.replace("=> (float[N, 2, 6, 6] y)", "=> (float[N, 2, 4, 4] y)")
    w1 = weights(2, 5, 3, 3)
    w1[0, [0, 2, 4]] = 0
    model = build(text, {}, {"w0": w0, "b0": b0, "w1": w1})
    np.testing.assert_array_equal(states(model).zero["y"], [True, False])
    shrunk(model)


def test_conv_needs_only_input_channels_its_needed_filters_read() -> None:
    """No filter of y reads channel 2 of r: filter 2 of c is not needed, and goes."""
    w1 = weights(2, 5, 3, 3)
    w1[:, 2] = 0
    model = dense(weights(5, 3, 3, 3), weights(5), w1)
    s = states(model)
    np.testing.assert_array_equal(s.need["c"], ~flags(5, [2]))
    assert not s.zero["c"].any()
    result = shrunk(model)
    assert node_input(result.model, "c", 1).shape == (4, 3, 3, 3)
    assert node_input(result.model, "y", 1).shape == (2, 4, 3, 3)


@pytest.mark.parametrize(
    ("consumer", "folds"),
    [("Conv", True), ("Conv <pads = [1, 1, 1, 1]>", False), ("Conv <strides = [2, 2]>", True)],
)
def test_pointwise_conv_folds_constant_inputs_into_its_bias(consumer: str, folds: bool) -> None:
    model = masked("r = Identity (k)", consumer=consumer, kernel=1)
    result = shrunk(model)
    assert node_input(result.model, "y", 1).shape == (2, 3 if folds else 4, 1, 1)
    if folds:
        expected = node_input(model, "y", 2) + SHIFT * node_input(model, "y", 1)[:, 3, 0, 0]
        np.testing.assert_allclose(node_input(result.model, "y", 2), expected, rtol=1e-6)


def test_pointwise_conv_whose_every_input_is_a_folded_constant_counts_each_once() -> None:
    # Every channel of k is removed and shifted, channel 0 too: all fold into y's bias, and
    # the one channel y still reads to stay well-formed must be zero, not channel 0's
    # constant again (MobileNetV3-Large's projection after a removed SE block).
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        y = Conv (k, w1, b1)
    }
    """
    values = {"mask": mask(5, [0, 1, 2, 3, 4]), "shift": channel_values([1.5, -2, 0, 3, 0.5])}
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}, values)
    result = shrunk(model)  # the outputs agree
    expected = node_input(model, "y", 2) + node_input(model, "y", 1)[:, :, 0, 0] @ [
        1.5,
        -2,
        0,
        3,
        0.5,
    ]
    np.testing.assert_allclose(node_input(result.model, "y", 2), expected, rtol=1e-6)


def test_gemm_whose_every_input_is_a_folded_constant_counts_each_once() -> None:
    values = {"mask": mask(5, [0, 1, 2, 3, 4], rank=2), "shift": channel_values([2, 1, 0, 3, 1], 2)}
    model = features("y = Gemm <transB = 1> (k, w, b)", {"w": (4, 5), "b": (4,)}, values)
    result = shrunk(model)
    expected = node_input(model, "y", 2) + node_input(model, "y", 1) @ [2, 1, 0, 3, 1]
    np.testing.assert_allclose(node_input(result.model, "y", 2), expected, rtol=1e-6)


def test_pointwise_conv_without_bias_gets_one_for_folded_constants() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        y = Conv (k, w1)
    }
    """
    values = {"mask": mask(5, [1, 3]), "shift": channel_values([0, 0, 0, SHIFT, 0])}
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1)}, values)
    result = shrunk(model)
    conv = node(result.model, "y")
    assert len(conv.input) == 3
    np.testing.assert_allclose(
        node_input(result.model, "y", 2), SHIFT * node_input(model, "y", 1)[:, 3, 0, 0], rtol=1e-6
    )


def test_conv_whose_every_input_is_zero_outputs_its_bias_without_a_conv() -> None:
    text = DENSE.replace("r = Relu (c)", "r = Mul (c, dead)")
    model = build(
        text,
        {"w0": (5, 3, 3, 3), "b0": (5,), "w1": (2, 5, 3, 3), "b1": (2,)},
        {"dead": mask(5, [0, 1, 2, 3, 4])},
    )
    assert states(model).zero["r"].all()
    result = shrunk(model)
    assert "Conv" not in ops(result.model)  # y is its bias at every pixel
    assert "ConstantOfShape" in ops(result.model)  # of the batch's size


# ---------------------------------------------------------------- ConvRule: depthwise


def depthwise(bias: bool) -> object:
    text = f"""
    net (float[N, 3, 6, 6] x) => (float[N, 2, 6, 6] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        d = Conv <group = 5, pads = [1, 1, 1, 1]> (m, wd{", bd" if bias else ""})
        y = Conv (d, w1, b1)
    }}
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "wd": (5, 1, 3, 3), "bd": (5,)}
    return build(text, shapes | {"w1": (2, 5, 1, 1), "b1": (2,)}, {"mask": mask(5, [1, 3])})


def test_depthwise_conv_couples_each_filter_to_its_channel() -> None:
    model = depthwise(bias=False)
    assert isinstance(rule_of(model, "d"), ConvRule)
    np.testing.assert_array_equal(states(model).zero["d"], flags(5, [1, 3]))
    result = shrunk(model)
    conv = node(result.model, "d")
    assert {a.name: a.i for a in conv.attribute}["group"] == 3
    np.testing.assert_array_equal(
        node_input(result.model, "d", 1), node_input(model, "d", 1)[[0, 2, 4]]
    )
    assert node_input(result.model, "c", 1).shape[0] == 3


def test_depthwise_filters_of_zero_channels_output_their_bias() -> None:
    """A zero channel through a depthwise filter with a bias is not zero but the bias at
    every pixel (zero padding adds zeros too): a constant, folded into the 1×1 conv after
    it, so the filter and its zero channel go."""
    model = depthwise(bias=True)
    st = states(model)
    assert not st.zero["d"].any()
    zero_channels = np.flatnonzero(st.zero["m"])
    assert len(zero_channels) == 2
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "bd"))
    np.testing.assert_array_equal(st.const["d"][zero_channels], bias[zero_channels])
    result = shrunk(model)
    assert node_input(result.model, "d", 1).shape == (3, 1, 3, 3)
    assert node_input(result.model, "c", 1).shape[0] == 3
    assert shape_of(result.model, node(result.model, "d").input[0])[1] == 3
    assert not {"Pad", "Gather"} & set(ops(result.model))


# ---------------------------------------------------------------- ConvRule: grouped


def grouped(input_zero: list[int], output_zero: list[int]) -> object:
    """6 → 6 channels in 2 groups of 3; the input and output masked."""
    text = """
    net (float[N, 3, 6, 6] x) => (float[N, 2, 6, 6] y) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask_in)
        g = Conv <group = 2, pads = [1, 1, 1, 1]> (m, wg)
        o = Mul (g, mask_out)
        y = Conv (o, w1, b1)
    }
    """
    shapes = {"w0": (6, 3, 1, 1), "b0": (6,), "wg": (6, 3, 3, 3), "w1": (2, 6, 1, 1), "b1": (2,)}
    values = {"mask_in": mask(6, input_zero), "mask_out": mask(6, output_zero)}
    return build(text, shapes, values)


def group_of(model) -> int:
    return {a.name: a.i for a in node(model, "g").attribute}["group"]


def test_grouped_conv_drops_a_group_none_of_whose_filters_is_needed() -> None:
    model = grouped([], [3, 4, 5])
    np.testing.assert_array_equal(states(model).need["m"], flags(6, [0, 1, 2]))
    result = shrunk(model)
    assert group_of(result.model) == 1
    np.testing.assert_array_equal(node_input(result.model, "g", 1), node_input(model, "g", 1)[:3])
    assert node_input(result.model, "c", 1).shape[0] == 3


def test_grouped_conv_with_uneven_filters_pads_each_group_to_the_largest() -> None:
    """Group 0 keeps filters 0 and 2, group 1 only 5: group 1 carries 3 too."""
    model = grouped([], [1, 3, 4])
    result = shrunk(model)
    assert group_of(result.model) == 2
    np.testing.assert_array_equal(
        node_input(result.model, "g", 1), node_input(model, "g", 1)[[0, 2, 3, 5]]
    )
    assert node_input(result.model, "y", 1).shape == (2, 3, 1, 1)


@pytest.mark.parametrize(("input_zero", "columns"), [([1, 4], [0, 2]), ([1], [0, 1, 2])])
def test_grouped_conv_keeps_the_union_of_input_channels_over_groups(
    input_zero: list[int], columns: list[int]
) -> None:
    """Each kept group reads the same local input channels: their union over groups."""
    model = grouped(input_zero, [])
    np.testing.assert_array_equal(states(model).zero["m"], flags(6, input_zero))
    result = shrunk(model)
    assert group_of(result.model) == 2
    np.testing.assert_array_equal(
        node_input(result.model, "g", 1), node_input(model, "g", 1)[:, columns]
    )
    assert node_input(result.model, "c", 1).shape[0] == 6 - len(input_zero)


# ---------------------------------------------------------------- GemmRule


def features(line: str, shapes: dict, values: dict | None = None, out: int = 4) -> object:
    """x → Conv (5) → GlobalAveragePool → Flatten `f` (N, 5) → Mul by a mask zero on 1 and 3
    → Add 2 on feature 3 `k` → `line` (reads k, writes y)."""
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[N, {out}] y) {{
        c = Conv (x, w0, b0)
        p = GlobalAveragePool (c)
        f = Flatten (p)
        m = Mul (f, mask)
        k = Add (m, shift)
        {line}
    }}
    """
    base = {
        "mask": mask(5, [ZERO, SHIFTED], rank=2),
        "shift": channel_values([0, 0, 0, SHIFT, 0], 2),
    }
    return build(text, {"w0": (5, 3, 1, 1), "b0": (5,)} | shapes, base | (values or {}))


@pytest.mark.parametrize(
    ("line", "shapes", "columns_axis"),
    [
        ("y = Gemm <transB = 1> (k, w, b)", {"w": (4, 5), "b": (4,)}, 1),
        ("y = Gemm (k, w, b)", {"w": (5, 4), "b": (4,)}, 0),
        ("y = Gemm <transB = 1> (k, w, b)", {"w": (4, 5), "b": (1, 4)}, 1),
    ],
)
def test_gemm_drops_zero_features_and_folds_constant_ones(
    line: str, shapes: dict, columns_axis: int
) -> None:
    model = features(line, shapes)
    assert isinstance(rule_of(model, "y"), GemmRule)
    result = shrunk(model)
    weight, original = node_input(result.model, "y", 1), node_input(model, "y", 1)
    np.testing.assert_array_equal(weight, np.take(original, [0, 2, 4], axis=columns_axis))
    matrix = original if columns_axis == 1 else original.T
    bias = node_input(model, "y", 2).ravel() + SHIFT * matrix[:, SHIFTED]
    np.testing.assert_allclose(node_input(result.model, "y", 2).ravel(), bias, rtol=1e-6)


@pytest.mark.parametrize(
    "line",
    [
        "y = Gemm <transB = 1, alpha = 2.0> (k, w, b)",
        "y = Gemm <transB = 1, beta = 0.5> (k, w, b)",
        "y = MatMul (k, wt)",
    ],
)
def test_gemm_that_cannot_fold_carries_constant_features(line: str) -> None:
    model = features(line, {"w": (4, 5), "b": (4,), "wt": (5, 4)})
    assert isinstance(rule_of(model, "y"), GemmRule)
    result = shrunk(model)
    weight = node_input(result.model, "y", 1)
    assert weight.shape == (4, 4)
    kept = [0, 2, 3, 4]  # the live features and the constant one; not the zero one
    original = node_input(model, "y", 1)
    np.testing.assert_array_equal(weight, original[:, kept] if "Gemm" in line else original[kept])


def test_gemm_without_bias_gets_one_for_folded_features() -> None:
    model = features("y = Gemm <transB = 1> (k, w)", {"w": (4, 5)})
    result = shrunk(model)
    assert len(node(result.model, "y").input) == 3
    expected = SHIFT * node_input(model, "y", 1)[:, SHIFTED]
    np.testing.assert_allclose(node_input(result.model, "y", 2), expected, rtol=1e-6)


def test_hidden_gemm_units_that_are_zero_or_unneeded_go() -> None:
    """A hidden Gemm whose unit 0 has zero weights and bias (zero), unit 5 masked after it."""
    w, b = weights(5, 6), weights(6)
    w[:, 0] = 0
    b[0] = 0
    text = """
    h = Gemm (k, w, b)
        hm = Mul (h, mask_h)
        r = Relu (hm)
        y = MatMul (r, w2)
    """
    model = features(text, {"w2": (6, 4)}, {"w": w, "b": b, "mask_h": mask(6, [5], rank=2)})
    s = states(model)
    np.testing.assert_array_equal(s.zero["h"], flags(6, [0]))
    np.testing.assert_array_equal(s.need["h"], ~flags(6, [5]))
    result = shrunk(model)
    np.testing.assert_array_equal(
        node_input(result.model, "h", 1), w[np.ix_([0, 2, 4], [1, 2, 3, 4])]
    )
    np.testing.assert_array_equal(node_input(result.model, "y", 1).shape, (4, 4))


def test_gemm_with_a_transposed_input_is_frozen() -> None:
    model = features(
        "kt = Transpose (k)\n        y = Gemm <transA = 1> (kt, w, b)", {"w": (5, 4), "b": (4,)}
    )
    assert rule_of(model, "y") is FROZEN
    result = shrunk(model)
    np.testing.assert_array_equal(node_input(result.model, "y", 1), node_input(model, "y", 1))


def test_matmul_on_a_spatial_map_is_frozen() -> None:
    model = masked("r = MatMul (k, wm)", shapes={"wm": (4, 4)})
    assert rule_of(model, "r") is FROZEN
    result = shrunk(model)
    assert ("r", "MatMul") in result.frozen
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5
