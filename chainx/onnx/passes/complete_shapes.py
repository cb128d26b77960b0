"""Fill in the tensor sizes that shape inference left unknown, by running the model."""

from __future__ import annotations

import numpy as np
import onnx

from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.runtime import MODEL_ERRORS, run_tensors

# Two batch sizes to run a model with a free batch at: a dim that differs between them
# follows the batch. Neither is 1, which broadcasting could hide.
PROBE_BATCHES = (2, 3)


class CompleteShapes(ModelPass):
    """Run the model on zero images and record the size of every tensor whose non-batch
    dims inference left unknown, and a shape for every tensor that had none.

    Exporters compute some shapes at run time (e.g. a flatten that reads the batch size),
    and the channel analysis needs every channel count. A model with a free batch runs at
    two batch sizes: a dim that differs between them follows the batch, wherever it is
    (attention's (tokens, batch × heads, …)), and stays symbolic, so that no later pass
    folds the probe's batch into the graph. The model must have a static non-batch input
    shape; otherwise, or where onnxruntime cannot run it, nothing changes and the channel
    analysis freezes the tensors it cannot size. onnxruntime is asked for the CPU, so that
    normalising never takes a GPU.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        model_input = graph.input[0]
        dims = [
            d.dim_value if d.HasField("dim_value") else None
            for d in model_input.type.tensor_type.shape.dim
        ]
        if not dims or any(d is None for d in dims[1:]):
            return PassResult(model, modified=False)
        infos = {info.name: info for info in [*graph.value_info, *graph.output]}
        missing = [
            name for node in graph.node for name in node.output if name and name not in infos
        ]
        unknown = [name for name, info in infos.items() if not _is_static(info)]
        unknown += list(dict.fromkeys(missing))
        if not unknown:
            return PassResult(model, modified=False)
        batches = PROBE_BATCHES if dims[0] is None else (dims[0],)
        try:
            runs = [
                run_tensors(model, np.zeros([b, *dims[1:]], np.float32), unknown, b, cpu=True)
                for b in batches
            ]
        except MODEL_ERRORS:
            return PassResult(model, modified=False)
        for name in dict.fromkeys(missing):
            info = graph.value_info.add()
            info.name = name
            infos[name] = info
        for name in unknown:
            _record_shape(
                infos[name].type.tensor_type, [values[name] for values in runs], batches, name
            )
        return PassResult(model, modified=True)


def _is_static(info: onnx.ValueInfoProto) -> bool:
    """Whether the tensor has a shape whose dims after the batch dim are all known."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return False
    return all(d.HasField("dim_value") for d in tensor.shape.dim[1:])


def _record_shape(
    tensor: onnx.TypeProto.Tensor,
    values: list[np.ndarray],
    batches: tuple[int, ...],
    name: str,
) -> None:
    """Write the shape of `values` (the tensor `name` at each of the probe `batches`) into
    `tensor`: a size that differs between the probes is symbolic, as is a batch dim that
    was.

    A value of rank < 2 (or a sequence) has no channel axis, so nothing is recorded.
    """
    value = values[0]
    if not isinstance(value, np.ndarray) or value.ndim < 2:
        return
    if any(not isinstance(v, np.ndarray) or v.ndim != value.ndim for v in values):
        return
    if not tensor.elem_type:
        tensor.elem_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    shape = tensor.shape
    old = list(shape.dim)
    del shape.dim[:]
    for axis, size in enumerate(value.shape):
        dim = shape.dim.add()
        follows_batch = any(v.shape[axis] != size for v in values[1:])
        if axis == 0 and old and not old[0].HasField("dim_value"):
            dim.CopyFrom(old[0])
        elif axis == 0 and not old and len(values) == 1:
            dim.dim_param = "batch"  # one probe cannot tell: the batch axis, as usual
        elif follows_batch:
            dim.dim_param = _symbol([v.shape[axis] for v in values], batches, f"{name}_{axis}")
        else:
            dim.dim_value = size


def _symbol(sizes: list[int], batches: tuple[int, ...], fallback: str) -> str:
    """ "batch", or "batch*k" where the size is k times the batch at every probe; else a
    name of its own (one symbol is one size to shape inference)."""
    ratios = {size / batch for size, batch in zip(sizes, batches, strict=True)}
    if len(ratios) == 1 and (ratio := ratios.pop()).is_integer():
        return "batch" if ratio == 1 else f"batch*{int(ratio)}"
    return fallback
