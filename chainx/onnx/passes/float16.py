"""Score a float16 model in float32; its chain goes back to float16 at export."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.passes.base import ModelPass, PassResult

FLOAT16, FLOAT = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
# onnxconverter-common's forms: every tensor in float16, or float32 inputs and outputs
# with Casts at the edges (`keep_io_types=True`).
FLOAT16_IO = "float16"
FLOAT16_INSIDE = "float16-inside"


def float16_form(model: onnx.ModelProto) -> str | None:
    """FLOAT16_IO, FLOAT16_INSIDE, or None for a model without float16 weights or casts."""
    weights = any(init.data_type == FLOAT16 for init in model.graph.initializer)
    casts = any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16 for a in node.attribute)
        for node in model.graph.node
    )
    if not (weights or casts):
        return None
    image = model.graph.input[0].type.tensor_type.elem_type
    return FLOAT16_IO if image == FLOAT16 else FLOAT16_INSIDE


class Float16AsFloat32(ModelPass):
    """torch's CPU kernels and chainx's optimisation want float32, and every float16 value
    is exactly a float32 one: weights, constants, casts and declared types become float32.
    The model then computes in float32 what the file computes in float16, so the outputs
    differ by float16's rounding, and the chain is verified with a tolerance suited to it."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        if float16_form(model) is None:
            return PassResult(model, modified=False)
        graph = model.graph
        for index, init in enumerate(graph.initializer):
            if init.data_type == FLOAT16:
                value = numpy_helper.to_array(init).astype(np.float32)
                graph.initializer[index].CopyFrom(numpy_helper.from_array(value, init.name))
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.name == "to" and node.op_type == "Cast" and attribute.i == FLOAT16:
                    attribute.i = FLOAT
                elif (
                    attribute.type == onnx.AttributeProto.TENSOR
                    and attribute.t.data_type == FLOAT16
                ):
                    value = numpy_helper.to_array(attribute.t).astype(np.float32)
                    attribute.t.CopyFrom(numpy_helper.from_array(value, attribute.t.name))
        for info in (*graph.input, *graph.output, *graph.value_info):
            if info.type.tensor_type.elem_type == FLOAT16:
                info.type.tensor_type.elem_type = FLOAT
        return PassResult(model, modified=True)
