"""Gelu (opset 20) in the ops of its definition, which older opsets and onnx2torch know."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import with_nodes
from chainx.onnx.passes.base import ModelPass, PassResult


class ExpandGelu(ModelPass):
    """Each Gelu becomes 0.5·x·(1 + erf(x/√2)), or its tanh approximation where it asks for
    one; the last node keeps the Gelu's name and output."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        nodes: list[onnx.NodeProto] = []
        added: list[onnx.TensorProto] = []
        for node in model.graph.node:
            if node.op_type == "Gelu":
                nodes += _expanded(node, added)
            else:
                nodes.append(node)
        if not added:
            return PassResult(model, modified=False)
        return PassResult(with_nodes(model, nodes, added), modified=True)


def _expanded(node: onnx.NodeProto, added: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """The nodes that compute `node`'s Gelu; their constants are appended to `added`."""

    def constant(name: str, value: float) -> str:
        added.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    make = onnx.helper.make_node
    x, y, base = node.input[0], node.output[0], f"{node.name or node.output[0]}/gelu"
    tanh = any(a.name == "approximate" and a.s == b"tanh" for a in node.attribute)
    if tanh:  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        nodes = [
            make("Mul", [x, x], [f"{base}/x2"], name=f"{base}/x2"),
            make("Mul", [f"{base}/x2", x], [f"{base}/x3"], name=f"{base}/x3"),
            make(
                "Mul",
                [f"{base}/x3", constant(f"{base}/c", 0.044715)],
                [f"{base}/cx3"],
                name=f"{base}/cx3",
            ),
            make("Add", [x, f"{base}/cx3"], [f"{base}/inner"], name=f"{base}/inner"),
            make(
                "Mul",
                [f"{base}/inner", constant(f"{base}/k", float(np.sqrt(2 / np.pi)))],
                [f"{base}/scaled"],
                name=f"{base}/scaled",
            ),
            make("Tanh", [f"{base}/scaled"], [f"{base}/t"], name=f"{base}/t"),
        ]
    else:  # 0.5·x·(1 + erf(x/√2))
        nodes = [
            make(
                "Div",
                [x, constant(f"{base}/sqrt2", float(np.sqrt(2)))],
                [f"{base}/s"],
                name=f"{base}/s",
            ),
            make("Erf", [f"{base}/s"], [f"{base}/t"], name=f"{base}/t"),
        ]
    return nodes + [
        make("Add", [f"{base}/t", constant(f"{base}/one", 1.0)], [f"{base}/p"], name=f"{base}/p"),
        make("Mul", [x, f"{base}/p"], [f"{base}/xp"], name=f"{base}/xp"),
        make("Mul", [f"{base}/xp", constant(f"{base}/half", 0.5)], [y], name=node.name),
    ]
