"""Tiny ONNX-text graphs for the per-rule tests: build them, read their channel states,
shrink them, and check the smaller graph against the original in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import inputs_for, model_with_weights
from onnx import TensorProto, helper, numpy_helper

from chainx.channels.analysis import ChannelAnalysis, analyse_channels
from chainx.channels.registry import rule_for
from chainx.channels.rules.base import Rule
from chainx.channels.states import ChannelStates
from chainx.channels.surgery import SurgeryResult, shrink
from chainx.onnx.graph import GraphIndex
from chainx.onnx.runtime import session

TOLERANCE = 1e-5  # relative to the largest output value


def build(
    text: str,
    shapes: dict[str, tuple[int, ...]] | None = None,
    values: dict[str, object] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A shape-inferred model from ONNX text (the header added when missing).

    `shapes` become random float32 initializers (names starting with "var" positive);
    `values` are given initializers (float arrays stored as float32) and take precedence.
    Nodes without a name are named after their first output, since the analysis keys its
    rules by node name.
    """
    if not text.lstrip().startswith("<"):
        text = f'<ir_version: 9, opset_import: ["" : {opset}]>\n{text}'
    values = values or {}
    model = model_with_weights(
        text, {name: shape for name, shape in (shapes or {}).items() if name not in values}
    )
    for name, value in values.items():
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(array, name))
    for node in model.graph.node:
        if not node.name:
            node.name = node.output[0]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def mask(width: int, zero: list[int], rank: int = 4) -> np.ndarray:
    """A (1, width, 1, …) multiplier of ones, zero on the channels `zero`."""
    value = np.ones(width, np.float32)
    value[zero] = 0
    return value.reshape([1, width] + [1] * (rank - 2))


def channel_values(values: list[float], rank: int = 4) -> np.ndarray:
    """A (1, C, 1, …) float32 constant holding one value per channel."""
    return np.asarray(values, np.float32).reshape([1, len(values)] + [1] * (rank - 2))


def analysis(model: onnx.ModelProto) -> ChannelAnalysis:
    return analyse_channels(GraphIndex.build(model))


def states(model: onnx.ModelProto) -> ChannelStates:
    return analysis(model).states


def rule_of(model: onnx.ModelProto, node_name: str) -> Rule:
    g = GraphIndex.build(model)
    return rule_for(next(n for n in g.nodes if n.name == node_name), g)


def evaluate(
    model: onnx.ModelProto, x: np.ndarray, extra: tuple[str, ...] = ()
) -> list[np.ndarray]:
    """Every graph output (then each tensor of `extra`) on x, in onnxruntime on the CPU."""
    if extra:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        for name in extra:
            probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        model = probe
    sess = session(model, cpu=True)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def assert_close(expected: np.ndarray, actual: np.ndarray) -> None:
    assert expected.shape == actual.shape
    scale = max(float(np.abs(expected).max()), 1e-12)
    assert float(np.abs(expected - actual).max()) / scale <= TOLERANCE


def shrunk(model: onnx.ModelProto, count: int = 3) -> SurgeryResult:
    """shrink(model), checked: a valid model whose outputs match the original's on random
    inputs to within TOLERANCE."""
    result = shrink(model)
    onnx.checker.check_model(result.model, full_check=True)
    x = inputs_for(model, count=count)
    for expected, actual in zip(evaluate(model, x), evaluate(result.model, x), strict=True):
        assert_close(expected, actual)
    return result


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    """The value of an initializer (or Constant node output) of the model."""
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise KeyError(name)


def node_input(model: onnx.ModelProto, name: str, position: int) -> np.ndarray:
    """The constant at input `position` of the node called `name`."""
    return constant(model, node(model, name).input[position])


def shape_of(model: onnx.ModelProto, tensor: str) -> list[int | None]:
    """The inferred shape of a tensor of the model."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.name == tensor:
            dims = info.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    raise KeyError(tensor)


ZERO, SHIFTED = 1, 3  # in `masked`, channel 1 is zero and channel 3 the constant 2
SHIFT = 2.0


def masked(
    op: str,
    consumer: str = "Conv <pads = [1, 1, 1, 1]>",
    kernel: int = 3,
    shapes: dict[str, tuple[int, ...]] | None = None,
    values: dict[str, object] | None = None,
    opset: int = 17,
    width: int = 5,
) -> onnx.ModelProto:
    """x (3 channels) → Conv `c` (5 filters) → Mul `m` by a mask zero on channels 1 and 3
    → Add `k` of a per-channel shift (channel 3 becomes the constant 2) → `op` (one line,
    reading `k`, writing `r` of `width` channels) → `consumer` Conv `y` (2 filters)."""
    text = f"""
    net (float[N, 3, 4, 4] x) => (float[N, 2, H, W] y) {{
        c = Conv (x, w0, b0)
        m = Mul (c, mask)
        k = Add (m, shift)
        {op}
        y = {consumer} (r, w1, b1)
    }}
    """
    base_values: dict[str, object] = {
        "mask": mask(5, [ZERO, SHIFTED]),
        "shift": channel_values([0, 0, 0, SHIFT, 0]),
    }
    return build(
        text,
        {"w0": (5, 3, 1, 1), "b0": (5,), "w1": (2, width, kernel, kernel), "b1": (2,)}
        | (shapes or {}),
        base_values | (values or {}),
        opset=opset,
    )
