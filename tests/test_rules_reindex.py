"""Per-rule unit tests of the rules that move channels: Pad, Slice, Gather, Split, Concat,
Flatten/Reshape and Shape."""

from __future__ import annotations

import numpy as np
import pytest
from rules_helpers import (
    SHIFT,
    build,
    channel_values,
    constant,
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
from chainx.channels.rules.heads import OffAxisRule
from chainx.channels.rules.reindex import (
    ConcatRule,
    GatherRule,
    PadRule,
    ShapeRule,
    SliceRule,
    SplitRule,
)
from chainx.channels.rules.reshape import FlattenRule, UnitReshapeRule

BIG = np.iinfo(np.int64).max


def flags(width: int, true: list[int]) -> np.ndarray:
    out = np.zeros(width, bool)
    out[true] = True
    return out


def names(model) -> set[str]:
    return {n.name for n in model.graph.node}


# ---------------------------------------------------------------- Pad


def padded(pads: list[int], width: int, extra: str = "", values: dict | None = None, **kw):
    """`masked` (k: channel 1 zero, channel 3 the constant 2) through Pad (k, pads…)."""
    return masked(
        f"r = Pad {extra} (k, pads)",
        width=width,
        values={"pads": np.array(pads, np.int64)} | (values or {}),
        **kw,
    )


def test_channel_pad_shifts_channels_and_adds_zero_ones() -> None:
    """Option A: two zero channels before, one after; no spatial padding."""
    model = padded([0, 2, 0, 0, 0, 1, 0, 0], width=8)
    assert isinstance(rule_of(model, "r"), PadRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(8, [0, 1, 3, 7]))
    np.testing.assert_array_equal(s.const["r"][[0, 1, 3, 5, 7]], [0, 0, 0, SHIFT, 0])
    result = shrunk(model)
    # Only indices move: no Pad node of its own; the padded 3×3 consumer reads the live
    # channels and carries the constant one.
    assert "r" not in names(result.model)
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [2, 4, 5, 6]]
    )


def test_channel_pad_needs_only_the_channels_it_shifts() -> None:
    w1 = np.random.default_rng(3).standard_normal((2, 8, 1, 1)).astype(np.float32)
    w1[:, 4] = 0  # nothing reads padded channel 4, that is input channel 2
    model = padded([0, 2, 0, 0, 0, 1, 0, 0], width=8, consumer="Conv", values={"w1": w1})
    np.testing.assert_array_equal(states(model).need["k"], ~flags(5, [2]))
    result = shrunk(model)
    assert node_input(result.model, "c", 1).shape[0] == 2  # filters 0 and 4


def test_spatial_pad_keeps_zeros_but_makes_constants_vary() -> None:
    model = padded([0, 0, 1, 1, 0, 0, 1, 1], width=5, consumer="Conv", kernel=1)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(5, [1]))
    assert np.isnan(s.const["r"][3])  # 2 inside, 0 on the border
    result = shrunk(model)
    assert node(result.model, "r").op_type == "Pad"
    assert shape_of(result.model, "r")[1:] == [4, 6, 6]  # live channels and channel 3
    assert node_input(result.model, "y", 1).shape == (2, 4, 1, 1)


def test_channel_and_spatial_pad_keeps_only_the_spatial_part() -> None:
    model = padded([0, 1, 1, 1, 0, 1, 1, 1], width=7, consumer="Conv", kernel=1)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], flags(7, [0, 2, 6]))
    result = shrunk(model)
    np.testing.assert_array_equal(node_input(result.model, "r", 1), [0, 0, 1, 1, 0, 0, 1, 1])
    assert shape_of(result.model, "r")[1] == 4


def test_pad_with_axes_pads_the_named_axis() -> None:
    model = masked(
        "r = Pad (k, pads, , axes)",
        width=8,
        values={"pads": np.array([1, 2], np.int64), "axes": np.array([1], np.int64)},
        opset=18,
    )
    np.testing.assert_array_equal(states(model).zero["r"], flags(8, [0, 2, 6, 7]))
    shrunk(model)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_reflect_or_edge_pad_of_spatial_axes_keeps_zeros(mode: str) -> None:
    model = padded([0, 0, 1, 1, 0, 0, 1, 1], width=5, extra=f'<mode = "{mode}">')
    assert isinstance(rule_of(model, "r"), PadRule)
    np.testing.assert_array_equal(states(model).zero["r"], flags(5, [1]))
    result = shrunk(model)
    assert node_input(result.model, "y", 1).shape[1] == 4


@pytest.mark.parametrize(
    ("pads", "extra", "width"),
    [
        ([0, 1, 0, 0, 0, 1, 0, 0], '<mode = "reflect">', 7),  # reflects channels
        ([0, 0, 1, 1, 0, 0, -1, -1], "", 5),  # crops
    ],
)
def test_pad_rule_refuses_channel_reflection_and_cropping(
    pads: list[int], extra: str, width: int
) -> None:
    model = padded(pads, width=width, extra=extra)
    assert rule_of(model, "r") is FROZEN
    result = shrunk(model)
    assert ("r", "Pad") in result.frozen
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5


def test_pad_of_channels_with_a_non_zero_value_is_frozen() -> None:
    model = masked(
        "r = Pad (k, pads, one)",
        width=7,
        values={"pads": np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64), "one": np.float32(1)},
    )
    assert rule_of(model, "r") is FROZEN
    shrunk(model)


def test_spatial_pad_with_a_non_zero_value_does_not_keep_zeros() -> None:
    model = masked(
        "r = Pad (k, pads, one)",
        consumer="Conv",
        kernel=1,
        values={"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "one": np.float32(1)},
    )
    assert not states(model).zero["r"][1]
    shrunk(model)


# ---------------------------------------------------------------- Slice and Gather

SIX = """
net (float[N, 3, 6, 6] x) => (float[N, 2, H, W] y) {{
    c = Conv (x, w0, b0)
    m = Mul (c, mask)
    {line}
    y = Conv (s, w1, b1)
}}
"""


def six(line: str, width: int, zero: list[int], values: dict | None = None, opset: int = 17):
    """c has 6 filters, masked to zero on `zero`; `line` reads m and writes s (`width`)."""
    shapes = {"w0": (6, 3, 1, 1), "b0": (6,), "w1": (2, width, 1, 1), "b1": (2,)}
    return build(
        SIX.format(line=line), shapes, {"mask": mask(6, zero)} | (values or {}), opset=opset
    )


INT_MAX = 2**31 - 1


def slice_values(starts, ends, axes, steps=None) -> dict:
    values = {
        "starts": np.array(starts, np.int64),
        "ends": np.array(ends, np.int64),
        "axes": np.array(axes, np.int64),
    }
    if steps is not None:
        values["steps"] = np.array(steps, np.int64)
    return values


def test_slice_of_channels_selects_a_strided_range() -> None:
    """Channels 1, 3, 5 of m, whose channel 3 is zero."""
    model = six(
        "s = Slice (m, starts, ends, axes, steps)", 3, [3], slice_values([1], [6], [1], [2])
    )
    assert isinstance(rule_of(model, "s"), SliceRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["s"], flags(3, [1]))
    np.testing.assert_array_equal(st.need["m"], flags(6, [1, 3, 5]))
    result = shrunk(model)
    assert "s" not in names(result.model) and "Slice" not in ops(result.model)
    np.testing.assert_array_equal(
        node_input(result.model, "c", 1), node_input(model, "c", 1)[[1, 5]]
    )
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 2]]
    )


def test_slice_with_a_negative_step_walks_channels_backwards() -> None:
    """Channels 4, 3, 2, 1 of m, whose channels 1 and 2 are zero."""
    model = six(
        "s = Slice (m, starts, ends, axes, steps)",
        4,
        [1, 2],
        slice_values([-2], [0], [1], [-1]),
    )
    np.testing.assert_array_equal(states(model).zero["s"], flags(4, [2, 3]))
    result = shrunk(model)
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 1]]
    )


def test_slice_that_reverses_every_channel() -> None:
    model = six(
        "s = Slice (m, starts, ends, axes, steps)",
        6,
        [1, 2],
        slice_values([-1], [-BIG], [1], [-1]),
    )
    np.testing.assert_array_equal(states(model).zero["s"], flags(6, [3, 4]))
    result = shrunk(model)
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 1, 2, 5]]
    )


def test_slice_of_channels_and_space_keeps_only_the_spatial_part() -> None:
    values = slice_values([1, 1], [BIG, 5], [1, 2])
    model = six("s = Slice (m, starts, ends, axes)", 5, [2], values)
    np.testing.assert_array_equal(states(model).zero["s"], flags(5, [1]))
    result = shrunk(model)
    sliced = node(result.model, "s")
    assert sliced.op_type == "Slice"
    np.testing.assert_array_equal(constant(result.model, sliced.input[3]), [2])
    np.testing.assert_array_equal(constant(result.model, sliced.input[1]), [1])
    assert shape_of(result.model, "s") == [None, 4, 4, 6]


def test_slice_of_every_axis_with_the_whole_batch_is_a_spatial_slice() -> None:
    # tf2onnx's Cropping2D: every axis listed, the batch and the channels whole.
    values = slice_values([0, 1, 1, 0], [INT_MAX] * 4, [0, 2, 3, 1])
    model = six("s = Slice (m, starts, ends, axes)", 6, [2], values)
    assert isinstance(rule_of(model, "s"), SliceRule)
    np.testing.assert_array_equal(states(model).zero["s"], flags(6, [2]))
    result = shrunk(model)
    assert not result.frozen
    assert shape_of(result.model, "s")[1:] == [5, 5, 5]  # channel 2 gone, 6×6 cropped to 5×5


def test_slice_of_the_batch_axis_carries_every_channel() -> None:
    # Off the channel axis, each output channel is its input channel on fewer images.
    model = six("s = Slice (m, starts, ends, axes)", 6, [2], slice_values([0], [2], [0]))
    assert isinstance(rule_of(model, "s"), OffAxisRule)
    np.testing.assert_array_equal(states(model).zero["s"], flags(6, [2]))
    result = shrunk(model)
    assert not result.frozen
    assert shape_of(result.model, "s")[1] == 5


def test_gather_of_channels_permutes_and_repeats() -> None:
    """Indices 5, 3, 0, -1 of m, whose channel 3 is zero: a Gather of 5, 0, 5 remains."""
    model = six(
        "s = Gather <axis = 1> (m, index)", 4, [3], {"index": np.array([5, 3, 0, -1], np.int64)}
    )
    assert isinstance(rule_of(model, "s"), GatherRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["s"], flags(4, [1]))
    np.testing.assert_array_equal(st.need["m"], flags(6, [0, 3, 5]))
    result = shrunk(model)
    np.testing.assert_array_equal(
        node_input(result.model, "c", 1), node_input(model, "c", 1)[[0, 5]]
    )
    gather = next(n for n in result.model.graph.node if n.op_type == "Gather")
    np.testing.assert_array_equal(constant(result.model, gather.input[1]), [1, 0, 1])
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 2, 3]]
    )


@pytest.mark.parametrize(
    ("line", "index"),
    [
        ("s0 = Gather <axis = 1> (m, index)\n    s = Unsqueeze (s0, one)", np.array(2)),
        ("s = Gather <axis = 2> (m, index)", np.array([0, 2], np.int64)),
    ],
)
def test_gather_of_a_scalar_or_of_space_is_frozen(line: str, index: np.ndarray) -> None:
    width = 1 if index.ndim == 0 else 6
    values = {"index": index.astype(np.int64), "one": np.array([1], np.int64)}
    model = six(line, width, [2], values)
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    assert rule_of(model, gather.name) is FROZEN
    result = shrunk(model)
    assert (gather.name, "Gather") in result.frozen


# ---------------------------------------------------------------- Split

SPLIT = """
net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] ya, float[N, 2, 4, 4] yb) {{
    c = Conv (x, w0, b0)
    m = Mul (c, mask)
    k = Add (m, shift)
    a, b = Split <axis = 1{attrs}> ({inputs})
    ya = Conv (a, wa, ba)
    yb = Conv (b, wb, bb)
}}
"""


def split(
    zero: list[int],
    attrs: str = "",
    inputs: str = "k, sizes",
    opset: int = 17,
    widths: tuple[int, int] = (2, 3),
):
    """k (5 channels, zero on `zero`, channel 3 the constant 2) split into `widths`."""
    text = SPLIT.format(attrs=attrs, inputs=inputs)
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "wa": (2, widths[0], 1, 1), "ba": (2,)}
    shapes |= {"wb": (2, widths[1], 1, 1), "bb": (2,)}
    values = {
        "mask": mask(5, zero),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
        "sizes": np.array([2, 3], np.int64),
    }
    return build(text, shapes, values, opset=opset)


def test_split_of_channels_gives_each_piece_its_channels() -> None:
    model = split([1, 3])
    assert isinstance(rule_of(model, "a"), SplitRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["a"], flags(2, [1]))
    np.testing.assert_array_equal(st.const["b"], [np.nan, SHIFT, np.nan])
    result = shrunk(model)
    split_node = next(n for n in result.model.graph.node if n.op_type == "Split")
    np.testing.assert_array_equal(constant(result.model, split_node.input[1]), [1, 2])
    assert node_input(result.model, "ya", 1).shape == (2, 1, 1, 1)
    assert node_input(result.model, "yb", 1).shape == (2, 2, 1, 1)  # the constant folded


@pytest.mark.parametrize(
    ("attrs", "opset", "widths", "sizes"),
    [(", split = [2, 3]", 11, (2, 3), [1, 2]), (", num_outputs = 2", 18, (3, 2), [2, 1])],
)
def test_split_sizes_as_attribute_or_by_count(
    attrs: str, opset: int, widths: tuple[int, int], sizes: list[int]
) -> None:
    model = split([1, 3], attrs=attrs, inputs="k", opset=opset, widths=widths)
    result = shrunk(model)
    split_node = next(n for n in result.model.graph.node if n.op_type == "Split")
    attributes = {a.name for a in split_node.attribute}
    assert "num_outputs" not in attributes
    expected = sizes
    sizes = (
        [a.ints for a in split_node.attribute if a.name == "split"][0]
        if opset < 13
        else constant(result.model, split_node.input[1])
    )
    np.testing.assert_array_equal(sizes, expected)


def test_split_with_an_empty_piece_selects_each_piece() -> None:
    model = split([0, 1, 3])
    assert states(model).zero["a"].all()
    result = shrunk(model)
    assert "Split" not in ops(result.model)
    # ya reads only zeros: its output is its bias, a constant, and it is not computed.
    assert "ya" not in {n.name for n in result.model.graph.node}
    assert node_input(result.model, "yb", 1).shape == (2, 2, 1, 1)


def test_split_of_space_carries_every_channel_to_both_halves() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 2, 4] ya, float[N, 2, 2, 4] yb) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        a, b = Split <axis = 2> (m, sizes)
        ya = Conv (a, wa, ba)
        yb = Conv (b, wb, bb)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "wa": (2, 5, 1, 1), "ba": (2,)}
    shapes |= {"wb": (2, 5, 1, 1), "bb": (2,)}
    values = {"mask": mask(5, [1]), "sizes": np.array([2, 2], np.int64)}
    model = build(text, shapes, values)
    assert isinstance(rule_of(model, "a"), OffAxisRule)
    np.testing.assert_array_equal(states(model).zero["b"], flags(5, [1]))
    result = shrunk(model)
    assert not result.frozen
    assert shape_of(result.model, "a") == [None, 4, 2, 4]


# ---------------------------------------------------------------- Concat

CONCAT = """
net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {{
    c1 = Conv (x, w1, b1)
    c2 = Conv (x, w2, b2)
    a = Mul (c1, mask_a)
    b = Mul (c2, mask_b)
    {line}
    y = Conv <pads = [1, 1, 1, 1]> (j, w3, b3)
}}
"""


def concat(
    zero_a: list[int],
    zero_b: list[int],
    line: str = "j = Concat <axis = 1> (a, b)",
    w3: np.ndarray | None = None,
    width: int = 7,
):
    """a: 3 channels, b: 4 channels, concatenated by `line` into j (`width`)."""
    shapes = {"w1": (3, 3, 1, 1), "b1": (3,), "w2": (4, 3, 1, 1), "b2": (4,)}
    shapes |= {"w3": (2, width, 3, 3), "b3": (2,)}
    values = {
        "mask_a": mask(3, zero_a),
        "mask_b": mask(4, zero_b),
        "zero": np.array([0], np.int64),
        "four": np.array([4], np.int64),
        "two": np.array([2], np.int64),
    }
    if w3 is not None:
        values["w3"] = w3
    return build(CONCAT.format(line=line), shapes, values)


@pytest.mark.parametrize("axis", [1, -3])
def test_concat_of_channels_joins_layouts_at_offsets(axis: int) -> None:
    model = concat([1], [0, 3], f"j = Concat <axis = {axis}> (a, b)")
    assert isinstance(rule_of(model, "j"), ConcatRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["j"], flags(7, [1, 3, 6]))
    result = shrunk(model)
    assert node(result.model, "j").op_type == "Concat"
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [0, 2, 4, 5]]
    )
    assert node_input(result.model, "c1", 1).shape[0] == 2
    assert node_input(result.model, "c2", 1).shape[0] == 2


def test_concat_needs_each_input_at_its_offset() -> None:
    w3 = np.random.default_rng(5).standard_normal((2, 7, 3, 3)).astype(np.float32)
    w3[:, [0, 5]] = 0  # channel 0 of a and channel 2 of b are read by nothing
    model = concat([], [], w3=w3)
    st = states(model)
    np.testing.assert_array_equal(st.need["a"], ~flags(3, [0]))
    np.testing.assert_array_equal(st.need["b"], ~flags(4, [2]))
    result = shrunk(model)
    assert node_input(result.model, "y", 1).shape == (2, 5, 3, 3)


def test_concat_of_a_dead_input_is_the_other_input() -> None:
    model = concat([0, 1, 2], [1])
    result = shrunk(model)
    assert "j" not in names(result.model) and "c1" not in names(result.model)
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, [3, 5, 6]]
    )


def test_concat_of_space_is_frozen() -> None:
    line = "j0 = Concat <axis = 2> (a, a)\n    j = Slice (j0, zero, four, two)"
    model = concat([1], [0], line, width=3)
    assert rule_of(model, "j0") is FROZEN
    result = shrunk(model)
    assert ("j0", "Concat") in result.frozen
    assert shape_of(result.model, node(result.model, "j0").input[0])[1] == 3


# ---------------------------------------------------------------- Flatten and Reshape

FLAT = """
net (float[N, 3, 4, 4] x) => (float[N, 4] y) {{
    c = Conv (x, w0, b0)
    m = Mul (c, mask)
    k = Add (m, shift)
    p = AveragePool <kernel_shape = [2, 2], strides = [2, 2]> (k)
    {line}
    y = Gemm <transB = 1> (f, w1, b1)
}}
"""


def flat(line: str, w1: np.ndarray | None = None, out: int = 20):
    """k (5 channels: 1 zero, 3 the constant 2) pooled to 2×2, `line` makes f, then a Gemm."""
    values = {
        "mask": mask(5, [1, 3]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
        "shape": np.array([-1, out], np.int64),
        "shape3": np.array([0, 5, 4], np.int64),
    }
    if w1 is None:
        w1 = np.random.default_rng(2).standard_normal((4, out)).astype(np.float32)
    values["w1"] = w1
    return build(FLAT.format(line=line), {"w0": (5, 3, 1, 1), "b0": (5,), "b1": (4,)}, values)


def blocks(channels: list[int], size: int = 4) -> list[int]:
    return [c * size + i for c in channels for i in range(size)]


@pytest.mark.parametrize("line", ["f = Flatten (p)", "f = Reshape (p, shape)"])
def test_flatten_maps_each_channel_to_a_feature_block(line: str) -> None:
    model = flat(line)
    assert isinstance(rule_of(model, "f"), FlattenRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["f"], flags(20, blocks([1])))
    np.testing.assert_array_equal(st.const["f"][blocks([3])], [SHIFT] * 4)
    result = shrunk(model)
    assert shape_of(result.model, "f")[1] == 12
    np.testing.assert_array_equal(
        node_input(result.model, "y", 1), node_input(model, "y", 1)[:, blocks([0, 2, 4])]
    )
    if "Reshape" in line:
        np.testing.assert_array_equal(node_input(result.model, "f", 1), [0, -1])


@pytest.mark.parametrize(("unread", "needed"), [(blocks([2])[:3], True), (blocks([2]), False)])
def test_flatten_needs_a_channel_if_any_feature_of_its_block_is_read(
    unread: list[int], needed: bool
) -> None:
    w1 = np.random.default_rng(2).standard_normal((4, 20)).astype(np.float32)
    w1[:, unread] = 0
    model = flat("f = Flatten (p)", w1)
    assert states(model).need["p"][2] == needed
    result = shrunk(model)
    assert node_input(result.model, "c", 1).shape[0] == (3 if needed else 2)


def test_flatten_elsewhere_or_reshape_to_more_axes_is_frozen() -> None:
    line = """g = Flatten <axis = 2> (p)
    f0 = Reshape (p, shape3)
    f = ReduceMean <axes = [2], keepdims = 0> (f0)"""
    model = flat(line, out=5)
    assert rule_of(model, "g") is FROZEN
    assert rule_of(model, "f0") is FROZEN
    result = shrunk(model)
    assert ("f0", "Reshape") in result.frozen
    assert shape_of(result.model, node(result.model, "f0").input[0])[1] == 5


# ---------------------------------------------------------------- Shape

SHAPE = """
net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {{
    c = Conv (x, w0, b0)
    m = Mul (c, mask)
    {line}
    z = ConstantOfShape <value = float[1] {{0.5}}> (full)
    a = Add (m, z)
    y = Conv (a, w1, b1)
}}
"""


@pytest.mark.parametrize(
    ("line", "rewritten"),
    [
        ("full = Shape (c)", True),
        ("head = Shape <end = 2> (c)\n    full = Concat <axis = 0> (head, space)", True),
        ("tail = Shape <start = 2> (c)\n    full = Concat <axis = 0> (front, tail)", False),
    ],
)
def test_shape_still_reports_the_original_channel_count(line: str, rewritten: bool) -> None:
    values = {
        "mask": mask(5, [1, 3]),
        "space": np.array([4, 4], np.int64),
        "front": np.array([1, 5], np.int64),
    }
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}
    model = build(SHAPE.format(line=line), shapes, values)
    shape = next(n for n in model.graph.node if n.op_type == "Shape")
    assert isinstance(rule_of(model, shape.name), ShapeRule)
    assert shape_of(model, "z")[1] == 5
    # Shape reads no channel: c's masked filters are needed by nothing.
    np.testing.assert_array_equal(states(model).need["c"], ~flags(5, [1, 3]))
    result = shrunk(model)
    assert node_input(result.model, "c", 1).shape[0] == 3
    emitted = next(n for n in result.model.graph.node if shape.output[0] in n.output)
    assert emitted.op_type == ("Concat" if rewritten else "Shape")


@pytest.mark.parametrize(
    ("shape", "consumer", "w1", "out"),
    [
        ([-1, 5, 1, 1], "Conv", (4, 5, 1, 1), "N, 4, 1, 1"),
        ([-1, 5], "Gemm <transB = 1>", (4, 5), "N, 4"),
    ],
)
def test_a_reshape_of_unit_dimensions_keeps_each_channel(
    shape: list[int], consumer: str, w1: tuple[int, ...], out: str
) -> None:
    # tf2onnx's squeeze-and-excitation: (N, C, 1, 1) to (N, C, 1, 1) again, or to (N, C).
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[{out}] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        p = GlobalAveragePool (k)
        r = Reshape (p, shape)
        y = {consumer} (r, w1, b1)
    }}
    """
    values = {
        "mask": mask(5, [1, 3]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
        "shape": np.array(shape, np.int64),
    }
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,), "w1": w1, "b1": (4,)}, values)
    assert isinstance(rule_of(model, "r"), UnitReshapeRule)
    st = states(model)
    np.testing.assert_array_equal(st.zero["r"], flags(5, [1]))
    assert st.const["r"][3] == SHIFT
    result = shrunk(model)
    assert not result.frozen
    assert node_input(result.model, "y", 1).shape[1] == 3  # the constant folded, zero gone
    np.testing.assert_array_equal(
        node_input(result.model, "r", 1), [0, -1] + [1] * (len(shape) - 2)
    )
