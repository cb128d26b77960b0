"""The emitter: writes the smaller graph node by node for the channel rules, tracking per
original tensor its emitted name and *layout* (the original channel indices it carries)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.channels.states import ChannelStates
from chainx.onnx.graph import GraphIndex


@dataclass
class WeightSlice:
    """A weight of the chain is `original[np.ix_(*axes)]`, bit for bit.

    A node without a weight whose units are scored (attention's softmax·V, one unit per
    head) records `original` "" and the units it computes as `axes[1]`.
    """

    node: str
    original: str
    axes: tuple[list[int], ...]


class Emitter:
    """Builds the new graph; tracks, per original tensor, its emitted name and layout."""

    def __init__(self, analysis: ChannelStates) -> None:
        self.g: GraphIndex = analysis.g
        self.zero = analysis.zero
        self.const = analysis.const
        self.need = analysis.need
        self.live = analysis.live
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.slices: list[WeightSlice] = []
        self.frozen: list[tuple[str, str]] = []
        self.refilled = 0  # removed channels re-created (as constants) for frozen ops
        self._names: dict[str, str] = {}
        self._layouts: dict[str, np.ndarray] = {}
        self._remaps: dict[tuple[str, tuple[int, ...]], str] = {}
        self._taken = {name for node in self.g.nodes for name in [*node.input, *node.output]}
        self._taken |= set(self.g.constants)
        x = self.g.input_name
        self.set(x, x, np.arange(self.g.width[x]))

    def fresh(self, base: str) -> str:
        name, suffix = base, 0
        while name in self._taken:
            suffix += 1
            name = f"{base}_{suffix}"
        self._taken.add(name)
        return name

    def set(self, tensor: str, name: str, layout: np.ndarray) -> None:
        self._names[tensor] = name
        self._layouts[tensor] = np.asarray(layout, np.int64)

    def layout(self, tensor: str) -> np.ndarray:
        return self._layouts[tensor]

    def placed(self) -> dict[str, tuple[str, np.ndarray]]:
        """Original tensor → its emitted name and layout, for every tensor emitted."""
        named = self._names.items()
        return {t: (n, self._layouts[t]) for t, n in named if n and t in self._layouts}

    def src(self, tensor: str) -> str:
        """The emitted name of an original tensor, copying constants over on first use."""
        if tensor == "" or tensor in self._names:
            return self._names.get(tensor, "")
        if tensor in self.g.constants:
            if tensor not in self.initializers:
                value = self.g.constants[tensor]
                self.initializers[tensor] = numpy_helper.from_array(value, tensor)
            return tensor
        raise KeyError(f"tensor {tensor!r} is used before it is produced")

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.initializers[name] = numpy_helper.from_array(np.asarray(value), name)
        return name

    def channel_constant(self, name: str, value: np.ndarray, layout: np.ndarray, like: str) -> str:
        """A per-channel constant (against the activation `like`) restricted to `layout`, in
        its original shape and dtype."""
        if self.g.channel_values(value, like) is None:
            raise ValueError(f"{name!r} is not a per-channel constant")
        position = self.g.axis[like] - (len(self.g.shapes[like]) - value.ndim)
        if value.size == 1 or position < 0:
            return self.src(name)
        return self.constant(name, np.take(value, layout, axis=position))

    def channel_shape(self, tensor: str, channels: int) -> list[int]:
        """(1, …, channels, …, 1): broadcasts per channel against `tensor`."""
        shape = [1] * len(self.g.shapes[tensor])
        shape[self.g.axis[tensor]] = channels
        return shape

    def weight_slice(
        self, node: onnx.NodeProto, position: int, weight: np.ndarray, *axes: np.ndarray
    ) -> str:
        """A bit-identical slice of a weight; recorded so that verification can check it."""
        original = node.input[position]
        index = (
            np.ix_(*axes)
            if len(axes) == weight.ndim
            else np.ix_(*axes, *[np.arange(size) for size in weight.shape[len(axes) :]])
        )
        self.slices.append(
            WeightSlice(node.name, original, tuple([int(i) for i in a] for a in axes))
        )
        return self.constant(original, weight[index])

    def units(self, node: onnx.NodeProto, layout: np.ndarray) -> None:
        """Record the units a weightless node computes (see WeightSlice)."""
        self.slices.append(WeightSlice(node.name, "", ([], [int(i) for i in layout])))

    def copy(
        self, node: onnx.NodeProto, inputs: list[str], attrs: dict[str, object] | None = None
    ) -> None:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        new.input.extend(inputs)
        for key, value in (attrs or {}).items():
            for attribute in list(new.attribute):
                if attribute.name == key:
                    new.attribute.remove(attribute)
            new.attribute.append(helper.make_attribute(key, value))
        self.nodes.append(new)
        for name in node.output:
            self._names.setdefault(name, name)

    def remapped(self, tensor: str, target: np.ndarray) -> str:
        """The tensor carrying exactly the channels `target`, in that order.

        Channels the tensor lacks are known constants or unneeded: they are filled with
        their constant (zero when unneeded).
        """
        target = np.asarray(target, np.int64)
        layout = self.layout(tensor)
        if np.array_equal(layout, target):
            return self.src(tensor)
        key = (tensor, tuple(int(t) for t in target))
        if key in self._remaps:
            return self._remaps[key]
        if len(layout) == 0:
            name = self._zeros(tensor, len(target))
        else:
            name = self._gather(tensor, layout, target)
        fill = np.where(np.isin(target, layout), 0.0, np.nan_to_num(self.const[tensor][target]))
        if fill.any():
            shape = self.channel_shape(tensor, len(target))
            value = self.constant(f"{tensor}_chainx_fill", fill.astype(np.float32).reshape(shape))
            name = self.node("Add", [name, value], f"{tensor}_chainx_fill")
        self._remaps[key] = name
        return name

    def constant_inputs(self, tensor: str, readers: np.ndarray) -> np.ndarray:
        """Channels of `tensor` missing from its layout that hold a non-zero constant and
        are read by `readers`: a consumer must fold them or carry them."""
        missing = ~np.isin(np.arange(self.g.width[tensor]), self.layout(tensor))
        const = self.const[tensor]
        return np.flatnonzero(missing & readers & ~np.isnan(const) & (const != 0))

    def _gather(self, tensor: str, layout: np.ndarray, target: np.ndarray) -> str:
        position = {int(c): i for i, c in enumerate(layout)}
        indices = np.array([position.get(int(c), len(layout)) for c in target], np.int64)
        source = self.src(tensor)
        rank, axis = len(self.g.shapes[tensor]), self.g.axis[tensor]
        base = f"{tensor}_chainx"
        missing = indices == len(layout)
        if missing.any():
            head = int(np.argmax(~missing)) if (~missing).any() else len(target)
            present = indices[~missing]
            contiguous = (
                len(present) == len(layout)
                and np.array_equal(present, np.arange(len(layout)))
                and np.array_equal(np.flatnonzero(~missing), head + np.arange(len(layout)))
            )
            pads = np.zeros(2 * rank, np.int64)
            if contiguous:
                pads[axis], pads[axis + rank] = head, len(target) - head - len(layout)
                return self.node("Pad", [source, self.constant(f"{base}_pads", pads)], base)
            pads[axis + rank] = 1
            source = self.node("Pad", [source, self.constant(f"{base}_pads", pads)], base)
        index = self.constant(f"{base}_index", indices)
        return self.node("Gather", [source, index], base, axis=axis)

    def zero_channel(self, tensor: str) -> str:
        """One channel of zeros in `tensor`'s shape, for a Conv or Gemm none of whose input
        channels is left (each zero, or a constant folded into its bias): it stays
        well-formed and adds nothing. A remapped channel would carry its constant and count
        it a second time."""
        return self._zeros(tensor, 1)

    def _zeros(self, tensor: str, channels: int) -> str:
        shape = list(self.g.shapes[tensor])
        shape[self.g.axis[tensor]] = channels
        base = f"{tensor}_chainx_zeros"
        if all(d is not None for d in shape):
            # A shape, not a tensor of zeros: the chain's file holds no parameters for it.
            full = self.constant(f"{base}_shape", np.array(shape, np.int64))
        else:
            batch = self.dims(self.g.input_name, 0, 1, base)
            pieces = []
            for axis, size in enumerate(shape):
                factor = self.g.batch_factor(tensor, axis) if size is None else None
                if size is not None:
                    pieces.append(self.constant(f"{base}_{axis}", np.array([size], np.int64)))
                elif factor is None:
                    raise ValueError(f"{tensor!r} has an unknown size other than its batch")
                elif factor == 1:
                    pieces.append(batch)
                else:
                    times = self.constant(f"{base}_{axis}", np.array([factor], np.int64))
                    pieces.append(self.node("Mul", [batch, times], f"{base}_{axis}"))
            full = self.node("Concat", pieces, base, axis=0)
        return self.node(
            "ConstantOfShape",
            [full],
            base,
            value=numpy_helper.from_array(np.zeros(1, np.float32)),
        )

    def dims(self, source: str, start: int, end: int, base: str) -> str:
        """Dims [start, end) of a tensor's shape, as Shape + Slice (Shape's own start and
        end need opset 15)."""
        shape = self.node("Shape", [source], base)
        bounds = [
            self.constant(f"{base}_{part}", np.array([v], np.int64))
            for part, v in (("start", start), ("end", end))
        ]
        return self.node("Slice", [shape, *bounds], base)

    def node(
        self, op_type: str, inputs: list[str], base: str, output: str = "", **attrs: object
    ) -> str:
        """Add a node of chainx's own; returns its output's name."""
        output = output or self.fresh(f"{base}_{op_type.lower()}")
        self._names.setdefault(output, output)
        self.nodes.append(
            helper.make_node(
                op_type, inputs, [output], name=self.fresh(f"chainx/{output}"), **attrs
            )
        )
        return output
