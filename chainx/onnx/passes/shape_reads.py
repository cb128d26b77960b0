"""Fold the dims a graph reads from a tensor's shape where those dims are static."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import attributes, known_shapes
from chainx.onnx.passes.base import ModelPass, PassResult


class FoldStaticShapeReads(ModelPass):
    """A Gather or Slice of a Shape that selects only static dims is a constant.

    Why: with a free batch, a tensor's shape holds a symbolic dim, and onnxscript's folding
    leaves every read of that shape alone, even of a static dim (attention's head size,
    √d scaling from Shape → Slice[-1:]). The channel analysis needs such values constant;
    the batch dim itself stays a run-time value.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        shapes = known_shapes(graph)
        constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        shape_of = {
            node.output[0]: _shape_dims(node, shapes.get(node.input[0]))
            for node in graph.node
            if node.op_type == "Shape"
        }
        folded = []
        for node in graph.node:
            dims = shape_of.get(node.input[0]) if node.input else None
            if dims is None:
                continue
            selected = _selected(node, dims, constants)
            if selected is None or any(d is None for d in np.ravel(selected)):
                continue
            value = np.asarray(selected, np.int64)
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
            folded.append(node)
        for node in folded:
            graph.node.remove(node)
        return PassResult(model, bool(folded))


def _shape_dims(node: onnx.NodeProto, dims: list[int | None] | None) -> np.ndarray | None:
    """The dims a Shape node outputs (None where symbolic), as an object array."""
    if dims is None:
        return None
    found = attributes(node)
    start, end = int(found.get("start", 0)), found.get("end")
    picked = dims[start : None if end is None else int(end)]
    return np.array(picked, dtype=object)


def _selected(
    node: onnx.NodeProto, dims: np.ndarray, constants: dict[str, np.ndarray]
) -> np.ndarray | None:
    """What a Gather or Slice node reads of `dims`, where its other inputs are constants."""
    if any(name and name not in constants for name in node.input[1:]):
        return None
    if node.op_type == "Gather" and int(attributes(node).get("axis", 0)) == 0:
        indices = constants[node.input[1]]
        return dims[indices] if np.all(np.abs(indices) < len(dims) + (indices < 0)) else None
    if node.op_type == "Slice" and len(node.input) >= 3:
        values = [constants[name] if name else None for name in node.input[1:]]
        starts, ends = values[0], values[1]
        axes = values[2] if len(values) > 2 and values[2] is not None else np.array([0])
        steps = values[3] if len(values) > 3 and values[3] is not None else np.array([1])
        if list(axes) != [0] or len(starts) != 1:
            return None
        return dims[int(starts[0]) : int(ends[0]) : int(steps[0])]
    return None
