"""Drop initializers from the graph inputs, so that they are plain constants."""

from __future__ import annotations

import onnx

from chainx.onnx.passes.base import ModelPass, PassResult


class InitializerInputsAsConstants(ModelPass):
    """An initializer listed as a graph input can be overridden at run time, so nothing
    folds it; as a plain initializer it is a constant that the optimiser can fold."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        initializers = {init.name for init in model.graph.initializer}
        kept = [i for i in model.graph.input if i.name not in initializers]
        modified = len(kept) != len(model.graph.input)
        del model.graph.input[:]
        model.graph.input.extend(kept)
        return PassResult(model, modified)
