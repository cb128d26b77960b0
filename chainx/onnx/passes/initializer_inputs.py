"""Drop initializers from the graph inputs, so that they are plain constants."""

from __future__ import annotations

import onnx
import onnx.helper

from chainx.onnx.passes.base import ModelPass, PassResult

# IR version 4 is the first that lets an initializer be something other than a graph input.
FIRST_IR_WITH_CONSTANT_INITIALIZERS = 4


class InitializerInputsAsConstants(ModelPass):
    """An initializer listed as a graph input can be overridden at run time, so nothing
    folds it; as a plain initializer it is a constant that the optimiser can fold.

    Old files (IR version 3, e.g. the ONNX model zoo's CNTK exports) must list every
    initializer as an input; without the inputs the model declares the IR version its
    opsets need (at least 4), so that the checker accepts it and every model built from it.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        initializers = {init.name for init in model.graph.initializer}
        kept = [i for i in model.graph.input if i.name not in initializers]
        modified = len(kept) != len(model.graph.input)
        del model.graph.input[:]
        model.graph.input.extend(kept)
        needed = max(
            FIRST_IR_WITH_CONSTANT_INITIALIZERS,
            onnx.helper.find_min_ir_version_for(list(model.opset_import)),
        )
        if model.ir_version < needed:
            model.ir_version = needed
            modified = True
        return PassResult(model, modified)
