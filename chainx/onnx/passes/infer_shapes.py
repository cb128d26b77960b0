"""ONNX shape inference: strict for the normalised model, lenient for reading shapes early."""

from __future__ import annotations

import onnx
from onnx import shape_inference

from chainx.onnx.graph import known_shapes
from chainx.onnx.passes.base import ModelPass, PassResult


class InferShapes(ModelPass):
    """Record the type and shape of every tensor; inference errors are errors (strict mode),
    and constant shape arithmetic is propagated (data_prop) so that reshapes get sizes."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        inferred = shape_inference.infer_shapes(
            model, check_type=True, strict_mode=True, data_prop=True
        )
        before, after = model.graph, inferred.graph
        modified = (
            before.value_info != after.value_info
            or before.input != after.input
            or before.output != after.output
        )
        return PassResult(inferred, modified)


def static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Tensor name → its dims as far as lenient inference knows them (None where unknown).

    For passes that run before the model is clean enough for strict inference.
    """
    return known_shapes(shape_inference.infer_shapes(model).graph)
