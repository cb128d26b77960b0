"""Rewrite auto_pad=SAME_* into explicit pads, which onnx2torch can convert."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.passes.base import ModelPass, PassResult, describe
from chainx.onnx.passes.infer_shapes import static_shapes

POOLS_AND_CONVS = {"Conv", "MaxPool", "AveragePool"}


class ExplicitAutoPad(ModelPass):
    """SAME_UPPER/SAME_LOWER become the pads they stand for; VALID (no padding) is dropped.

    The pads depend on the input's spatial size, so that size must be static.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        modified = False
        for node in model.graph.node:
            if node.op_type not in POOLS_AND_CONVS:
                continue
            attrs = {a.name: a for a in node.attribute}
            mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
            if mode == "NOTSET":
                continue
            modified = True
            if mode == "VALID":
                node.attribute.remove(attrs["auto_pad"])
                continue
            _make_pads_explicit(model, node, attrs, mode, shapes.get(node.input[0]))
        return PassResult(model, modified)


def _make_pads_explicit(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    attrs: dict[str, onnx.AttributeProto],
    mode: str,
    in_shape: list[int | None] | None,
) -> None:
    if in_shape is None or any(d is None for d in in_shape[2:]):
        raise ChainxError(
            f"{describe(node)} uses auto_pad={mode} on an input of unknown spatial size, "
            "and its padding depends on that size. Export the model with a fixed input size."
        )
    if "kernel_shape" in attrs:
        kernel = list(attrs["kernel_shape"].ints)
    else:
        kernel = list(_constant_weight(model, node).shape[2:])
    rank = len(kernel)
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * rank
    dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * rank
    begins, ends = [], []
    for size, k, s, d in zip(in_shape[2:], kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else large)
        ends.append(large if mode == "SAME_UPPER" else small)
    node.attribute.remove(attrs["auto_pad"])
    if "pads" in attrs:
        node.attribute.remove(attrs["pads"])
    node.attribute.append(onnx.helper.make_attribute("pads", begins + ends))
    if "kernel_shape" not in attrs:
        node.attribute.append(onnx.helper.make_attribute("kernel_shape", kernel))


def _constant_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray:
    """The Conv's weight, whose shape gives the kernel size when kernel_shape is missing."""
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            return numpy_helper.to_array(init)
    raise ChainxError(
        f"{describe(node)} has no kernel_shape and its weight {node.input[1]!r} is not a "
        "constant, so its kernel size is unknown. Export the model with constant Conv weights "
        "or with kernel_shape set."
    )
