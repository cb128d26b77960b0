"""A projection's bias added before the head split, not after it.

Keras's MultiHeadAttention projects with EinsumDense, whose bias has the shape (H, Dh) of
the heads; tf2onnx writes MatMul → Reshape (…, D) → (…, H, Dh) → Add b[H, Dh]. A bias
that varies within a head is no per-channel constant on the heads axis, so the channel
analysis would keep every head of Q, K and V. Adding b flattened to (D,) before the
Reshape adds the same number to the same element: the result is bit-identical.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper, numpy_helper

from chainx.onnx.graph import with_replaced
from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes


class BiasBeforeHeadSplit(ModelPass):
    """Reshape (x (…, D) → (…, H, Dh)) → Add (·, b[H, Dh]) becomes Add (x, b[D]) → Reshape,
    where the Reshape's output has no other reader."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        producer = {name: node for node in model.graph.node for name in node.output}
        readers: dict[str, int] = {}
        for node in model.graph.node:
            for name in node.input:
                readers[name] = readers.get(name, 0) + 1
        outputs = {output.name for output in model.graph.output}
        moved: dict[str, list[onnx.NodeProto]] = {}  # Reshape name → Add, Reshape
        dropped: set[str] = set()
        added: list[onnx.TensorProto] = []
        for node in model.graph.node:
            if node.op_type != "Add" or len(node.input) != 2:
                continue
            split, bias = (producer.get(node.input[0]), node.input[1])
            if bias not in constants or split is None or split.op_type != "Reshape":
                continue
            source, result = shapes.get(split.input[0]), shapes.get(split.output[0])
            values = constants[bias]
            if source is None or result is None or split.output[0] in outputs:
                continue
            if readers.get(split.output[0]) != 1 or values.ndim < 2 or source[-1] is None:
                continue
            if list(values.shape) != result[-values.ndim :]:
                continue
            # The trailing axes split x's last axis; the leading ones are x's own.
            if math.prod(values.shape) != source[-1] or result[: -values.ndim] != source[:-1]:
                continue
            flat = f"{bias}_{node.name}_flat"
            added.append(numpy_helper.from_array(values.reshape(-1), flat))
            biased = f"{split.input[0]}_{node.name}_biased"
            moved[split.name] = [
                helper.make_node("Add", [split.input[0], flat], [biased], name=node.name),
                helper.make_node(
                    "Reshape", [biased, split.input[1]], [node.output[0]], name=split.name
                ),
            ]
            dropped.add(node.name)
        if not moved:
            return PassResult(model, modified=False)
        result = with_replaced(model, moved, dropped, added)
        del result.graph.value_info[:]  # inferred again by the caller
        return PassResult(result, modified=True)
