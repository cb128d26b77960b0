"""A Linear layer on tokens written as flatten → MatMul → unflatten, as one MatMul.

tf2onnx writes a Keras Dense layer on a (N, T, D) tensor as its `Tensordot`: a Reshape to
(N·T, D), a MatMul by W (D, U), and a Reshape back to (N, T, U). The batch and the tokens
share one axis in between, so the channel analysis cannot follow the U features of the
token stream through it. MatMul broadcasts over leading axes, so MatMul((N, T, D), W) is
the same product with the same rows, and the hidden neurons keep their own axis.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.graph import with_replaced
from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes


class FoldTokenFlatten(ModelPass):
    """Reshape (x (N, …, D) → (-1, D)) → MatMul (·, W[D, U]) → Reshape (→ (N, …, U))
    becomes MatMul (x, W) writing the second Reshape's output. The flattened tensor and
    the product must have no other reader."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        producer = {name: node for node in model.graph.node for name in node.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        outputs = {output.name for output in model.graph.output}
        replaced: dict[str, list[onnx.NodeProto]] = {}  # unflatten Reshape name → its MatMul
        dropped: set[str] = set()
        for node in model.graph.node:
            found = _flattened(node, producer, readers, constants, shapes, outputs)
            if found is None:
                continue
            flatten, matmul = found
            inputs = [flatten.input[0], matmul.input[1]]
            replaced[node.name] = [
                helper.make_node("MatMul", inputs, [node.output[0]], name=matmul.name)
            ]
            dropped |= {flatten.name, matmul.name}
        if not replaced:
            return PassResult(model, modified=False)
        result = with_replaced(model, replaced, dropped, [])  # the Reshapes' shapes go
        return PassResult(result, modified=True)


def _flattened(
    unflatten: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    readers: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
    shapes: dict[str, list[int | None]],
    outputs: set[str],
) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(flatten Reshape, MatMul) before an unflatten Reshape, or None."""
    if unflatten.op_type != "Reshape":
        return None
    matmul = producer.get(unflatten.input[0])
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in constants:
        return None
    flatten = producer.get(matmul.input[0])
    if flatten is None or flatten.op_type != "Reshape":
        return None
    for name in (flatten.output[0], matmul.output[0]):
        if name in outputs or len(readers.get(name, [])) != 1:
            return None
    weight = constants[matmul.input[1]]
    source, result = shapes.get(flatten.input[0]), shapes.get(unflatten.output[0])
    flat = shapes.get(flatten.output[0])
    if weight.ndim != 2 or source is None or result is None or flat is None:
        return None
    if len(source) < 3 or len(flat) != 2 or flat[1] != weight.shape[0]:
        return None
    # The same leading axes before and after, each known but the first (the batch).
    if source[-1] != weight.shape[0] or result != [*source[:-1], weight.shape[1]]:
        return None
    if any(d is None for d in source[1:]):
        return None
    return flatten, matmul
