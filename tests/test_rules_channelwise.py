"""Per-rule unit tests of the channelwise rules: activations, pooling, Reduce, Resize, Clip,
BatchNormalization, InstanceNormalization, PRelu.

Most graphs come from `masked`: a Conv whose channel 1 is zeroed by a mask and whose
channel 3 becomes the constant 2, then the op under test, then a consumer Conv.
"""

from __future__ import annotations

import numpy as np
import pytest
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
from chainx.channels.rules.channelwise import (
    AveragePoolRule,
    BatchNormRule,
    ClipRule,
    NonZeroPreservingRule,
    ReduceRule,
    ResizeRule,
    SqueezeRule,
    ZeroPreservingRule,
)

LIVE = [0, 2, 4]  # the channels of `masked` that are neither zero nor constant
POINTWISE = {"consumer": "Conv", "kernel": 1}  # a 1×1 Conv without padding: it folds constants


def assert_zero_and_const(
    model, tensor: str, zero: list[int], const: dict[int, float], width: int = 5
) -> None:
    """`tensor` is zero exactly on `zero`; constant exactly on `zero` (0) and `const`."""
    s = states(model)
    expected_zero = np.zeros(width, bool)
    expected_zero[zero] = True
    np.testing.assert_array_equal(s.zero[tensor], expected_zero)
    expected = np.full(width, np.nan)
    expected[zero] = 0.0
    for channel, value in const.items():
        expected[channel] = value
    np.testing.assert_allclose(s.const[tensor], expected, rtol=1e-6, atol=1e-7)


def consumer_columns(result) -> int:
    """How many input channels the consumer Conv `y` still reads."""
    return node_input(result.model, "y", 1).shape[1]


# ---------------------------------------------------------------- zero-preserving ops

# (op, whether the rule knows what it makes of a non-zero constant)
ZERO_PRESERVING = [
    ("Relu", True),
    ("LeakyRelu <alpha = 0.3>", True),
    ("HardSwish", True),
    ("Tanh", True),
    ("Identity", True),
    ("Neg", True),
    ("Abs", True),
    ("Erf", False),
    ("Gelu", False),
    ("Elu", False),
    ("Selu", False),
    ("Softsign", False),
    ("Mish", False),
    ("MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1]>", True),
    ("GlobalAveragePool", True),
    ("GlobalMaxPool", True),
    ("LpPool <kernel_shape = [2, 2], p = 2>", False),
    ("Dropout", True),
]


@pytest.mark.parametrize(("op", "knows_constants"), ZERO_PRESERVING)
def test_zero_preserving_op_keeps_zero_channels_zero_and_drops_them(
    op: str, knows_constants: bool
) -> None:
    model = masked(f"r = {op} (k)", opset=20)
    assert isinstance(rule_of(model, "r"), ZeroPreservingRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], [False, True, False, False, False])
    assert s.const["r"][ZERO] == 0.0
    assert np.isnan(s.const["r"][SHIFTED]) != knows_constants
    result = shrunk(model)
    assert result.frozen == []
    # The zero channel is gone everywhere; the constant must reach the padded 3×3 consumer,
    # through the op when the op does not know its value, else added back after it.
    assert node_input(result.model, "c", 1).shape[0] == 3
    assert consumer_columns(result) == 4
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == (
        3 if knows_constants else 4
    )


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("Relu", 2.0),
        ("LeakyRelu <alpha = 0.3>", 2.0),
        ("Neg", -2.0),
        ("Abs", 2.0),
        ("Tanh", np.tanh(2.0)),
        ("HardSwish", 2.0 * (2.0 / 6 + 0.5)),
        ("Identity", 2.0),
        ("GlobalAveragePool", 2.0),
        ("MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1]>", 2.0),
    ],
)
def test_zero_preserving_op_maps_a_constant_channel_to_its_value(op: str, value: float) -> None:
    model = masked(f"r = {op} (k)", **POINTWISE)
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: value})
    result = shrunk(model)
    # The 1×1 consumer folds the constant into its bias: it reads only the live channels.
    assert consumer_columns(result) == len(LIVE)
    original_bias = node_input(model, "y", 2)
    weight = node_input(model, "y", 1)[:, SHIFTED, 0, 0]
    np.testing.assert_allclose(
        node_input(result.model, "y", 2), original_bias + value * weight, rtol=1e-6
    )


@pytest.mark.parametrize("op", ["Relu", "LeakyRelu <alpha = 0.3>", "Neg"])
def test_zero_preserving_op_of_a_negative_constant(op: str) -> None:
    model = masked(f"r = {op} (k)", values={"shift": channel_values([0, 0, 0, -2, 0])})
    expected = {"Relu": 0.0, "LeakyRelu <alpha = 0.3>": -0.6, "Neg": 2.0}[op]
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: expected})
    # Relu(-2) is the constant 0, but not a channel known to be zero.
    assert not states(model).zero["r"][SHIFTED]


def test_zero_preserving_op_without_a_constant_function_makes_constants_live() -> None:
    """Erf keeps zero at zero, but Erf(2) is not computed: the channel is live."""
    model = masked("r = Erf (k)", **POINTWISE)
    assert_zero_and_const(model, "r", [ZERO], {})
    result = shrunk(model)
    # Channel 3 must be carried through Erf and read by the consumer; channel 1 stays gone.
    assert consumer_columns(result) == 4
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 4


def test_prelu_slices_its_per_channel_slope() -> None:
    model = masked("r = PRelu (k, slope)", shapes={"slope": (5, 1, 1)})
    assert isinstance(rule_of(model, "r"), ZeroPreservingRule)
    assert_zero_and_const(model, "r", [ZERO], {})  # PRelu has no constant function
    result = shrunk(model)
    kept = shape_of(result.model, node(result.model, "r").input[0])[1]
    assert kept == 4  # the live channels and the carried constant
    slope = node_input(result.model, "r", 1)
    np.testing.assert_array_equal(slope, node_input(model, "r", 1)[[0, 2, 3, 4]])


def test_prelu_with_a_spatial_slope_is_frozen() -> None:
    model = masked("r = PRelu (k, slope)", shapes={"slope": (5, 4, 4)})
    assert rule_of(model, "r") is FROZEN
    s = states(model)
    assert not s.zero["r"].any() and np.isnan(s.const["r"]).all()
    result = shrunk(model)
    assert result.frozen == [("r", "PRelu")]
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5
    np.testing.assert_array_equal(node_input(result.model, "r", 1), node_input(model, "r", 1))
    assert result.refilled == 2  # the zero channel and the constant channel, re-created


# ---------------------------------------------------------------- non-zero-preserving ops


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("Sigmoid", 0.5),
        ("HardSigmoid <alpha = 0.2, beta = 0.3>", 0.3),
        ("Softplus", np.log(2.0)),
        ("Exp", 1.0),
        ("Cos", np.nan),  # no constant function: live
    ],
)
def test_non_zero_preserving_op_turns_zero_into_its_value_at_zero(op: str, value: float) -> None:
    model = masked(f"r = {op} (k)")
    assert isinstance(rule_of(model, "r"), NonZeroPreservingRule)
    s = states(model)
    assert not s.zero["r"].any()
    np.testing.assert_allclose(s.const["r"][ZERO], value, rtol=1e-6)
    assert np.isnan(s.const["r"][LIVE]).all()
    shrunk(model)


def test_sigmoid_constants_fold_into_a_pointwise_conv() -> None:
    model = masked("r = Sigmoid (k)", **POINTWISE)
    assert_zero_and_const(model, "r", [], {ZERO: 0.5, SHIFTED: 1 / (1 + np.exp(-SHIFT))})
    result = shrunk(model)
    assert shape_of(result.model, "r")[1] == 3  # Sigmoid computes the live channels only
    assert consumer_columns(result) == 3
    weight = node_input(model, "y", 1)[:, :, 0, 0].astype(np.float64)
    folded = node_input(model, "y", 2) + weight[:, ZERO] * 0.5
    folded += weight[:, SHIFTED] / (1 + np.exp(-SHIFT))
    np.testing.assert_allclose(node_input(result.model, "y", 2), folded, rtol=1e-6)


def test_sigmoid_constants_are_carried_into_a_padded_conv() -> None:
    """Border pixels of a padded Conv see zeros: Sigmoid's constants cannot fold."""
    model = masked("r = Sigmoid (k)")
    result = shrunk(model)
    assert consumer_columns(result) == 5
    # The Sigmoid itself computes 3 channels; the constants are added back after it.
    assert shape_of(result.model, "r")[1] == 3
    assert "Add" in ops(result.model)[ops(result.model).index("Sigmoid") :]


def test_instance_norm_of_a_zero_channel_is_not_zero() -> None:
    """InstanceNormalization maps a constant channel to its bias: not zero, not dropped."""
    model = masked(
        "r = InstanceNormalization (k, scale, bias)", shapes={"scale": (5,), "bias": (5,)}
    )
    assert isinstance(rule_of(model, "r"), NonZeroPreservingRule)
    s = states(model)
    assert not s.zero["r"].any() and np.isnan(s.const["r"]).all()
    result = shrunk(model)
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5
    assert result.frozen == []


def test_instance_norm_slices_its_parameters_to_the_needed_channels() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        c = Conv (x, w0, b0)
        r = InstanceNormalization (c, scale, bias)
        m = Mul (r, mask)
        y = Conv (m, w1, b1)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "scale": (5,), "bias": (5,)}
    model = build(text, shapes | {"w1": (2, 5, 1, 1), "b1": (2,)}, {"mask": mask(5, [1, 3])})
    s = states(model)
    np.testing.assert_array_equal(s.need["c"], [True, False, True, False, True])
    result = shrunk(model)
    assert node_input(result.model, "c", 1).shape[0] == 3
    np.testing.assert_array_equal(node_input(result.model, "r", 1), node_input(model, "r", 1)[LIVE])
    np.testing.assert_array_equal(node_input(result.model, "r", 2), node_input(model, "r", 2)[LIVE])


# ---------------------------------------------------------------- AveragePool


@pytest.mark.parametrize(
    ("attrs", "constant"),
    [
        ("kernel_shape = [2, 2]", True),
        ("kernel_shape = [3, 3], pads = [1, 1, 1, 1]", True),
        ("kernel_shape = [3, 3], pads = [1, 1, 1, 1], count_include_pad = 1", False),
    ],
)
def test_average_pool_keeps_constants_unless_it_counts_padding(attrs: str, constant: bool) -> None:
    model = masked(f"r = AveragePool <{attrs}> (k)", **POINTWISE)
    assert isinstance(rule_of(model, "r"), AveragePoolRule)
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: SHIFT} if constant else {})
    result = shrunk(model)
    # A constant folds into the 1×1 consumer; a varying one is carried through the pool.
    assert consumer_columns(result) == (3 if constant else 4)
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == (3 if constant else 4)


# ---------------------------------------------------------------- Reduce


def pooled_model(lines: str, opset: int) -> object:
    """`masked`'s Conv, mask and shift, then `lines` (ending in `r`, (N, 5)), then a Gemm."""
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[N, 4] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        {lines}
        y = Gemm <transB = 1> (r, w1, b1)
    }}
    """
    values = {
        "mask": mask(5, [ZERO, SHIFTED]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
        "axes": np.array([2, 3], np.int64),
    }
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (4, 5), "b1": (4,)}
    return build(text, shapes, values, opset=opset)


def reduce_model(op: str, opset: int) -> object:
    by_input = opset >= 18 or op == "ReduceSum"  # ReduceSum takes axes as an input from 13
    attrs = "keepdims = 0" if by_input else "keepdims = 0, axes = [2, 3]"
    inputs = "(k, axes)" if by_input else "(k)"
    return pooled_model(f"r = {op} <{attrs}> {inputs}", opset)


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize(
    ("op", "constant"),
    [("ReduceMean", True), ("ReduceMax", True), ("ReduceMin", True), ("ReduceSum", False)],
)
def test_spatial_reduce_keeps_zeros_and_constants(op: str, constant: bool, opset: int) -> None:
    model = reduce_model(op, opset)
    assert isinstance(rule_of(model, "r"), ReduceRule)
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: SHIFT} if constant else {})
    result = shrunk(model)
    # The Gemm folds a constant feature; the sum over 16 pixels is not the constant.
    assert node_input(result.model, "y", 1).shape == (4, 3 if constant else 4)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_of_pooled_spatial_axes_keeps_zeros_and_constants(opset: int) -> None:
    # tf2onnx's Keras GlobalAveragePooling2D: GlobalAveragePool, then Squeeze of H and W.
    squeeze = "Squeeze (p, axes)" if opset >= 13 else "Squeeze <axes = [2, 3]> (p)"
    model = pooled_model(f"p = GlobalAveragePool (k)\n        r = {squeeze}", opset)
    assert isinstance(rule_of(model, "r"), SqueezeRule)
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: SHIFT})
    assert node_input(shrunk(model).model, "y", 1).shape == (4, 3)  # the constant folded


@pytest.mark.parametrize(
    "line", ["r = ReduceMean <keepdims = 1> (k, channel)", "r = ReduceMax <keepdims = 1> (k)"]
)
def test_reduce_over_channels_or_everything_is_frozen(line: str) -> None:
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[A, B, H, W] r) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        {line}
    }}
    """
    values = {
        "mask": mask(5, [ZERO, SHIFTED]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
        "channel": np.array([1], np.int64),
    }
    model = build(text, {"w0": (5, 3, 1, 1), "b0": (5,)}, values, opset=18)
    assert rule_of(model, "r") is FROZEN
    result = shrunk(model)
    assert result.frozen == [("r", node(model, "r").op_type)]
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5


# ---------------------------------------------------------------- Resize / Upsample


@pytest.mark.parametrize(
    ("resize", "constant"),
    [
        ('Resize <mode = "nearest"> (k, , scales)', True),
        ('Resize <mode = "linear", axes = [2, 3]> (k, , , sizes)', True),
        ('Resize <mode = "cubic"> (k, , scales)', False),
    ],
)
def test_resize_keeps_zeros_and_constants_unless_cubic(resize: str, constant: bool) -> None:
    values = {
        "scales": np.array([1, 1, 2, 2], np.float32),
        "sizes": np.array([8, 8], np.int64),
    }
    model = masked(f"r = {resize}", values=values, opset=18, **POINTWISE)
    assert isinstance(rule_of(model, "r"), ResizeRule)
    assert_zero_and_const(model, "r", [ZERO], {SHIFTED: SHIFT} if constant else {})
    result = shrunk(model)
    assert shape_of(result.model, "y")[2:] == [8, 8]
    assert consumer_columns(result) == (3 if constant else 4)


def test_resize_that_crops_is_frozen() -> None:
    line = (
        'r = Resize <mode = "nearest", coordinate_transformation_mode = "tf_crop_and_resize">'
        " (k, roi, scales)"
    )
    values = {
        "scales": np.array([1, 1, 2, 2], np.float32),
        "roi": np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32),
    }
    model = masked(line, values=values, **POINTWISE)
    assert rule_of(model, "r") is FROZEN
    result = shrunk(model)
    assert result.frozen == [("r", "Resize")]
    assert shape_of(result.model, node(result.model, "r").input[0])[1] == 5


def test_upsample_is_a_resize() -> None:
    text = """
    <ir_version: 4, opset_import: ["" : 9]>
    net (float[N, 3, 4, 4] x) => (float[N, 2, 8, 8] y) {
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        r = Upsample <mode = "nearest"> (m, scales)
        y = Conv (r, w1, b1)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, 5, 1, 1), "b1": (2,)}
    values = {"mask": mask(5, [1, 3]), "scales": np.array([1, 1, 2, 2], np.float32)}
    model = build(text, shapes, values)
    assert isinstance(rule_of(model, "r"), ResizeRule)
    np.testing.assert_array_equal(states(model).zero["r"], [False, True, False, True, False])
    result = shrunk(model)
    assert node_input(result.model, "y", 1).shape == (2, 3, 1, 1)


# ---------------------------------------------------------------- Clip


@pytest.mark.parametrize(
    ("line", "opset", "at_zero", "at_shift"),
    [
        ("r = Clip (k, low, high)", 17, 0.0, 1.5),  # [-1, 1.5]
        ("r = Clip (k)", 17, 0.0, SHIFT),
        ("r = Clip (k, , high)", 17, 0.0, 1.5),
        ("r = Clip (k, floor)", 17, 0.5, SHIFT),  # [0.5, ∞): zero becomes 0.5
        ("r = Clip <min = -1.0, max = 1.5> (k)", 10, 0.0, 1.5),
        ("r = Clip <min = 0.5> (k)", 10, 0.5, SHIFT),
    ],
)
def test_clip_bounds_decide_zeros_and_constants(
    line: str, opset: int, at_zero: float, at_shift: float
) -> None:
    values = {
        "low": np.array(-1.0, np.float32),
        "high": np.array(1.5, np.float32),
        "floor": np.array(0.5, np.float32),
    }
    model = masked(line, values=values, opset=opset, **POINTWISE)
    assert isinstance(rule_of(model, "r"), ClipRule)
    zero = [ZERO] if at_zero == 0 else []
    assert_zero_and_const(model, "r", zero, {ZERO: at_zero, SHIFTED: at_shift})
    result = shrunk(model)
    assert consumer_columns(result) == 3  # both constants fold into the 1×1 consumer
    weight = node_input(model, "y", 1)[:, :, 0, 0].astype(np.float64)
    folded = node_input(model, "y", 2) + weight[:, ZERO] * at_zero + weight[:, SHIFTED] * at_shift
    np.testing.assert_allclose(node_input(result.model, "y", 2), folded, rtol=1e-6)


def test_clip_that_moves_zero_is_carried_into_a_padded_conv() -> None:
    model = masked("r = Clip (k, floor)", values={"floor": np.array(0.5, np.float32)})
    result = shrunk(model)
    assert consumer_columns(result) == 5
    assert shape_of(result.model, "r")[1] == 3


# ---------------------------------------------------------------- BatchNormalization

BN = {
    "scale": [1.5, 2.0, 0.5, -1.0, 1.0],
    "bias": [0.1, 0.0, -0.2, 0.3, 0.4],
    "mean": [0.2, 0.0, 0.1, -0.5, 0.3],
    "var": [1.0, 0.5, 2.0, 0.25, 1.5],
}
EPSILON = 1e-3


def bn_constant(channel: int, value: float) -> float:
    p = {key: np.float64(np.float32(v[channel])) for key, v in BN.items()}
    return p["scale"] * (value - p["mean"]) / np.sqrt(p["var"] + EPSILON) + p["bias"]


def bn_model(consumer: dict[str, object], zero: list[int]) -> object:
    line = f"r = BatchNormalization <epsilon = {EPSILON}> (k, scale, bias, mean, var)"
    values = {key: np.array(v, np.float32) for key, v in BN.items()}
    values["mask"] = mask(5, zero)
    return masked(line, values=values, **consumer)


def test_batchnorm_turns_zero_into_its_shift_unless_it_is_zero() -> None:
    """Channel 1 has bias 0 and mean 0: BN(0) = 0 stays zero. Channel 4 is zeroed too."""
    model = bn_model(POINTWISE, [1, 3, 4])
    assert isinstance(rule_of(model, "r"), BatchNormRule)
    s = states(model)
    np.testing.assert_array_equal(s.zero["r"], [False, True, False, False, False])
    np.testing.assert_allclose(
        s.const["r"][[1, 3, 4]], [0.0, bn_constant(3, SHIFT), bn_constant(4, 0.0)], rtol=1e-6
    )
    assert np.isnan(s.const["r"][[0, 2]]).all()


@pytest.mark.parametrize(("consumer", "columns"), [(POINTWISE, 2), ({}, 4)])
def test_batchnorm_slices_its_parameters_and_its_constants_fold_or_are_carried(
    consumer: dict[str, object], columns: int
) -> None:
    model = bn_model(consumer, [1, 3, 4])
    result = shrunk(model)
    # BN computes the two live channels; the 1×1 consumer folds channels 3 and 4, the padded
    # 3×3 one carries them (channel 1, zero, is never carried).
    for position, key in enumerate(BN, start=1):
        np.testing.assert_array_equal(
            node_input(result.model, "r", position), np.float32(BN[key])[[0, 2]]
        )
    assert consumer_columns(result) == columns


def test_batchnorm_with_training_outputs_is_frozen() -> None:
    text = """
    net (float[N, 3, 4, 4] x) => (float[N, 5, 4, 4] r) {
        c = Conv (x, w0, b0)
        r, rm, rv = BatchNormalization <training_mode = 1> (c, scale, bias, mean, var)
    }
    """
    shapes = {"w0": (5, 3, 1, 1), "b0": (5,), "scale": (5,), "bias": (5,)}
    model = build(text, shapes | {"mean": (5,), "var": (5,)})
    assert rule_of(model, "r") is FROZEN
