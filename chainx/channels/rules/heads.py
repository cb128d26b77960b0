"""Rules for attention: the ops that carry heads from the Q/K/V projections to the output
projection, where the channel axis moves (rules/base.py's `any_axis`).

A Linear layer's features (B, N, H·Dh) are split into heads (B, N, [3,] H, Dh); the head
axis is transposed forward, split into Q, K and V along another axis, multiplied head by
head (QKᵀ, softmax, ·V), transposed back and merged into (B, N, H·Dh) for the output
projection. A head that no output needs is dropped from every one of these tensors, so
its rows of the Q/K/V weights and its columns of the output weight go with it.
"""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.rules.base import Masks, Rule, Values, single_io
from chainx.onnx.axes import head_split, merge_heads, unit_axes_moved
from chainx.onnx.graph import GraphIndex, attributes


def _shape_constant(node: onnx.NodeProto, g: GraphIndex) -> np.ndarray | None:
    if len(node.input) < 2 or node.input[1] not in g.constants:
        return None
    return g.constants[node.input[1]]


class HeadSplitRule(Rule):
    """Reshape (…, D) → (…, [k,] H, Dh): feature c belongs to head (c // Dh) mod H. Packed
    Q/K/V (timm's (B, N, 3, H, Dh)) put all three of a head's slices in that head."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)):
            return False
        in_shape, out_shape = g.shapes[x], g.shapes[y]
        shape = _shape_constant(node, g)
        rank_in, rank_out = len(in_shape), len(out_shape)
        start = head_split(in_shape, out_shape)
        return (
            rank_in >= 3
            and g.axis[x] == rank_in - 1
            and g.axis[y] == rank_out - 2
            and start is not None
            and shape is not None
            and len(shape) == rank_out
            and (shape[start:] > 0).all()
        )

    def _heads_of(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        heads, size = g.shapes[node.output[0]][-2:]
        return (np.arange(g.width[node.input[0]]) // size) % heads

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = single_io(node, g)
        live = np.zeros(g.width[y], bool)
        np.logical_or.at(live, self._heads_of(node, g), ~zero[x])
        zero[y] = ~live

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = np.full(g.width[node.output[0]], np.nan)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = single_io(node, g)
        need[x] |= need[y][self._heads_of(node, g)]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
        heads = np.flatnonzero(em.live(y))
        count, size = em.g.shapes[y][-2:]
        groups = em.g.width[x] // (count * size)
        channels = (
            np.arange(groups)[:, None, None] * count * size
            + heads[None, :, None] * size
            + np.arange(size)[None, None, :]
        ).reshape(-1)
        shape = _shape_constant(node, em.g).copy()
        shape[-2] = len(heads)
        em.copy(node, [em.remapped(x, channels), em.constant(f"{node.name}_shape", shape)])
        em.set(y, y, heads)


class HeadMergeRule(Rule):
    """Reshape (…, H, Dh) → (…, H·Dh): head h becomes features h·Dh … h·Dh + Dh − 1."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)):
            return False
        in_shape, out_shape = g.shapes[x], g.shapes[y]
        shape = _shape_constant(node, g)
        return (
            g.axis[x] == len(in_shape) - 2
            and g.axis[y] == len(out_shape) - 1
            and merge_heads(in_shape, out_shape)
            and shape is not None
            and len(shape) == len(out_shape)
            and shape[-1] == out_shape[-1]
        )

    def _size(self, node: onnx.NodeProto, g: GraphIndex) -> int:
        return int(g.shapes[node.input[0]][-1])

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = np.repeat(zero[node.input[0]], self._size(node, g))

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = np.repeat(const[node.input[0]], self._size(node, g))

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = single_io(node, g)
        need[x] |= need[y].reshape(g.width[x], -1).any(axis=1)

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
        size = self._size(node, em.g)
        heads = em.layout(x) if len(em.layout(x)) else np.arange(1)
        shape = _shape_constant(node, em.g).copy()
        shape[-1] = len(heads) * size
        em.copy(node, [em.remapped(x, heads), em.constant(f"{node.name}_shape", shape)])
        em.set(y, y, (heads[:, None] * size + np.arange(size)).reshape(-1))


class UnitAxesRule(Rule):
    """A Reshape that only adds or drops unit axes (a batch of 1 folded into the heads), or
    regroups the leading axes of a tensor whose channels are innermost (tokens × batch as
    rows of nn.MultiheadAttention's output projection): each channel keeps its values; the
    shape's entry for the channel axis is rewritten."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)) or g.width[x] != g.width[y]:
            return False
        shape = _shape_constant(node, g)
        if shape is None or len(shape) != len(g.shapes[y]):
            return False
        moved = unit_axes_moved(g.shapes[x], g.shapes[y], g.axis[x])
        if g.axis[x] == len(g.shapes[x]) - 1 and g.axis[y] == len(g.shapes[y]) - 1:
            moved = g.axis[y]  # innermost both sides: rows regroup, each keeps its channels
        entry = shape[g.axis[y]] if moved == g.axis[y] else None
        return entry == g.width[y] or (entry == -1 and (shape == -1).sum() == 1)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = zero[node.input[0]].copy()

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = const[node.input[0]].copy()

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        need[node.input[0]] |= need[node.output[0]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
        layout = np.union1d(em.layout(x), np.flatnonzero(em.live(y)))
        shape = _shape_constant(node, em.g).copy()
        if shape[em.g.axis[y]] != -1:
            shape[em.g.axis[y]] = len(layout)
        em.copy(node, [em.remapped(x, layout), em.constant(f"{node.name}_shape", shape)])
        em.set(y, y, layout)


class TransposeRule(Rule):
    """Transpose moves the channel axis; each channel keeps its values."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x, y = node.input[0], node.output[0]
        if not (g.is_activation(x) and g.is_activation(y)) or g.width[x] != g.width[y]:
            return False
        perm = attributes(node).get("perm")
        return perm is not None and list(perm).index(g.axis[x]) == g.axis[y]

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = zero[node.input[0]].copy()

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = const[node.input[0]].copy()

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        need[node.input[0]] |= need[node.output[0]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
        layout = np.union1d(em.layout(x), np.flatnonzero(em.live(y)))
        em.copy(node, [em.remapped(x, layout)])
        em.set(y, y, layout)


class HeadMatMulRule(Rule):
    """MatMul of two activations batched over their channel axis (QKᵀ and softmax·V, head
    by head): output head h reads head h of both inputs only."""

    frozen = False
    any_axis = True

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        names = [node.input[0], node.input[1], node.output[0]]
        if not all(g.is_activation(name) for name in names):
            return False
        ranks = {len(g.shapes[name]) for name in names}
        axes = {g.axis[name] for name in names}
        widths = {g.width[name] for name in names}
        if len(ranks) != 1 or len(axes) != 1 or len(widths) != 1:
            return False
        return axes.pop() < ranks.pop() - 2

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        zero[node.output[0]] = zero[node.input[0]] | zero[node.input[1]]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        const[node.output[0]] = np.full(g.width[node.output[0]], np.nan)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        a, b, y = node.input[0], node.input[1], node.output[0]
        need[a] |= need[y] & ~zero[b]
        need[b] |= need[y] & ~zero[a]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        y = node.output[0]
        layout = np.flatnonzero(em.live(y))
        em.copy(node, [em.remapped(name, layout) for name in node.input[:2]])
        em.units(node, layout)
        em.set(y, y, layout)


class OffAxisRule(Rule):
    """Split, Slice, Squeeze or Unsqueeze on axes other than the channel axis (timm splits
    packed Q/K/V along a leading axis): every output carries the input's channels."""

    frozen = False
    any_axis = True

    def _axes(self, node: onnx.NodeProto, g: GraphIndex) -> list[int] | None:
        x = node.input[0]
        attrs = attributes(node)
        rank = len(g.shapes[node.output[0]] if node.op_type == "Unsqueeze" else g.shapes[x])
        if node.op_type == "Split":
            return [int(attrs.get("axis", 0)) % rank]
        if node.op_type == "Slice":
            if len(node.input) > 3 and node.input[3]:
                axes = g.constants.get(node.input[3])
                return None if axes is None else [int(a) % rank for a in axes]
            starts = g.constants.get(node.input[1])
            return None if starts is None else list(range(len(starts)))
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in g.constants:
            axes = g.constants[node.input[1]]
        return None if axes is None else [int(a) % rank for a in np.atleast_1d(axes)]

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        x = node.input[0]
        outputs = [name for name in node.output if name]
        if not g.is_activation(x) or not all(g.is_activation(name) for name in outputs):
            return False
        if any(g.width[name] != g.width[x] for name in outputs):
            return False
        if any(name and name not in g.constants for name in node.input[1:]):
            return False
        axes = self._axes(node, g)
        if axes is None:
            return False
        channel = g.axis[outputs[0]] if node.op_type == "Unsqueeze" else g.axis[x]
        return channel not in axes

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        for name in node.output:
            if name:
                zero[name] = zero[node.input[0]].copy()

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        for name in node.output:
            if name:
                const[name] = const[node.input[0]].copy()

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        for name in node.output:
            if name:
                need[node.input[0]] |= need[name]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x = node.input[0]
        live = [np.flatnonzero(em.live(name)) for name in node.output if name]
        layout = np.union1d(em.layout(x), np.concatenate(live))
        em.copy(node, [em.remapped(x, layout), *[em.src(name) for name in node.input[1:]]])
        for name in node.output:
            if name:
                em.set(name, name, layout)
