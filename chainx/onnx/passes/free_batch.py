"""Free a model exported with a fixed batch, so that every stage can batch its images."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.graph import fixed_batch
from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.runtime import MODEL_ERRORS, run, session

BATCH = "batch"
PROBE_IMAGES = 5  # a count that no fixed batch of 2 to 4 divides
# Relative to the largest |output|: batching must not change any output beyond float noise.
TOLERANCE = 1e-5


class FreeFixedBatch(ModelPass):
    """A model with a fixed batch of N runs N images at a time: a batch-1 model 20× the
    steps of a batched one, and a model traced at a batch of 2 (the dynamo exporter's
    default) cannot take an odd count. Most bake the N only into the input, the output and
    their Reshapes' constant shapes.

    Those shapes keep the batch as -1 (or 0, "copy", where -1 is taken), the input and
    output get a free batch, and onnxruntime must give, on a batch of random images, what
    the model gives on them N at a time. Otherwise (a batch baked into an Expand, a
    Concat, …) the model stays as it was and runs N images at a time, the last batch
    padded (`runtime.run`).
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        batch = fixed_batch(model)
        if not batch:
            return PassResult(model, modified=False)
        freed = onnx.ModelProto.FromString(model.SerializeToString())
        if not _free_reshapes(freed.graph, batch):
            return PassResult(model, modified=False)
        for info in (*freed.graph.input, *freed.graph.output):
            dims = info.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
                dims[0].dim_param = BATCH
        del freed.graph.value_info[:]  # inferred again by the caller, with the free batch
        return PassResult(freed, True) if _same_outputs(model, freed) else PassResult(model, False)


def _free_reshapes(graph: onnx.GraphProto, batch: int) -> bool:
    """Give every Reshape whose constant shape starts with the batch its own shape with a
    free batch. False where one cannot be freed (allowzero=1 with a -1 already taken)."""
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]]).copy()
        if shape.size == 0 or shape[0] != batch:
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if not (shape == -1).any():
            shape[0] = -1
        elif not allowzero:
            shape[0] = 0
        else:
            return False
        name = f"{node.input[1]}_{node.name}_free_batch"
        graph.initializer.append(numpy_helper.from_array(shape, name))
        node.input[1] = name
    return True


def _same_outputs(fixed: onnx.ModelProto, freed: onnx.ModelProto) -> bool:
    """The freed model on a batch of random inputs against the fixed one on them, its
    batch at a time."""
    info = fixed.graph.input[0]
    shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
    if not shape or any(size <= 0 for size in shape[1:]):
        return False
    dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type)
    images = np.random.default_rng(0).standard_normal([PROBE_IMAGES, *shape[1:]]).astype(dtype)
    name = info.name
    try:
        expected = run(session(fixed, cpu=True), images)
        got = session(freed, cpu=True, quiet=True).run(None, {name: images})[0]
        got = got.reshape(len(images), -1)
    except MODEL_ERRORS:
        return False
    if got.shape != expected.shape:
        return False
    scale = max(float(np.abs(expected).max()), 1e-12)
    return float(np.abs(got - expected).max()) <= TOLERANCE * scale
