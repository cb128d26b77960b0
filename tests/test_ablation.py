"""The part of a chain one filter's ablation changes: which ops keep the change in its
channel, which Convs run only that channel's share, and that the part's outputs are those of
the whole graph with the channel off."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from rules_helpers import build

from chainx.onnx.runtime import session
from chainx.render.ablation import AblationPart, ablation_part

SHAPES = {
    "w_depthwise": (4, 1, 3, 3),
    "w_mix": (5, 4, 3, 3),
    "w_after": (3, 5, 1, 1),
    "b_mix": (5,),
    "scale": (4,),
    "bias": (4,),
    "mean": (4,),
    "var_bn": (4,),
}

# x → BatchNorm → Relu → Pad (spatial) → depthwise Conv + x → Conv (mixes) → Relu → Conv.
LOCAL_THEN_MIXED = """
g (float[2, 4, 6, 6] x) => (float[2, 3, 6, 6] y) {
    n = BatchNormalization(x, scale, bias, mean, var_bn)
    a = Relu(n)
    p = Pad(a, pads)
    d = Conv<group = 4>(p, w_depthwise)
    s = Add(d, x)
    m = Conv<pads = [1, 1, 1, 1]>(s, w_mix, b_mix)
    r = Relu(m)
    y = Conv(r, w_after)
}
"""


PAD_OVER_CHANNELS = """
g (float[2, 4, 6, 6] x) => (float[2, 5, 6, 6] y) {
    p = Pad(x, pads)
    y = Conv<pads = [1, 1, 1, 1]>(p, w_five)
}
"""


def model(text: str, pads: list[int]) -> onnx.ModelProto:
    shapes = {**SHAPES, "w_five": (5, 5, 3, 3)}
    return build(text, shapes, {"pads": np.array(pads, np.int64)})


CHAIN = model(LOCAL_THEN_MIXED, [0, 0, 1, 1, 0, 0, 1, 1])


def ablated_whole(x: np.ndarray, position: int) -> np.ndarray:
    off = x.copy()
    off[:, position] = 0.0
    return session(CHAIN).run(["y"], {"x": off})[0]


def ablated_part(part: AblationPart, x: np.ndarray, position: int) -> np.ndarray:
    """The part's output with `position` off, fed as link_weights feeds it."""
    chain = onnx.ModelProto()
    chain.CopyFrom(CHAIN)
    chain.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in part.reads())
    values = dict(zip(part.reads(), session(chain).run(part.reads(), {"x": x}), strict=True))
    runs = session(part.model)
    fed, _ = part.unablated(runs, {**values, "x": x})
    off = x.copy()
    off[:, position] = 0.0
    return runs.run(["y"], {**fed, **part.ablating(position), "x": off})[0]


def test_a_conv_over_one_changed_channel_runs_only_its_column() -> None:
    part = ablation_part(CHAIN, "x", ["y"])
    convs = {n.name: n for n in part.model.graph.node if n.op_type == "Conv"}
    assert list(part.columns) == ["m/column"]  # the mixing Conv, replaced by its share
    assert convs["m/share"].input[1] == "m/column"
    assert convs["d"].input[1] == "w_depthwise"  # the depthwise Conv keeps channels
    assert convs["y"].input[1] == "w_after"  # after the mix every channel changed
    assert part.conv_references == {"m/chain": "m"}
    assert part.local_references == {"s/unablated": "s"}


@pytest.mark.parametrize("position", range(4))
def test_the_part_gives_the_whole_graph_with_one_channel_off(position: int) -> None:
    x = np.random.default_rng(position).standard_normal((2, 4, 6, 6)).astype(np.float32)
    part = ablation_part(CHAIN, "x", ["y"])
    expected = ablated_whole(x, position)
    np.testing.assert_allclose(ablated_part(part, x, position), expected, rtol=1e-5, atol=1e-5)


def test_a_pad_over_channels_mixes_them() -> None:
    chain = model(PAD_OVER_CHANNELS, [0, 1, 0, 0, 0, 0, 0, 0])
    part = ablation_part(chain, "x", ["y"])
    assert not part.columns
    assert [n.op_type for n in part.model.graph.node] == ["Pad", "Conv"]


def test_units_off_axis_1_are_ablated_whole() -> None:
    part = ablation_part(CHAIN, "x", ["y"], channel_axis=2)
    assert not part.columns and not part.local_references
    assert [n.op_type for n in part.model.graph.node].count("Conv") == 3


def test_targets_past_channel_keeping_ops_only_are_confined() -> None:
    assert ablation_part(CHAIN, "x", ["d", "s"]).confined
    assert not ablation_part(CHAIN, "x", ["s", "y"]).confined
    assert not ablation_part(CHAIN, "x", ["d"], channel_axis=2).confined
