"""Give a Reshape whose shape the graph computes at run time a constant one, where that is
exact."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import known_shapes
from chainx.onnx.passes.base import ModelPass, PassResult


class ConstantReshapeShapes(ModelPass):
    """A Reshape computed from Shape ops whose output has static dims but for at most one
    (the batch, or a multiple of it) takes those dims as a constant, -1 for that one.

    Why: with a free batch, attention's head split and merge (nn.MultiheadAttention
    through the TorchScript exporter) read the batch from the graph, so their Reshapes'
    shapes stay run-time values, and the channel analysis, which reads a head split from
    a constant shape, would freeze the heads. -1 is exact: the element count fixes it.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        shapes = known_shapes(graph)
        constants = {init.name for init in graph.initializer}
        modified = False
        for node in graph.node:
            if node.op_type != "Reshape" or node.input[1] in constants:
                continue
            dims = shapes.get(node.output[0])
            if dims is None or sum(d is None for d in dims) > 1 or 0 in dims:
                continue  # no zero dim: the shape means the same with allowzero or not
            shape = np.array([-1 if d is None else d for d in dims], np.int64)
            name = f"{node.name}_constant_shape"
            graph.initializer.append(numpy_helper.from_array(shape, name))
            node.input[1] = name
            modified = True
        return PassResult(model, modified)
