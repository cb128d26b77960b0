"""Ops that combine channels: Add/Sub/Mul/Div between tensors, Conv and Gemm/MatMul."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.rules.base import Masks, Rule, Values
from chainx.onnx.graph import GraphIndex, attributes


class BinaryRule(Rule):
    """Add, Sub, Mul and Div between activations of one width, or with a per-channel
    constant; Pow of an activation by a constant exponent (GELU's tanh form cubes)."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        y = node.output[0]
        if not g.is_activation(y) or len(node.input) != 2:
            return False
        rank = len(g.shapes[y])
        for position, name in enumerate(node.input):
            if g.is_activation(name):
                if g.width[name] != g.width[y] or len(g.shapes[name]) != rank:
                    return False
                if g.axis[name] != g.axis[y]:
                    return False
            elif name not in g.constants:
                return False
            elif g.channel_values(g.constants[name], y) is None:
                return False
            elif node.op_type == "Div" and position == 1 and (g.constants[name] == 0).any():
                return False
            elif node.op_type == "Div" and position == 0:
                return False
        if node.op_type == "Pow":
            return g.is_activation(node.input[0]) and not g.is_activation(node.input[1])
        return True

    def _operand_zero(self, name: str, y: str, g: GraphIndex, zero: Masks) -> np.ndarray:
        if g.is_activation(name):
            return zero[name]
        return g.channel_values(g.constants[name], y) == 0

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        y = node.output[0]
        operands = [self._operand_zero(name, y, g, zero) for name in node.input]
        if node.op_type in {"Add", "Sub"}:
            zero[y] = np.logical_and(*operands)
        elif node.op_type == "Mul":
            zero[y] = np.logical_or(*operands)
        elif node.op_type == "Pow":  # 0^e is 0 only for e > 0
            zero[y] = operands[0] & (g.channel_values(g.constants[node.input[1]], y) > 0)
        else:
            zero[y] = operands[0]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        y = node.output[0]
        a, b = (
            const[name] if g.is_activation(name) else g.channel_values(g.constants[name], y)
            for name in node.input
        )
        with np.errstate(all="ignore"):
            const[y] = {
                "Add": np.add,
                "Sub": np.subtract,
                "Mul": np.multiply,
                "Pow": np.power,
            }.get(node.op_type, np.divide)(a, b)

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
        inputs = [
            em.remapped(name, layout)
            if g.is_activation(name)
            else em.channel_constant(name, g.constants[name], layout, y)
            for name in node.input
        ]
        em.copy(node, inputs)
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

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        """A filter that reads only zero channels outputs its bias at every pixel, exactly:
        zero padding adds zeros too (a depthwise filter whose input channel was removed)."""
        x, y = node.input[0], node.output[0]
        reads_live = (self._contributes(node, g) & ~zero[x][None, :]).any(axis=1)
        bias = (
            g.constants[node.input[2]].astype(np.float64)
            if len(node.input) > 2 and node.input[2]
            else np.zeros(g.width[y])
        )
        const[y] = np.where(reads_live, np.nan, bias)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = node.input[0], node.output[0]
        need[x] |= (self._contributes(node, g) & need[y][:, None]).any(axis=0)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g, x, y = em.g, node.input[0], node.output[0]
        rows = np.flatnonzero(em.need[y] & np.isnan(em.const[y]))
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
            source = em.remapped(x, columns) if len(present) else em.zero_channel(x)
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
    """Gemm or MatMul of an activation with a constant weight: a fully connected layer on
    (N, F) features, or a Linear layer on the last axis of (B, N, D) tokens (or of a
    channels-last (B, H, W, C) map)."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)):
            return False
        rank = len(g.shapes[x])
        if rank != len(g.shapes[y]) or g.axis[x] != rank - 1 or g.axis[y] != rank - 1:
            return False
        if rank > 2 and node.op_type != "MatMul":
            return False
        if node.input[1] not in g.constants or g.is_activation(node.input[1]):
            return False
        if g.constants[node.input[1]].ndim != 2:
            return False
        attrs = attributes(node)
        if attrs.get("transA", 0):
            return False
        if len(node.input) > 2 and node.input[2]:
            bias = g.constants.get(node.input[2])
            if bias is None or g.channel_values(bias, y) is None:
                return False
        return True

    def _matrix(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """The weight as (out, in)."""
        weight = g.constants[node.input[1]]
        transposed = node.op_type == "Gemm" and attributes(node).get("transB", 0)
        return weight if transposed else weight.T

    def _bias(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        y = node.output[0]
        if len(node.input) > 2 and node.input[2]:
            return g.channel_values(g.constants[node.input[2]], y)
        return np.zeros(g.width[y])

    def _reads_live(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> np.ndarray:
        return ((self._matrix(node, g) != 0) & ~zero[node.input[0]][None, :]).any(axis=1)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = (self._bias(node, g) == 0) & ~self._reads_live(node, g, zero)

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        """A unit that reads only zero features outputs its bias (a whole attention branch
        or MLP removed leaves the bias of its output projection)."""
        reads_live = self._reads_live(node, g, zero)
        const[node.output[0]] = np.where(reads_live, np.nan, self._bias(node, g))

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = node.input[0], node.output[0]
        need[x] |= ((self._matrix(node, g) != 0) & need[y][:, None]).any(axis=0)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g, x, y = em.g, node.input[0], node.output[0]
        rows = np.flatnonzero(em.live(y))
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
        source = em.remapped(x, columns) if len(columns) else em.zero_channel(x)
        if len(columns) == 0:
            columns = np.arange(1)
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
            inputs.append(em.channel_constant(node.input[2], bias, rows, y))
        em.copy(node, inputs, {"beta": 1.0} if fold.any() else {})
        em.set(y, y, rows)
