"""Fill in the tensor sizes that shape inference left unknown, by running the model once."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.runtime import MODEL_ERRORS, run_tensors


class CompleteShapes(ModelPass):
    """Run the model on one zero image and record the size of every tensor whose non-batch
    dims inference left unknown, and a shape for every tensor that had none.

    Exporters compute some shapes at run time (e.g. a flatten that reads the batch size),
    and the channel analysis needs every channel count. The model must have a static
    non-batch input shape; otherwise, or where onnxruntime cannot run it, nothing changes and
    the channel analysis freezes the tensors it cannot size. onnxruntime is asked for the
    CPU, so that normalising never takes a GPU.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        model_input = graph.input[0]
        dims = [
            d.dim_value if d.HasField("dim_value") else None
            for d in model_input.type.tensor_type.shape.dim
        ]
        if any(d is None for d in dims[1:]):
            return PassResult(model, modified=False)
        infos = {info.name: info for info in [*graph.value_info, *graph.output]}
        missing = [
            name for node in graph.node for name in node.output if name and name not in infos
        ]
        unknown = [name for name, info in infos.items() if not _is_static(info)]
        unknown += list(dict.fromkeys(missing))
        if not unknown:
            return PassResult(model, modified=False)
        zero = np.zeros([1, *dims[1:]], np.float32)
        try:
            values = run_tensors(model, zero, unknown, batch_size=1, cpu=True)
        except MODEL_ERRORS:
            return PassResult(model, modified=False)
        for name in dict.fromkeys(missing):
            info = graph.value_info.add()
            info.name = name
            infos[name] = info
        for name in unknown:
            _record_shape(infos[name].type.tensor_type, values[name])
        return PassResult(model, modified=True)


def _is_static(info: onnx.ValueInfoProto) -> bool:
    """Whether the tensor has a shape whose dims after the batch dim are all known."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return False
    return all(d.HasField("dim_value") for d in tensor.shape.dim[1:])


def _record_shape(tensor: onnx.TypeProto.Tensor, value: np.ndarray) -> None:
    """Write `value`'s shape into `tensor`, keeping a symbolic batch dim where it had one.

    A value of rank < 2 (or a sequence) has no channel axis, so nothing is recorded.
    """
    if not isinstance(value, np.ndarray) or value.ndim < 2:
        return
    if not tensor.elem_type:
        tensor.elem_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    shape = tensor.shape
    old = list(shape.dim)
    del shape.dim[:]
    for axis, size in enumerate(value.shape):
        dim = shape.dim.add()
        if axis == 0 and old and not old[0].HasField("dim_value"):
            dim.CopyFrom(old[0])
        elif axis == 0 and not old:
            dim.dim_param = "batch"
        else:
            dim.dim_value = size
