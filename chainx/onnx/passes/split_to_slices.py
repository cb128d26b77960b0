"""Split (opset 18's num_outputs form) as one Slice per output: onnx cannot convert it to 17."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import with_nodes
from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes


class SplitToSlices(ModelPass):
    """Each Split whose axis has a static size, and whose split sizes are constant or
    implied by num_outputs, becomes one Slice per output; other Splits stay."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        nodes: list[onnx.NodeProto] = []
        added: list[onnx.TensorProto] = []
        for node in model.graph.node:
            sizes = _split_sizes(node, shapes, constants)
            if sizes is None:
                nodes.append(node)
                continue
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            bounds = np.cumsum([0, *sizes])
            for index, output in enumerate(node.output):
                names = [f"{node.name}_{output}_{part}" for part in ("starts", "ends", "axes")]
                values = ([bounds[index]], [bounds[index + 1]], [axis])
                added.extend(
                    numpy_helper.from_array(np.array(v, np.int64), n)
                    for n, v in zip(names, values, strict=True)
                )
                nodes.append(
                    onnx.helper.make_node(
                        "Slice", [node.input[0], *names], [output], name=f"{node.name}/{output}"
                    )
                )
        if not added:
            return PassResult(model, modified=False)
        return PassResult(with_nodes(model, nodes, added), modified=True)


def _split_sizes(
    node: onnx.NodeProto,
    shapes: dict[str, list[int | None]],
    constants: dict[str, np.ndarray],
) -> list[int] | None:
    """The size of each of the Split's outputs along its axis, or None if not static."""
    if node.op_type != "Split":
        return None
    shape = shapes.get(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if size is None:
        return None
    if len(node.input) > 1 and node.input[1]:
        if node.input[1] not in constants:
            return None
        return [int(v) for v in constants[node.input[1]]]
    count = len(node.output)
    step = -(-size // count)
    return [min(step, size - i * step) for i in range(count)]
