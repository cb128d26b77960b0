"""One rule per op type: how channels flow through it, and how to rebuild it smaller.

Every rule answers three questions about a node, each on per-channel boolean arrays over
the channel axis (axis 1) of its activations:

- `zeros`: which output channels are identically zero, given which input channels are;
- `consts`: which output channels are a known constant (the same value at every pixel and
  image), given the constants of the inputs;
- `needs`: which input channels can change a needed output channel;
- `emit`: how to write the node into the smaller graph, given the *layout* of each input
  (the original channel indices that the emitted tensor still carries). A channel missing
  from a layout is a known constant (zero, most often), or not needed by anything downstream.

An op without a rule, or with attributes a rule does not understand, is frozen: it sees
every channel of its inputs in the original order, and all its outputs are needed and live.
That keeps the export exact; it only makes it less small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from chainx.onnx_graph import GraphIndex, attributes, per_channel

if TYPE_CHECKING:
    from chainx.surgery import Emitter

Masks = dict[str, np.ndarray]
Values = dict[str, np.ndarray]


class Rule:
    """The frozen behaviour, which is also the default for every op."""

    frozen = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        return True

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        for name in node.output:
            if g.is_activation(name):
                zero[name] = np.zeros(g.width[name], bool)

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        for name in node.output:
            if g.is_activation(name):
                const[name] = np.full(g.width[name], np.nan)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        for name in g.activation_inputs(node):
            need[name] |= True

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g = em.g
        for name in g.activation_inputs(node):
            em.refilled += g.width[name] - int(
                np.isin(np.arange(g.width[name]), em.layout(name)).sum()
            )
        inputs = [
            em.remapped(name, np.arange(g.width[name])) if g.is_activation(name) else em.src(name)
            for name in node.input
        ]
        em.copy(node, inputs)
        for name in node.output:
            if g.is_activation(name):
                em.set(name, name, np.arange(g.width[name]))
        if g.activation_inputs(node):
            em.frozen.append((node.name, node.op_type))


FROZEN = Rule()


def _single(node: onnx.NodeProto, g: GraphIndex) -> tuple[str, str]:
    return node.input[0], node.output[0]


def _one_activation_in_out(node: onnx.NodeProto, g: GraphIndex) -> bool:
    outputs = [name for name in node.output if name]
    return (
        len(outputs) == 1
        and g.is_activation(node.input[0])
        and g.is_activation(outputs[0])
        and g.width[node.input[0]] == g.width[outputs[0]]
        and all(name == "" or name in g.constants for name in node.input[1:])
    )


class ChannelwiseRule(Rule):
    """A unary op that acts on each channel alone (activations, pooling, normalisation).

    `params` are the input positions of per-channel constants, sliced with the channels:
    with `vectors` they are 1-D of length C (BatchNormalization), otherwise they broadcast
    against the activation (PRelu's slope). An op that maps zero to zero keeps the layout;
    one that does not (Sigmoid, BN) first brings back every channel that is needed and
    non-zero at its output.
    """

    frozen = False

    def __init__(self, params: tuple[int, ...] = (), vectors: bool = False) -> None:
        self.params = params
        self.vectors = vectors

    def _is_channel_param(self, value: np.ndarray, width: int, rank: int) -> bool:
        if self.vectors:
            return value.shape == (width,)
        return per_channel(value, width, rank) is not None

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not _one_activation_in_out(node, g):
            return False
        rank = len(g.shapes[node.input[0]])
        width = g.width[node.input[0]]
        return all(
            position >= len(node.input)
            or node.input[position] == ""
            or self._is_channel_param(g.constants[node.input[position]], width, rank)
            for position in self.params
        )

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """Per channel: whether an all-zero input channel gives an all-zero output channel."""
        return np.ones(g.width[node.output[0]], bool)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = _single(node, g)
        zero[y] = zero[x] & self.zero_preserved(node, g)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        """The op applied to per-channel constants; NaN where the result is not known."""
        function = CONSTANT_FUNCTIONS.get(node.op_type)
        if function is None:
            return np.full(len(values), np.nan)
        with np.errstate(all="ignore"):
            return function(values, attributes(node))

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = _single(node, g)
        const[y] = self.constant_of(node, g, const[x])

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = _single(node, g)
        need[x] |= need[y]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = _single(node, em.g)
        # Live outputs whose input is a known constant (Sigmoid(0), or a constant that
        # padding counted in an average makes vary) need that constant brought back.
        layout = np.union1d(em.layout(x), np.flatnonzero(em.live(y)))
        inputs = [em.remapped(x, layout)]
        rank = len(em.g.shapes[x])
        for position, name in enumerate(node.input[1:], start=1):
            if position in self.params and name:
                values = em.g.constants[name]
                if self.vectors:
                    inputs.append(em.constant(name, values[layout]))
                else:
                    inputs.append(em.channel_constant(name, values, layout, em.g.width[x], rank))
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
        if not _one_activation_in_out(node, g):
            return False
        axes = self._axes(node, g)
        return axes is not None and 0 not in axes and 1 not in axes

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        if node.op_type == "ReduceSum":
            return np.full(len(values), np.nan)
        return values.copy()


class ResizeRule(ChannelwiseRule):
    """Resize or Upsample of the spatial axes: interpolating zeros gives zeros."""

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        mode = attributes(node).get("coordinate_transformation_mode", b"half_pixel")
        return mode != b"tf_crop_and_resize" and _one_activation_in_out(node, g)

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        if attributes(node).get("mode", b"nearest") == b"cubic":
            return np.full(len(values), np.nan)
        return values.copy()


class NonZeroPreservingRule(ChannelwiseRule):
    """Sigmoid, Softplus, Exp: an all-zero channel becomes a non-zero constant."""

    def zero_preserved(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return np.zeros(g.width[node.output[0]], bool)


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


class PadRule(Rule):
    """Pad with zeros. On the channel axis it only shifts indices (the CIFAR option-A shortcut)."""

    frozen = False

    def _pads(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray | None:
        rank = len(g.shapes[node.input[0]])
        if len(node.input) < 2 or node.input[1] not in g.constants:
            return None
        pads = g.constants[node.input[1]].astype(np.int64)
        if len(node.input) > 3 and node.input[3]:
            if node.input[3] not in g.constants:
                return None
            full = np.zeros(2 * rank, np.int64)
            for i, axis in enumerate(g.constants[node.input[3]].astype(np.int64) % rank):
                full[axis], full[axis + rank] = pads[i], pads[i + len(pads) // 2]
            pads = full
        return pads

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not (g.is_activation(node.input[0]) and g.is_activation(node.output[0])):
            return False
        pads = self._pads(node, g)
        mode = attributes(node).get("mode", b"constant")
        value_zero = (
            len(node.input) < 3
            or not node.input[2]
            or (node.input[2] in g.constants and float(g.constants[node.input[2]]) == 0.0)
        )
        if pads is None or (pads < 0).any():
            return False
        rank = len(pads) // 2
        pads_channels = pads[1] != 0 or pads[1 + rank] != 0
        return (
            pads[0] == 0
            and pads[rank] == 0
            and ((mode == b"constant" and value_zero) or not pads_channels)
        )

    def _head(self, node: onnx.NodeProto, g: GraphIndex) -> int:
        return int(self._pads(node, g)[1])

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = _single(node, g)
        out = np.ones(g.width[y], bool)
        head = self._head(node, g)
        out[head : head + g.width[x]] = zero[x]
        zero[y] = out

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = _single(node, g)
        out = np.zeros(g.width[y])
        head = self._head(node, g)
        # Spatial zero padding makes a constant channel vary at the borders.
        spatial = self._pads(node, g).reshape(2, -1)[:, 2:].any()
        inner = np.where(const[x] == 0, 0.0, np.nan) if spatial else const[x]
        out[head : head + g.width[x]] = inner
        const[y] = out

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = _single(node, g)
        head = self._head(node, g)
        need[x] |= need[y][head : head + g.width[x]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = _single(node, em.g)
        pads = self._pads(node, em.g).copy()
        rank = len(pads) // 2
        head = int(pads[1])
        pads[1] = pads[1 + rank] = 0
        if not pads.any():
            em.set(y, em.src(x), em.layout(x) + head)
            return
        # Spatial padding makes a constant channel vary: bring back the needed ones.
        live = np.flatnonzero(em.live(y)[head : head + em.g.width[x]])
        channels = np.union1d(em.layout(x), live)
        layout = channels + head
        source = em.remapped(x, channels)
        inputs = [source, em.constant(f"{node.name}_pads", pads), *map(em.src, node.input[2:3])]
        em.copy(node, inputs)
        em.set(y, y, layout)


class SliceRule(Rule):
    """Slice. On the channel axis it selects a strided range of channels."""

    frozen = False

    def _params(self, node: onnx.NodeProto, g: GraphIndex) -> list[np.ndarray] | None:
        names = list(node.input[1:5])
        if len(names) < 2 or any(name and name not in g.constants for name in names):
            return None
        rank = len(g.shapes[node.input[0]])
        starts, ends = (g.constants[n].astype(np.int64) for n in names[:2])
        axes = (
            g.constants[names[2]].astype(np.int64) % rank
            if len(names) > 2 and names[2]
            else np.arange(len(starts))
        )
        steps = (
            g.constants[names[3]].astype(np.int64)
            if len(names) > 3 and names[3]
            else np.ones(len(starts), np.int64)
        )
        return [starts, ends, axes, steps]

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        if not (g.is_activation(node.input[0]) and g.is_activation(node.output[0])):
            return False
        params = self._params(node, g)
        return params is not None and 0 not in params[2]

    def source(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """For each output channel, the input channel it copies."""
        starts, ends, axes, steps = self._params(node, g)
        width = g.width[node.input[0]]
        if 1 not in axes:
            return np.arange(width)
        i = int(np.flatnonzero(axes == 1)[0])
        return np.arange(width)[slice(*slice(starts[i], ends[i], steps[i]).indices(width))]

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = _single(node, g)
        zero[y] = zero[x][self.source(node, g)]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = _single(node, g)
        const[y] = const[x][self.source(node, g)]

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = _single(node, g)
        np.logical_or.at(need[x], self.source(node, g), need[y])

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = _single(node, em.g)
        starts, ends, axes, steps = self._params(node, em.g)
        # Channel o of the output is input channel source[o]; keep those the input still has.
        source = self.source(node, em.g)
        present = np.isin(source, em.layout(x))
        name = em.remapped(x, source[present])
        spatial = axes != 1
        if spatial.any():
            parts = {"starts": starts, "ends": ends, "axes": axes, "steps": steps}
            inputs = [
                name,
                *(em.constant(f"{node.name}_{part}", v[spatial]) for part, v in parts.items()),
            ]
            em.copy(node, inputs)
            name = y
        em.set(y, name, np.flatnonzero(present))


class GatherRule(SliceRule):
    """Gather on the channel axis with constant indices: a channel permutation or selection."""

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)) or node.input[1] not in g.constants:
            return False
        indices = g.constants[node.input[1]]
        rank = len(g.shapes[x])
        return (
            indices.ndim == 1
            and int(attributes(node).get("axis", 0)) % rank == 1
            and len(g.shapes[y]) == rank
        )

    def source(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return g.constants[node.input[1]].astype(np.int64) % g.width[node.input[0]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = _single(node, em.g)
        source = self.source(node, em.g)
        present = np.isin(source, em.layout(x))
        em.set(y, em.remapped(x, source[present]), np.flatnonzero(present))


class SplitRule(Rule):
    """Split on the channel axis: the inverse of Concat, output i starts at its offset."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x = node.input[0]
        outputs = list(node.output)
        if not g.is_activation(x) or not all(g.is_activation(name) for name in outputs):
            return False
        if len(node.input) > 1 and node.input[1] and node.input[1] not in g.constants:
            return False
        rank = len(g.shapes[x])
        return (
            int(attributes(node).get("axis", 0)) % rank == 1
            and sum(g.width[name] for name in outputs) == g.width[x]
        )

    def _offsets(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return np.cumsum([0] + [g.width[name] for name in node.output])[:-1]

    def _pieces(self, node: onnx.NodeProto, g: GraphIndex) -> list[tuple[str, np.ndarray]]:
        return [
            (name, offset + np.arange(g.width[name]))
            for name, offset in zip(node.output, self._offsets(node, g), strict=True)
        ]

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        for name, channels in self._pieces(node, g):
            zero[name] = zero[node.input[0]][channels]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        for name, channels in self._pieces(node, g):
            const[name] = const[node.input[0]][channels]

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        for name, channels in self._pieces(node, g):
            need[node.input[0]][channels] |= need[name]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x = node.input[0]
        layout = em.layout(x)
        pieces = [
            (name, layout[np.isin(layout, channels)] - channels[0])
            for name, channels in self._pieces(node, em.g)
        ]
        if np.all(np.diff(layout) > 0) and all(len(kept) for _, kept in pieces):
            sizes = np.array([len(kept) for _, kept in pieces], np.int64)
            if "split" in attributes(node):  # before opset 13 the sizes are an attribute
                em.copy(node, [em.src(x)], {"axis": 1, "split": sizes.tolist()})
            else:
                em.copy(node, [em.src(x), em.constant(f"{node.name}_split", sizes)], {"axis": 1})
            for attribute in list(em.nodes[-1].attribute):
                if attribute.name == "num_outputs":
                    em.nodes[-1].attribute.remove(attribute)
            for name, kept in pieces:
                em.set(name, name, kept)
            return
        # An output left without channels (or an unsorted layout): select each piece.
        for (name, channels), (_, kept) in zip(self._pieces(node, em.g), pieces, strict=True):
            em.set(name, em.remapped(x, channels[0] + kept), kept)


class BinaryRule(Rule):
    """Add, Sub, Mul and Div between activations of one width, or with a per-channel constant."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        y = node.output[0]
        if not g.is_activation(y) or len(node.input) != 2:
            return False
        rank = len(g.shapes[y])
        for position, name in enumerate(node.input):
            if g.is_activation(name):
                if g.width[name] != g.width[y] or len(g.shapes[name]) != rank:
                    return False
            elif name not in g.constants:
                return False
            elif per_channel(g.constants[name], g.width[y], rank) is None:
                return False
            elif node.op_type == "Div" and position == 1 and (g.constants[name] == 0).any():
                return False
            elif node.op_type == "Div" and position == 0:
                return False
        return True

    def _operand_zero(self, name: str, y: str, g: GraphIndex, zero: Masks) -> np.ndarray:
        if g.is_activation(name):
            return zero[name]
        return per_channel(g.constants[name], g.width[y], len(g.shapes[y])) == 0

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        y = node.output[0]
        operands = [self._operand_zero(name, y, g, zero) for name in node.input]
        if node.op_type in {"Add", "Sub"}:
            zero[y] = np.logical_and(*operands)
        elif node.op_type == "Mul":
            zero[y] = np.logical_or(*operands)
        else:
            zero[y] = operands[0]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        y = node.output[0]
        a, b = (
            const[name]
            if g.is_activation(name)
            else per_channel(g.constants[name], g.width[y], len(g.shapes[y]))
            for name in node.input
        )
        with np.errstate(all="ignore"):
            const[y] = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}.get(
                node.op_type, np.divide
            )(a, b)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        y = node.output[0]
        for position, name in enumerate(node.input):
            if not g.is_activation(name):
                continue
            if node.op_type == "Mul":
                other = self._operand_zero(node.input[1 - position], y, g, zero)
                need[name] |= need[y] & ~other
            else:
                need[name] |= need[y]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g, y = em.g, node.output[0]
        activations = g.activation_inputs(node)
        layouts = [em.layout(name) for name in activations]
        if node.op_type == "Add" and len(activations) == 2:
            # A residual Add whose other branch is zero on every needed channel: the identity.
            for name, other in (activations, activations[::-1]):
                if len(em.layout(other)) == 0 and not (em.need[y] & (em.const[other] != 0)).any():
                    em.set(y, em.src(name), em.layout(name))
                    return
        # Channels constant at the output need not be carried; the others come from any input.
        layout = np.unique(np.concatenate(layouts)) if layouts else np.arange(0)
        layout = layout[np.isnan(em.const[y][layout])]
        rank = len(g.shapes[y])
        inputs = [
            em.remapped(name, layout)
            if g.is_activation(name)
            else em.channel_constant(name, g.constants[name], layout, g.width[y], rank)
            for name in node.input
        ]
        em.copy(node, inputs)
        em.set(y, y, layout)


class ConcatRule(Rule):
    """Concat on the channel axis: input i fills the output channels from its offset on."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        y = node.output[0]
        if not g.is_activation(y) or not all(g.is_activation(name) for name in node.input):
            return False
        rank = len(g.shapes[y])
        return (
            int(attributes(node).get("axis", 0)) % rank == 1
            and sum(g.width[name] for name in node.input) == g.width[y]
        )

    def _offsets(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return np.cumsum([0] + [g.width[name] for name in node.input])[:-1]

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = np.concatenate([zero[name] for name in node.input])

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = np.concatenate([const[name] for name in node.input])

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        y = node.output[0]
        for name, offset in zip(node.input, self._offsets(node, g), strict=True):
            need[name] |= need[y][offset : offset + g.width[name]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        y = node.output[0]
        parts = [
            (name, em.layout(name) + offset)
            for name, offset in zip(node.input, self._offsets(node, em.g), strict=True)
            if len(em.layout(name))
        ]
        if not parts:
            em.set(y, "", np.arange(0))
            return
        layout = np.concatenate([layout for _, layout in parts])
        if len(parts) == 1:
            em.set(y, em.src(parts[0][0]), layout)
            return
        em.copy(node, [em.src(name) for name, _ in parts])
        em.set(y, y, layout)


def _conv_groups(node: onnx.NodeProto) -> int:
    return int(attributes(node).get("group", 1))


class ConvRule(Rule):
    """Conv: dense, depthwise or grouped.

    The kept filters are the output channels that are needed and not zero; each is a
    bit-identical copy of the original filter, restricted to the input channels kept. A
    grouped Conv keeps the groups that hold a kept filter; as every group of a Conv must
    have the same size, each kept group carries as many rows and input channels as the
    largest needs (the extra rows are real filters whose outputs nothing needs).
    """

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)) or node.input[1] not in g.constants:
            return False
        if len(node.input) > 2 and node.input[2] and node.input[2] not in g.constants:
            return False
        groups = _conv_groups(node)
        return g.width[x] % groups == 0 and g.width[y] % groups == 0

    def _weight(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        return g.constants[node.input[1]]

    def _bias_zero(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        if len(node.input) > 2 and node.input[2]:
            return g.constants[node.input[2]] == 0
        return np.ones(g.width[node.output[0]], bool)

    def _contributes(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """(out, in) booleans: whether filter o has any non-zero weight on input channel c."""
        weight = self._weight(node, g)
        nonzero = (weight != 0).reshape(weight.shape[0], weight.shape[1], -1).any(axis=2)
        groups = _conv_groups(node)
        if groups == 1:
            return nonzero
        group_out, group_in = weight.shape[0] // groups, weight.shape[1]
        full = np.zeros((weight.shape[0], group_in * groups), bool)
        for group in range(groups):
            rows = slice(group * group_out, (group + 1) * group_out)
            full[rows, group * group_in : (group + 1) * group_in] = nonzero[rows]
        return full

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = node.input[0], node.output[0]
        reads_live = (self._contributes(node, g) & ~zero[x][None, :]).any(axis=1)
        zero[y] = self._bias_zero(node, g) & ~reads_live

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = node.input[0], node.output[0]
        need[x] |= (self._contributes(node, g) & need[y][:, None]).any(axis=0)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g, x, y = em.g, node.input[0], node.output[0]
        rows = np.flatnonzero(em.need[y] & ~em.zero[y])
        weight = self._weight(node, g)
        groups = _conv_groups(node)
        attrs: dict[str, object] = {}
        reads = self._contributes(node, g)[rows].any(axis=0)
        constants = em.constant_inputs(x, reads)
        fold = np.zeros(len(rows))
        if groups == 1 and len(constants) and self._pointwise(node, g):
            # A 1×1 conv without padding sees a constant channel as k at every pixel: k·W[:, c]
            # is an exact bias term.
            block = weight[np.ix_(rows, constants)].reshape(len(rows), len(constants))
            fold = block.astype(np.float64) @ em.const[x][constants]
            constants = np.arange(0)
        present = np.union1d(em.layout(x), constants)
        if groups == 1:
            columns = present if len(present) else np.arange(1)
            # Every input channel zero: one zero channel keeps the Conv well-formed.
            source = em.remapped(x, columns)
        else:
            rows, columns, channels = self._grouped(node, em, rows, present)
            source = em.remapped(x, channels)
            attrs["group"] = len(channels) // len(columns)
        inputs = [source, em.weight_slice(node, 1, weight, rows, columns)]
        has_bias = len(node.input) > 2 and node.input[2]
        if fold.any():
            bias = g.constants[node.input[2]][rows] if has_bias else np.zeros(len(rows))
            folded = (bias.astype(np.float64) + fold).astype(weight.dtype)
            inputs.append(em.constant(node.input[2] if has_bias else f"{node.name}_bias", folded))
        elif has_bias:
            inputs.append(em.constant(node.input[2], g.constants[node.input[2]][rows]))
        em.copy(node, inputs, attrs)
        em.set(y, y, rows)

    def _pointwise(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        kernel = self._weight(node, g).shape[2:]
        return all(size == 1 for size in kernel) and not any(attributes(node).get("pads", []))

    def _grouped(
        self, node: onnx.NodeProto, em: Emitter, rows: np.ndarray, present: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows, weight columns (within a group) and input channels of the smaller Conv."""
        weight = self._weight(node, em.g)
        group_out, group_in = weight.shape[0] // _conv_groups(node), weight.shape[1]
        kept = np.unique(rows // group_out)
        per_group = [rows[rows // group_out == group] for group in kept]
        size = max(len(r) for r in per_group)
        padded = []
        for group, chosen in zip(kept, per_group, strict=True):
            others = np.setdiff1d(np.arange(group * group_out, (group + 1) * group_out), chosen)
            padded.append(np.sort(np.concatenate([chosen, others[: size - len(chosen)]])))
        local = np.unique(
            np.concatenate([present[present // group_in == group] % group_in for group in kept])
        )
        if len(local) == 0:
            local = np.arange(1)
        channels = np.concatenate([group * group_in + local for group in kept])
        return np.concatenate(padded), local, channels


class GemmRule(Rule):
    """Gemm or MatMul of a (N, F) activation with a constant weight."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)) or len(g.shapes[x]) != 2:
            return False
        if node.input[1] not in g.constants or g.is_activation(node.input[1]):
            return False
        attrs = attributes(node)
        if attrs.get("transA", 0):
            return False
        if len(node.input) > 2 and node.input[2]:
            bias = g.constants.get(node.input[2])
            if bias is None or per_channel(bias, g.width[y], 2) is None:
                return False
        return True

    def _matrix(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """The weight as (out, in)."""
        weight = g.constants[node.input[1]]
        transposed = node.op_type == "Gemm" and attributes(node).get("transB", 0)
        return weight if transposed else weight.T

    def _bias(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        width = g.width[node.output[0]]
        if len(node.input) > 2 and node.input[2]:
            return per_channel(g.constants[node.input[2]], width, 2)
        return np.zeros(width)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = node.input[0], node.output[0]
        matrix = self._matrix(node, g)
        reads_live = ((matrix != 0) & ~zero[x][None, :]).any(axis=1)
        zero[y] = (self._bias(node, g) == 0) & ~reads_live

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = node.input[0], node.output[0]
        need[x] |= ((self._matrix(node, g) != 0) & need[y][:, None]).any(axis=0)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g, x, y = em.g, node.input[0], node.output[0]
        rows = np.flatnonzero(em.need[y] & ~em.zero[y])
        matrix = self._matrix(node, g)
        constants = em.constant_inputs(x, (matrix[rows] != 0).any(axis=0))
        attrs = attributes(node)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        fold = np.zeros(len(rows))
        if (
            len(constants)
            and node.op_type == "Gemm"
            and attrs.get("alpha", 1.0) == 1.0
            and (attrs.get("beta", 1.0) == 1.0 or not has_bias)
        ):
            # A constant feature k adds k·W[:, c] to every output: an exact bias term.
            fold = matrix[np.ix_(rows, constants)].astype(np.float64) @ em.const[x][constants]
            constants = np.arange(0)
        columns = np.union1d(em.layout(x), constants)
        if len(columns) == 0:
            columns = np.arange(1)
        source = em.remapped(x, columns)
        weight = g.constants[node.input[1]]
        transposed = node.op_type == "Gemm" and attrs.get("transB", 0)
        axes = (rows, columns) if transposed else (columns, rows)
        inputs = [source, em.weight_slice(node, 1, weight, *axes)]
        if fold.any():
            bias = self._bias(node, g)[rows]
            name = node.input[2] if has_bias else f"{node.name}_bias"
            inputs.append(em.constant(name, (bias + fold).astype(weight.dtype)))
        elif has_bias:
            bias = g.constants[node.input[2]]
            inputs.append(em.channel_constant(node.input[2], bias, rows, g.width[y], 2))
        em.copy(node, inputs, {"beta": 1.0} if fold.any() else {})
        em.set(y, y, rows)


class FlattenRule(Rule):
    """Flatten (or Reshape) of (N, C, H, W) into (N, C·H·W): channel c becomes a block."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)):
            return False
        in_shape, out_shape = g.shapes[x], g.shapes[y]
        if len(out_shape) != 2 or any(d is None for d in in_shape[1:]):
            return False
        if node.op_type == "Flatten" and attributes(node).get("axis", 1) != 1:
            return False
        return out_shape[1] == int(np.prod(in_shape[1:]))

    def _block(self, node: onnx.NodeProto, g: GraphIndex) -> int:
        return g.width[node.output[0]] // g.width[node.input[0]]

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = np.repeat(zero[node.input[0]], self._block(node, g))

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = np.repeat(const[node.input[0]], self._block(node, g))

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        block = self._block(node, g)
        need[node.input[0]] |= need[node.output[0]].reshape(-1, block).any(axis=1)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = node.input[0], node.output[0]
        block = self._block(node, em.g)
        layout = em.layout(x)
        if len(layout) == 0:
            layout = np.arange(1)
        inputs = [em.remapped(x, layout)]
        if node.op_type == "Reshape":
            inputs.append(em.constant(f"{node.name}_shape", np.array([0, -1], np.int64)))
        # Shape [0, -1] copies the batch size; allowzero=1 would read 0 as a zero size.
        keeps_batch = node.op_type == "Reshape" and "allowzero" in attributes(node)
        em.copy(node, inputs, {"allowzero": 0} if keeps_batch else {})
        em.set(y, y, (layout[:, None] * block + np.arange(block)).reshape(-1))


class ShapeRule(Rule):
    """Shape reads no channel values; only the channel count must stay the original one."""

    frozen = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        return g.is_activation(node.input[0])

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        return None

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        return None

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x = node.input[0]
        rank = len(em.g.shapes[x])
        attrs = attributes(node)
        start = int(attrs.get("start", 0)) % (rank + 1)
        end = int(attrs.get("end", rank))
        end = end % (rank + 1) if end < 0 else min(end, rank)
        if not start <= 1 < end or np.array_equal(em.layout(x), np.arange(em.g.width[x])):
            em.copy(node, [em.src(x)])
            return
        source = em.src(x) or em.remapped(x, np.arange(1))
        parts = []
        if start < 1:
            parts.append(em.dims(source, start, 1, node.name))
        parts.append(em.constant(f"{node.name}_channels", np.array([em.g.width[x]], np.int64)))
        if end > 2:
            parts.append(em.dims(source, 2, end, node.name))
        em.node("Concat", parts, node.name, output=node.output[0], axis=0)


ZERO_PRESERVING_OPS = (
    "Relu LeakyRelu HardSwish Tanh Identity Neg Abs Erf Gelu Elu Selu Softsign Mish "
    "MaxPool GlobalAveragePool GlobalMaxPool LpPool Dropout"
).split()
NON_ZERO_PRESERVING_OPS = "Sigmoid HardSigmoid Softplus Exp Cos".split()


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

RULES: dict[str, Rule] = {
    **{op: ZeroPreservingRule() for op in ZERO_PRESERVING_OPS},
    **{op: NonZeroPreservingRule() for op in NON_ZERO_PRESERVING_OPS},
    "PRelu": ZeroPreservingRule(params=(1,)),
    "AveragePool": AveragePoolRule(),
    **{op: ReduceRule() for op in "ReduceMean ReduceMax ReduceMin ReduceSum".split()},
    "Resize": ResizeRule(),
    "Upsample": ResizeRule(),
    "Clip": ClipRule(),
    "BatchNormalization": BatchNormRule(),
    "InstanceNormalization": NonZeroPreservingRule(params=(1, 2), vectors=True),
    "Pad": PadRule(),
    "Slice": SliceRule(),
    "Gather": GatherRule(),
    "Split": SplitRule(),
    "Add": BinaryRule(),
    "Sub": BinaryRule(),
    "Mul": BinaryRule(),
    "Div": BinaryRule(),
    "Concat": ConcatRule(),
    "Conv": ConvRule(),
    "Gemm": GemmRule(),
    "MatMul": GemmRule(),
    "Flatten": FlattenRule(),
    "Shape": ShapeRule(),
    "Reshape": FlattenRule(),
}


def rule_for(node: onnx.NodeProto, g: GraphIndex) -> Rule:
    rule = RULES.get(node.op_type, FROZEN)
    return rule if rule.accepts(node, g) else FROZEN
