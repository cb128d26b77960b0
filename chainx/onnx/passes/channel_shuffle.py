"""Rewrite ShuffleNet's channel shuffle into one Gather on the channel axis.

Reshape (N, C, …) → (N, g, C/g, …), Transpose (0, 2, 1, …), Reshape back to (N, C, …) is a
fixed permutation of the channels. As a Gather with constant indices it is one node that
the channel analysis can follow (and that onnx2torch converts); as three nodes it would be
frozen, since its middle tensors have no channel axis of their own.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.graph import GraphIndex, attributes, live_nodes, with_nodes
from chainx.onnx.passes.base import ModelPass, PassResult


def _shuffle_permutation(
    first: onnx.NodeProto, transpose: onnx.NodeProto, last: onnx.NodeProto, g: GraphIndex
) -> np.ndarray | None:
    """Output channel j reads input channel perm[j], or None if this is not a shuffle."""
    x, split, joined = first.input[0], first.output[0], last.output[0]
    in_shape, mid_shape, out_shape = (g.shapes.get(name) for name in (x, split, joined))
    if in_shape is None or mid_shape is None or out_shape is None:
        return None
    rank = len(in_shape)
    if len(mid_shape) != rank + 1 or list(out_shape[1:]) != list(in_shape[1:]):
        return None
    groups, per_group = mid_shape[1], mid_shape[2]
    if None in (groups, per_group) or groups * per_group != in_shape[1]:
        return None
    if list(mid_shape[3:]) != list(in_shape[2:]):
        return None
    perm = list(attributes(transpose).get("perm", []))
    if perm != [0, 2, 1, *range(3, rank + 1)]:
        return None
    # y[b * groups + a] = x[a * per_group + b]
    a, b = np.meshgrid(np.arange(groups), np.arange(per_group))
    return (a * per_group + b).reshape(-1).astype(np.int64)


class ShuffleToGather(ModelPass):
    """Each Reshape → Transpose → Reshape channel shuffle becomes one Gather on axis 1."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        g = GraphIndex.build(model)
        replace: dict[str, onnx.NodeProto] = {}
        drop: set[str] = set()
        initializers = []
        for first in g.nodes:
            if first.op_type != "Reshape":
                continue
            readers = g.consumers.get(first.output[0], [])
            if len(readers) != 1 or readers[0].op_type != "Transpose":
                continue
            transpose = readers[0]
            after = g.consumers.get(transpose.output[0], [])
            if len(after) != 1 or after[0].op_type != "Reshape":
                continue
            last = after[0]
            perm = _shuffle_permutation(first, transpose, last, g)
            if perm is None:
                continue
            index = f"{last.name}_shuffle_index"
            initializers.append(numpy_helper.from_array(perm, index))
            replace[last.name] = helper.make_node(
                "Gather", [first.input[0], index], [last.output[0]], name=last.name, axis=1
            )
            drop.update({first.name, transpose.name})
        if not replace:
            return PassResult(model, modified=False)
        graph = model.graph
        nodes = [replace.get(node.name, node) for node in graph.node if node.name not in drop]
        # The shape arithmetic that fed the Reshapes is dead now.
        nodes = live_nodes(nodes, [output.name for output in graph.output])
        return PassResult(with_nodes(model, nodes, initializers), modified=True)
