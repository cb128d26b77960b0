"""A read-only index over an ONNX graph: producers, consumers, constants and activations."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.onnx.axes import channel_axes


@dataclass
class GraphIndex:
    """What the channel passes need to know about a normalised, shape-inferred model.

    An *activation* is a tensor computed from the model input with rank ≥ 2 and a static
    size on its channel (or feature, or head) axis: axis 1, or where `axes.channel_axes`
    finds it (a transformer's last axis). `axis` and `width` map each activation to that
    axis and its size.
    """

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    constants: dict[str, np.ndarray]
    shapes: dict[str, list[int | None]]
    width: dict[str, int]
    axis: dict[str, int]
    input_name: str
    output_names: list[str]

    @classmethod
    def build(cls, model: onnx.ModelProto) -> GraphIndex:
        graph = model.graph
        constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    constants[node.output[0]] = numpy_helper.to_array(value.t)
        shapes = known_shapes(graph)
        input_name = next(i.name for i in graph.input if i.name not in constants)
        producer: dict[str, onnx.NodeProto] = {}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        dynamic = {input_name}
        for node in graph.node:
            for name in node.input:
                if name:
                    consumers[name].append(node)
            for name in node.output:
                producer[name] = node
            if any(name in dynamic for name in node.input):
                dynamic.update(name for name in node.output if name)
        axis = channel_axes(list(graph.node), shapes, constants, dynamic, input_name)
        width = {}
        for name in dynamic:
            shape = shapes.get(name)
            if shape is not None and len(shape) >= 2:
                axis.setdefault(name, 1)
                if shape[axis[name]] is not None:
                    width[name] = shape[axis[name]]
        axis = {name: a for name, a in axis.items() if name in width}
        return cls(
            model=model,
            nodes=list(graph.node),
            producer=producer,
            consumers=dict(consumers),
            constants=constants,
            shapes=shapes,
            width=width,
            axis=axis,
            input_name=input_name,
            output_names=[o.name for o in graph.output],
        )

    def batch_factor(self, name: str, axis: int) -> int | None:
        """k where the tensor's size on `axis` is k × the batch (normalisation names such a
        dim "batch" or "batch*k", `CompleteShapes`), else None."""
        if axis == 0:
            return 1
        info = next(
            (i for i in (*self.model.graph.value_info, *self.model.graph.output) if i.name == name),
            None,
        )
        dims = info.type.tensor_type.shape.dim if info is not None else []
        symbol = dims[axis].dim_param if axis < len(dims) else ""
        if symbol == "batch":
            return 1
        factor = symbol.removeprefix("batch*")
        return int(factor) if factor != symbol and factor.isdigit() else None

    def is_activation(self, name: str) -> bool:
        return name in self.width

    def activation_inputs(self, node: onnx.NodeProto) -> list[str]:
        return [name for name in node.input if name in self.width]

    def channel_values(self, value: np.ndarray, like: str) -> np.ndarray | None:
        """`per_channel` against the activation `like`: its width, rank and channel axis."""
        return per_channel(value, self.width[like], len(self.shapes[like]), self.axis[like])


def attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def per_channel(value: np.ndarray, width: int, rank: int, axis: int = 1) -> np.ndarray | None:
    """The per-channel values of a constant that broadcasts against an activation of `rank`
    whose channel axis is `axis` (N, C, … by default).

    None when the constant varies along any axis other than the channel axis.
    """
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(size != 1 for position, size in enumerate(shape) if position != axis):
        return None
    if shape[axis] not in (1, width):
        return None
    return np.broadcast_to(value.reshape(-1), (width,)).astype(np.float64)


def live_nodes(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """The nodes that some output depends on, in their order: dead ones dropped."""
    wanted = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if any(name in wanted for name in node.output):
            kept.append(node)
            wanted.update(name for name in node.input if name)
    return kept[::-1]


def with_nodes(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto]
) -> onnx.ModelProto:
    """A copy of `model` whose graph has `nodes` and, added, `initializers`."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    result.graph.initializer.extend(initializers)
    return result


def with_replaced(
    model: onnx.ModelProto,
    replaced: dict[str, list[onnx.NodeProto]],
    dropped: set[str],
    initializers: list[onnx.TensorProto],
) -> onnx.ModelProto:
    """A copy of `model` in which each node named in `replaced` becomes its new nodes, in
    place, those named in `dropped` go, `initializers` are added, and initializers no node
    reads any longer go too."""
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name in replaced:
            nodes.extend(replaced[node.name])
        elif node.name not in dropped:
            nodes.append(node)
    result = with_nodes(model, nodes, initializers)
    read = {name for node in nodes for name in node.input}
    for init in [i for i in result.graph.initializer if i.name not in read]:
        result.graph.initializer.remove(init)
    return result


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the image input fixes (a model exported for a batch of 1 bakes the 1
    into its Reshapes), or None where the batch is free."""
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    return batch.dim_value if batch.HasField("dim_value") else None


def known_shapes(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    """Tensor name → its dims as the graph's value infos give them (None where unknown)."""
    shapes: dict[str, list[int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            ]
    return shapes
