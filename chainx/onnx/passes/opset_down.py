"""Convert a model newer than opset 17 down to 17, the newest whose ops onnx2torch converts."""

from __future__ import annotations

import onnx
import onnx.version_converter

from chainx.onnx.passes.base import ModelPass, PassResult, default_opset
from chainx.onnx.passes.expand_gelu import ExpandGelu
from chainx.onnx.passes.opset_up import CONVERTER_ERRORS
from chainx.onnx.passes.split_to_slices import SplitToSlices

# onnx2torch's Reduce* and Reshape converters stop at opset 17.
TORCH_OPSET = 17


class DowngradeOpset(ModelPass):
    """Convert down to `opset` with onnx's version converter.

    Split-18 and Gelu-20, which the converter cannot take down, are first rewritten into
    older ops. The converter leaves Reduce*-18's `noop_with_empty_axes=0` behind, which
    opset 17 only knows on ReduceSum; it is the default there, so it goes.

    A model the converter cannot take down stays as it is (unmodified): many of its ops still
    convert to torch at their newer opset, and `check_convertible` names each one that does
    not.
    """

    def __init__(self, opset: int = TORCH_OPSET) -> None:
        self.opset = opset

    def call(self, model: onnx.ModelProto) -> PassResult:
        if default_opset(model) <= self.opset:
            return PassResult(model, modified=False)
        older = ExpandGelu()(SplitToSlices()(model).model).model
        try:
            converted = onnx.version_converter.convert_version(older, self.opset)
        except CONVERTER_ERRORS:
            return PassResult(model, modified=False)
        for node in converted.graph.node:
            if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
                for attribute in list(node.attribute):
                    if attribute.name == "noop_with_empty_axes" and attribute.i == 0:
                        node.attribute.remove(attribute)
        try:
            onnx.checker.check_model(converted)
        except onnx.checker.ValidationError:
            return PassResult(model, modified=False)
        return PassResult(converted, modified=True)
