"""Ops that act on each channel alone: activations, pooling, normalisation, Resize."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.rules.base import (
    Masks,
    Rule,
    Values,
    one_activation_in_out,
    single_io,
)
from chainx.onnx.graph import GraphIndex, attributes


class ChannelwiseRule(Rule):
    """A unary op that acts on each channel alone (activations, pooling, normalisation).

    `params` are the input positions of per-channel constants, sliced with the channels:
    with `vectors` they are 1-D of length C (BatchNormalization), otherwise they broadcast
    against the activation (PRelu's slope). An op that maps zero to zero keeps the layout;
    one that does not (Sigmoid, BN) first brings back every channel that is needed and
    non-zero at its output.
    """

    frozen = False

    def __init__(
        self, params: tuple[int, ...] = (), vectors: bool = False, any_axis: bool = False
    ) -> None:
        self.params = params
        self.vectors = vectors
        self.any_axis = any_axis  # elementwise ops: each channel alone on any axis

    def _is_channel_param(self, value: np.ndarray, x: str, g: GraphIndex) -> bool:
        if self.vectors:
            return value.shape == (g.width[x],)
        return g.channel_values(value, x) is not None

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not one_activation_in_out(node, g):
            return False
        return all(
            position >= len(node.input)
            or node.input[position] == ""
            or self._is_channel_param(g.constants[node.input[position]], node.input[0], g)
            for position in self.params
        )

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """Per channel: whether an all-zero input channel gives an all-zero output channel."""
        return np.ones(g.width[node.output[0]], bool)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = single_io(node, g)
        zero[y] = zero[x] & self.zero_preserved(node, g)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        """The op applied to per-channel constants; NaN where the result is not known."""
        function = CONSTANT_FUNCTIONS.get(node.op_type)
        if function is None:
            return np.full(len(values), np.nan)
        with np.errstate(all="ignore"):
            return function(values, attributes(node))

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = single_io(node, g)
        const[y] = self.constant_of(node, g, const[x])

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = single_io(node, g)
        need[x] |= need[y]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
        # Live outputs whose input is a known constant (Sigmoid(0), or a constant that
        # padding counted in an average makes vary) need that constant brought back.
        layout = np.union1d(em.layout(x), np.flatnonzero(em.live(y)))
        inputs = [em.remapped(x, layout)]
        for position, name in enumerate(node.input[1:], start=1):
            if position in self.params and name:
                values = em.g.constants[name]
                if self.vectors:
                    inputs.append(em.constant(name, values[layout]))
                else:
                    inputs.append(em.channel_constant(name, values, layout, x))
            else:
                inputs.append(em.src(name))
        em.copy(node, inputs)
        em.set(y, y, layout)


class ZeroPreservingRule(ChannelwiseRule):
    """Relu, pooling and friends: f(0) = 0 on every channel."""


class AveragePoolRule(ChannelwiseRule):
    """AveragePool: a constant stays constant unless padding is counted in the average."""

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        attrs = attributes(node)
        if attrs.get("count_include_pad", 0) and any(attrs.get("pads", [])):
            return np.full(len(values), np.nan)
        return values.copy()


class ReduceRule(ChannelwiseRule):
    """ReduceMean/Max/Min/Sum over spatial axes only: per channel, like global pooling."""

    def _axes(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray | None:
        if len(node.input) > 1 and node.input[1]:
            axes = g.constants.get(node.input[1])
        else:
            axes = attributes(node).get("axes")
        if axes is None or len(np.atleast_1d(axes)) == 0:
            return None
        return np.atleast_1d(np.asarray(axes, np.int64)) % len(g.shapes[node.input[0]])

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not one_activation_in_out(node, g):
            return False
        axes = self._axes(node, g)
        return axes is not None and 0 not in axes and 1 not in axes

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        if node.op_type == "ReduceSum":
            return np.full(len(values), np.nan)
        return values.copy()


class SqueezeRule(ReduceRule):
    """Squeeze of spatial axes (GlobalAveragePool then Squeeze, as tf2onnx writes Keras'
    global pooling): every channel keeps its values, as ReduceRule's non-sum ops do."""


class ResizeRule(ChannelwiseRule):
    """Resize or Upsample of the spatial axes: interpolating zeros gives zeros."""

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        mode = attributes(node).get("coordinate_transformation_mode", b"half_pixel")
        return mode != b"tf_crop_and_resize" and one_activation_in_out(node, g)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        if attributes(node).get("mode", b"nearest") == b"cubic":
            return np.full(len(values), np.nan)
        return values.copy()


class NonZeroPreservingRule(ChannelwiseRule):
    """Sigmoid, Softplus, Exp: an all-zero channel becomes a non-zero constant."""

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return np.zeros(g.width[node.output[0]], bool)


class SoftmaxRule(NonZeroPreservingRule):
    """Softmax along an axis other than the channel axis (attention's, over keys, head by
    head): each channel alone. Softmax of zeros is uniform, not zero."""

    def __init__(self) -> None:
        super().__init__(any_axis=True)

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not one_activation_in_out(node, g):
            return False
        rank = len(g.shapes[node.input[0]])
        return int(attributes(node).get("axis", -1)) % rank != g.axis[node.input[0]]


class ClipRule(ChannelwiseRule):
    def _bounds(self, node: onnx.NodeProto, g: GraphIndex) -> tuple[float, float]:
        attrs = attributes(node)
        low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
        if len(node.input) > 1 and node.input[1]:
            low = float(g.constants[node.input[1]])
        if len(node.input) > 2 and node.input[2]:
            high = float(g.constants[node.input[2]])
        return low, high

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        low, high = self._bounds(node, g)
        return np.full(g.width[node.output[0]], low <= 0 <= high)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        return np.clip(values, *self._bounds(node, g))


class BatchNormRule(ChannelwiseRule):
    def __init__(self) -> None:
        super().__init__(params=(1, 2, 3, 4), vectors=True)

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        return len([o for o in node.output if o]) == 1 and super().accepts(node, g)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        scale, bias, mean, var = (g.constants[name].astype(np.float64) for name in node.input[1:5])
        epsilon = float(attributes(node).get("epsilon", 1e-5))
        return scale * (values - mean) / np.sqrt(var + epsilon) + bias

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return self.constant_of(node, g, np.zeros(g.width[node.output[0]])) == 0


def _same(values: np.ndarray, attrs: dict[str, object]) -> np.ndarray:
    return values.copy()


# What each channelwise op makes of a channel that is the constant k everywhere.
CONSTANT_FUNCTIONS = {
    "Relu": lambda k, a: np.maximum(k, 0.0),
    "LeakyRelu": lambda k, a: np.where(k >= 0, k, float(a.get("alpha", 0.01)) * k),
    "HardSwish": lambda k, a: k * np.clip(k / 6 + 0.5, 0.0, 1.0),
    "HardSigmoid": lambda k, a: np.clip(
        float(a.get("alpha", 0.2)) * k + float(a.get("beta", 0.5)), 0.0, 1.0
    ),
    "Sigmoid": lambda k, a: 1 / (1 + np.exp(-k)),
    "Tanh": lambda k, a: np.tanh(k),
    "Neg": lambda k, a: -k,
    "Abs": lambda k, a: np.abs(k),
    "Softplus": lambda k, a: np.logaddexp(0.0, k),
    "Exp": lambda k, a: np.exp(k),
    **{op: _same for op in "Identity Dropout MaxPool GlobalAveragePool GlobalMaxPool".split()},
}
