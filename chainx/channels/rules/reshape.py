"""Rules for Flatten and Reshape: a flatten makes each channel a block of features, a
reshape that only adds or drops unit dimensions keeps each channel as it is (attention's
reshapes into and out of heads are in heads.py)."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.rules.base import Masks, Rule, Values
from chainx.channels.rules.channelwise import ChannelwiseRule
from chainx.onnx.graph import GraphIndex, attributes


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


class UnitReshapeRule(ChannelwiseRule):
    """A Reshape between (N, C) and (N, C, 1, 1), either way or to itself: each channel
    keeps its values (tf2onnx writes Keras' squeeze-and-excitation so)."""

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)):
            return False
        shapes = g.shapes[x], g.shapes[y]
        return (
            all(
                len(shape) >= 2 and shape[1] is not None and all(d == 1 for d in shape[2:])
                for shape in shapes
            )
            and shapes[0][1] == shapes[1][1]
        )

    def constant_of(self, node: onnx.NodeProto, g: GraphIndex, values: np.ndarray) -> np.ndarray:
        return values.copy()

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = node.input[0], node.output[0]
        layout = np.union1d(em.layout(x), np.flatnonzero(em.live(y)))
        rank = len(em.g.shapes[y])
        # Batch copied (0), channels counted (-1): the shape fits any number kept.
        shape = em.constant(f"{node.name}_shape", np.array([0, -1] + [1] * (rank - 2), np.int64))
        # allowzero=1 would read the 0 as a zero size; before opset 14 there is none.
        keeps_batch = "allowzero" in attributes(node)
        em.copy(node, [em.remapped(x, layout), shape], {"allowzero": 0} if keeps_batch else {})
        em.set(y, y, layout)
