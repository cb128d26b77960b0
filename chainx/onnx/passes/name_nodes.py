"""Give every node a unique name: chains, reports and verification refer to nodes by name."""

from __future__ import annotations

import onnx

from chainx.onnx.passes.base import ModelPass, PassResult


class NameNodes(ModelPass):
    """An unnamed node becomes `<op type>_<position>`, with `_` appended while that is taken."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        taken = {node.name for node in graph.node if node.name}
        modified = False
        for index, node in enumerate(graph.node):
            if node.name:
                continue
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            modified = True
        return PassResult(model, modified)
