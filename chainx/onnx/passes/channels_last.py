"""Read a channels-last (NHWC) image input as channels-first, where the model transposes it
to NCHW before anything else (as tf2onnx writes Keras models)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.passes.base import ModelPass, PassResult

TO_CHANNELS_FIRST = [0, 3, 1, 2]
TO_CHANNELS_LAST = [0, 2, 3, 1]
ELEMENTWISE = {"Add", "Sub", "Mul", "Div"}


@dataclass(frozen=True)
class _Entry:
    """How the image enters: elementwise ops with constants (a Keras Rescaling or
    Normalization, on NHWC), then the Transpose to NCHW (a Reshape for one channel)."""

    image: onnx.ValueInfoProto
    elementwise: list[onnx.NodeProto]
    # Per op (by output name): the position of its constant, and the constant (NHWC).
    constants: dict[str, tuple[int, np.ndarray]]
    transpose: onnx.NodeProto


def _entry(model: onnx.ModelProto, name: str | None = None) -> _Entry | None:
    """The channels-last entry of the rank-4 image input (the first input, or the one called
    `name`), or None where the image does not enter so."""
    graph = model.graph
    image = next((i for i in graph.input if name in (None, i.name)), None)
    if image is None or len(image.type.tensor_type.shape.dim) != 4:
        return None
    channels = image.type.tensor_type.shape.dim[3].dim_value
    initializers = {init.name: init for init in graph.initializer}
    current, elementwise, constants = image.name, [], {}
    while True:
        readers = [node for node in graph.node if current in node.input]
        if len(readers) != 1 or current in {o.name for o in graph.output}:
            return None
        node = readers[0]
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm != TO_CHANNELS_FIRST:
                return None
            return _Entry(image, elementwise, constants, node)
        if node.op_type == "Reshape" and _moves_one_channel_first(node, image, initializers):
            return _Entry(image, elementwise, constants, node)
        others = [i for i in node.input if i != current]
        if node.op_type not in ELEMENTWISE or len(others) != 1 or others[0] not in initializers:
            return None
        value = numpy_helper.to_array(initializers[others[0]])
        per_channel = value.size in {1, channels} and (
            value.ndim == 0 or value.shape[-1] == value.size
        )
        if not per_channel:
            return None
        elementwise.append(node)
        constants[node.output[0]] = (list(node.input).index(others[0]), value)
        current = node.output[0]


def _moves_one_channel_first(
    node: onnx.NodeProto, image: onnx.ValueInfoProto, initializers: dict
) -> bool:
    """A Reshape of (N, H, W, 1) to (N, 1, H, W): tf2onnx's Transpose for one channel."""
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim]
    if dims[3] != 1 or not all(dims[1:3]) or node.input[1] not in initializers:
        return False
    shape = numpy_helper.to_array(initializers[node.input[1]]).tolist()
    return len(shape) == 4 and shape[0] in (-1, 0, dims[0] or -1) and shape[1:] == [1, *dims[1:3]]


def reads_channels_last(model: onnx.ModelProto, name: str | None = None) -> bool:
    """Whether the model's image input is NHWC, transposed to NCHW as it enters."""
    return _entry(model, name) is not None


def with_channels_last_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The inverse of ChannelsFirstInput, for a chain: an NHWC input, transposed as it
    enters, so that the chain is used as its source was."""
    graph = model.graph
    image = graph.input[0]
    inner = f"{image.name}_channels_first"
    for node in graph.node:
        node.input[:] = [inner if name == image.name else name for name in node.input]
    graph.node.insert(
        0,
        onnx.helper.make_node(
            "Transpose", [image.name], [inner], name=inner, perm=TO_CHANNELS_FIRST
        ),
    )
    _permute_dims(image, TO_CHANNELS_LAST)
    return model


def _permute_dims(info: onnx.ValueInfoProto, perm: list[int]) -> None:
    """Reorder the declared dims of `info` as a Transpose with `perm` would."""
    dims = info.type.tensor_type.shape.dim
    reordered = [onnx.TensorShapeProto.Dimension() for _ in perm]
    for target, source in zip(reordered, perm, strict=True):
        target.CopyFrom(dims[source])
    del dims[:]
    dims.extend(reordered)


class ChannelsFirstInput(ModelPass):
    """Every later stage reads images as (N, C, H, W): the input becomes that, the
    elementwise ops before the Transpose read it with their constants as (1, C, 1, 1), and
    the Transpose's readers read their output directly. The file's own layout is not lost:
    onnxruntime runs feed each input its layout (`runtime.as_input`), and the chain gets
    its NHWC input back at export, so that it is used as the model was."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        entry = _entry(model)
        if entry is None:
            return PassResult(model, modified=False)
        graph = model.graph
        _permute_dims(entry.image, TO_CHANNELS_FIRST)
        for node in entry.elementwise:
            position, value = entry.constants[node.output[0]]
            if value.size > 1:  # per channel on the last axis: on axis 1 now
                name = f"{node.output[0]}_channels_first"
                graph.initializer.append(numpy_helper.from_array(value.reshape(1, -1, 1, 1), name))
                node.input[position] = name
        transposed, source = entry.transpose.output[0], entry.transpose.input[0]
        for node in graph.node:
            node.input[:] = [source if name == transposed else name for name in node.input]
        graph.node.remove(entry.transpose)
        inner = {transposed} | {node.output[0] for node in entry.elementwise}
        for info in [i for i in graph.value_info if i.name in inner]:
            graph.value_info.remove(info)  # their shapes were NHWC
        return PassResult(model, modified=True)
