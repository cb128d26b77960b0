"""Refuse a quantised model with a message that names its format."""

from __future__ import annotations

import onnx

from chainx.errors import ChainxError
from chainx.onnx.passes.base import ModelPass, PassResult

# The three forms onnxruntime.quantization writes, by the ops that mark each.
FORMATS = {
    "QOperator (QLinearConv, QGemm, …)": {
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
    },
    "dynamic (ConvInteger, MatMulInteger)": {
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
    },
    "QDQ (QuantizeLinear and DequantizeLinear around float ops)": {
        "QuantizeLinear",
        "DequantizeLinear",
    },
}


class RefuseQuantised(ModelPass):
    """A chain's filters are exact copies of float weights, scored on a float network, and
    verified to float tolerance. A quantised file has integer weights with scales and zero
    points, and rounds every activation: its dequantised float network is not what it
    computes, and its chain would be neither exact nor a copy. So it is refused before
    anything else, in favour of the float model it was quantised from."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        ops = {node.op_type for node in model.graph.node}
        for name, marks in FORMATS.items():
            found = sorted(ops & marks)
            if found:
                raise ChainxError(
                    f"the model is quantised, in onnxruntime's {name} form (it has "
                    f"{', '.join(found)}). chainx scores a float network and copies its float "
                    "weights exactly. Extract the chain from the float model it was "
                    "quantised from; the chain can be quantised afterwards "
                    "(onnxruntime.quantization) where it is deployed."
                )
        return PassResult(model, modified=False)
