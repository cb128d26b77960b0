"""Ops that move channels: Pad, Slice, Gather, Split and Concat on the channel axis,
and Shape."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.rules.base import Masks, Rule, Values, single_io
from chainx.onnx.graph import GraphIndex, attributes


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
            # A non-zero pad value would fill the border of a zero or constant channel.
            and (value_zero if mode == b"constant" else not pads_channels)
        )

    def _head(self, node: onnx.NodeProto, g: GraphIndex) -> int:
        return int(self._pads(node, g)[1])

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = single_io(node, g)
        out = np.ones(g.width[y], bool)
        head = self._head(node, g)
        out[head : head + g.width[x]] = zero[x]
        zero[y] = out

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = single_io(node, g)
        out = np.zeros(g.width[y])
        head = self._head(node, g)
        # Spatial zero padding makes a constant channel vary at the borders.
        spatial = self._pads(node, g).reshape(2, -1)[:, 2:].any()
        inner = np.where(const[x] == 0, 0.0, np.nan) if spatial else const[x]
        out[head : head + g.width[x]] = inner
        const[y] = out

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = single_io(node, g)
        head = self._head(node, g)
        need[x] |= need[y][head : head + g.width[x]]

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
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
        if params is None:
            return False
        starts, ends, axes, steps = params
        # The batch axis may appear only as a whole (tf2onnx slices every axis at once).
        batch = np.flatnonzero(axes == 0)
        return all(starts[i] == 0 and steps[i] == 1 and ends[i] >= 2**31 - 1 for i in batch)

    def source(self, node: onnx.NodeProto, g: GraphIndex) -> np.ndarray:
        """For each output channel, the input channel it copies."""
        starts, ends, axes, steps = self._params(node, g)
        width = g.width[node.input[0]]
        if 1 not in axes:
            return np.arange(width)
        i = int(np.flatnonzero(axes == 1)[0])
        # arange over the clamped bounds: a stop of -1 (down to channel 0) is no index.
        return np.arange(*slice(starts[i], ends[i], steps[i]).indices(width))

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        x, y = single_io(node, g)
        zero[y] = zero[x][self.source(node, g)]

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        x, y = single_io(node, g)
        const[y] = const[x][self.source(node, g)]

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        x, y = single_io(node, g)
        np.logical_or.at(need[x], self.source(node, g), need[y])

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        x, y = single_io(node, em.g)
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
        x, y = single_io(node, em.g)
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
