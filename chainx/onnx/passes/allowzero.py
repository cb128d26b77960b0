"""Drop Reshape's allowzero=1 where it changes nothing: onnx2torch cannot convert it."""

from __future__ import annotations

import onnx
from onnx import numpy_helper

from chainx.onnx.passes.base import ModelPass, PassResult


class DropNeedlessAllowzero(ModelPass):
    """Reshape with allowzero=1 and a constant shape free of zeros means allowzero=0.

    onnxscript's constant folding writes allowzero=1.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        constants = {init.name: init for init in model.graph.initializer}
        modified = False
        for node in model.graph.node:
            if node.op_type != "Reshape" or node.input[1] not in constants:
                continue
            shape = numpy_helper.to_array(constants[node.input[1]])
            for attribute in list(node.attribute):
                if attribute.name == "allowzero" and attribute.i and not (shape == 0).any():
                    node.attribute.remove(attribute)
                    modified = True
        return PassResult(model, modified)
