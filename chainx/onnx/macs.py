"""Multiply–accumulates per image, counted from the graph.

Only Conv, ConvTranspose, Gemm and MatMul are counted: they hold nearly all of a vision
network's arithmetic, and every other op costs about one operation per element it writes.
One MAC is one multiplication added into a sum; a grouped or depthwise Conv counts only
the inputs each output reads. Shapes come from one onnxruntime run of one image, which
knows them even where a graph computes its padding from the input's shape at run time.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from chainx.onnx.graph import attributes
from chainx.onnx.runtime import run_tensors

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def count_macs(model: onnx.ModelProto, image: np.ndarray) -> int:
    """MACs of `model`'s forward pass on `image`, one (1, C, H, W) float32 image as chainx
    holds images (fed in the input's own layout and type)."""
    counted = [node for node in model.graph.node if node.op_type in COUNTED]
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    wanted = [
        name for node in counted for name in (*node.input[:2], node.output[0]) if name not in shapes
    ]
    values = run_tensors(model, image, wanted, cpu=True)
    shapes.update({name: list(np.shape(value)) for name, value in values.items()})
    return sum(
        _node_macs(node, *(shapes[name] for name in (*node.input[:2], node.output[0])))
        for node in counted
    )


def _node_macs(node: onnx.NodeProto, first: list[int], second: list[int], output: list[int]) -> int:
    if node.op_type == "Conv":  # every output reads C/group × kernel inputs
        return math.prod(output) * math.prod(second[1:])
    if node.op_type == "ConvTranspose":  # every input is spread over M/group × kernel outputs
        return math.prod(first) * math.prod(second[1:])
    if node.op_type == "Gemm":
        inner = first[0] if attributes(node).get("transA", 0) else first[1]
        return math.prod(output) * inner
    return math.prod(output) * first[-1]  # MatMul
