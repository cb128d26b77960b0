"""Where the scores multiply: one point per Conv (and hidden Gemm), after its affine tail.

A Conv's units are its filters; a hidden Gemm's (or MatMul's) are its output neurons, scored
like filters. In a transformer, the units are an MLP's hidden neurons (a Linear layer on
tokens, after its bias, whose output goes through an activation) and attention heads (the
output of softmax·V, one score per head before the heads are merged). A layer whose units
reach the model output without another mixing layer is the classifier itself and is not
scored.

`scored_model` inserts `Mul(point, multiplier)` after every such point. The multiplier is a
graph input (for the torch scoring model) or a constant (for the export).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.graph import GraphIndex

SCORE_PREFIX = "chainx.score."


@dataclass(frozen=True)
class ScorePoint:
    """A scored layer: its node name, the tensor its scores multiply, its unit count, the
    rank and unit axis of that tensor, and what a unit is: a Conv "filter", a hidden
    "neuron" (of a fully connected layer or a transformer's MLP), or an attention "head"."""

    layer: str
    point: str
    channels: int
    rank: int
    axis: int = 1
    kind: str = "filter"

    @property
    def shape(self) -> list[int]:
        """The multiplier's shape: (1, …, channels, …, 1), broadcast against the point."""
        shape = [1] * self.rank
        shape[self.axis] = self.channels
        return shape

    @property
    def multiplier(self) -> str:
        return SCORE_PREFIX + self.layer

    @property
    def scored(self) -> str:
        return self.point + "::scored"


MIXING_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def _reaches_output(g: GraphIndex, tensor: str) -> bool:
    """Whether `tensor`'s channels reach a model output without passing another mixing layer.

    Such a Conv is the classifier itself (SqueezeNet's last 1×1 conv): its channels are the
    classes, so scoring them would change which classes exist, not which filters explain them.
    """
    seen, frontier = {tensor}, [tensor]
    while frontier:
        name = frontier.pop()
        if name in g.output_names:
            return True
        for reader in g.consumers.get(name, []):
            if reader.op_type in MIXING_OPS:
                continue
            for out in reader.output:
                if out and out not in seen:
                    seen.add(out)
                    frontier.append(out)
    return False


# Ops a transformer's MLP applies to its hidden neurons (GELU is often Div, Erf, Add, Mul;
# its tanh form Mul, Pow, Tanh, Add).
ACTIVATION_OPS = frozenset("Relu Gelu Erf Div Mul Pow Sigmoid Tanh Clip HardSwish Softplus".split())
# Ops between the softmax and the MatMul by V that change nothing but unit axes or type.
PASS_THROUGH = frozenset({"Dropout", "Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape"})


def _is_head_output(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """softmax(QKᵀ)·V, batched over heads on its channel axis."""
    if node.op_type != "MatMul" or not all(g.is_activation(name) for name in node.input[:2]):
        return False
    weights = g.producer.get(node.input[0])
    while weights is not None and weights.op_type in PASS_THROUGH:
        if weights.op_type == "Reshape" and not _moves_unit_axes(weights, g):
            return False
        weights = g.producer.get(weights.input[0])
    y = node.output[0]
    rank = len(g.shapes[y])
    return (
        weights is not None
        and weights.op_type == "Softmax"
        and rank >= 3
        and g.axis[y] < rank - 2
        and all(g.axis[name] == g.axis[y] for name in node.input[:2])
    )


def _moves_unit_axes(node: onnx.NodeProto, g: GraphIndex) -> bool:
    """A Reshape that only adds or drops axes of size 1 (tf2onnx's einsums write them)."""
    before, after = g.shapes.get(node.input[0]), g.shapes.get(node.output[0])
    if before is None or after is None:
        return False
    return [d for d in before if d != 1] == [d for d in after if d != 1]


def _is_token_linear(node: onnx.NodeProto, g: GraphIndex, point: str) -> bool:
    """A Linear layer on (B, N, D) tokens whose output (after its bias) feeds an activation
    only: an MLP's first layer. Q/K/V projections go to a Reshape, output projections to an
    Add. (ConvNeXt's Linear layers on (B, H, W, C) maps are not scored yet.)"""
    rank = len(g.shapes[point])
    readers = g.consumers.get(point, [])
    return (
        node.op_type == "MatMul"
        and rank == 3
        and g.axis.get(point) == rank - 1
        and bool(readers)
        and all(
            reader.op_type in ACTIVATION_OPS
            or (reader.op_type == "Add" and _computed_from(reader, point, g))
            for reader in readers
        )
    )


def _computed_from(node: onnx.NodeProto, point: str, g: GraphIndex, depth: int = 6) -> bool:
    """Whether every input of `node` is `point`, a constant, or computed from them alone by
    activation ops: the Add inside GELU's tanh form, x + 0.044715·x³, not a residual Add."""
    for name in node.input:
        if name == point or name in g.constants:
            continue
        source = g.producer.get(name)
        if source is None or depth == 0 or source.op_type not in ACTIVATION_OPS | {"Add"}:
            return False
        if not _computed_from(source, point, g, depth - 1):
            return False
    return True


def _scorable(node: onnx.NodeProto, g: GraphIndex) -> bool:
    if not g.is_activation(node.output[0]):
        return False
    if node.op_type == "Conv":
        return g.axis[node.output[0]] == 1
    # A hidden fully connected layer on (N, F) features with a constant weight; not one on
    # tokens flattened with the batch (nn.MultiheadAttention's output projection), whose
    # output is reshaped back into tokens.
    readers = g.consumers.get(_biased(node, g), [])
    return (
        node.op_type in {"Gemm", "MatMul"}
        and len(g.shapes[node.output[0]]) == 2
        and node.input[1] in g.constants
        and not any(reader.op_type in {"Reshape", "Transpose"} for reader in readers)
    )


def _biased(node: onnx.NodeProto, g: GraphIndex) -> str:
    """The node's output, or the Add of a per-channel bias that alone reads it."""
    point = node.output[0]
    readers = g.consumers.get(point, [])
    if len(readers) != 1 or readers[0].op_type != "Add" or point in g.output_names:
        return point
    other = [name for name in readers[0].input if name != point]
    if len(other) == 1 and other[0] in g.constants:
        if g.is_activation(readers[0].output[0]):
            if g.channel_values(g.constants[other[0]], readers[0].output[0]) is not None:
                return readers[0].output[0]
    return point


def find_score_points(model: onnx.ModelProto) -> list[ScorePoint]:
    g = GraphIndex.build(model)
    points = []
    for node in g.nodes:
        if _is_head_output(node, g) or (
            node.op_type == "MatMul"
            and node.input[1] in g.constants
            and g.is_activation(node.output[0])
            and _is_token_linear(node, g, _biased(node, g))
        ):
            head = _is_head_output(node, g)
            point = node.output[0] if head else _biased(node, g)
            points.append(
                ScorePoint(
                    layer=node.name,
                    point=point,
                    channels=g.width[point],
                    rank=len(g.shapes[point]),
                    axis=g.axis[point],
                    kind="head" if head else "neuron",
                )
            )
            continue
        if not _scorable(node, g) or _reaches_output(g, node.output[0]):
            continue
        point = node.output[0]
        readers = g.consumers.get(point, [])
        if (
            len(readers) == 1
            and readers[0].op_type == "BatchNormalization"
            and readers[0].input[0] == point
            and point not in g.output_names
            and len([o for o in readers[0].output if o]) == 1
        ):
            point = readers[0].output[0]
        points.append(
            ScorePoint(
                layer=node.name,
                point=point,
                channels=g.width[point],
                rank=len(g.shapes[point]),
                kind="filter" if node.op_type == "Conv" else "neuron",
            )
        )
    if not points:
        raise ChainxError(
            "the model has no Conv layer with a known channel count, so there is nothing to "
            "score. chainx extracts chains of convolutional filters."
        )
    return points


def scored_model(
    model: onnx.ModelProto,
    points: list[ScorePoint],
    multipliers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """The model with a Mul after every score point.

    Without `multipliers` each multiplier is a graph input of shape `point.shape`, after the
    image input, in the order of `points`; with them, each is a float32 constant.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    renamed = {p.point: p.scored for p in points}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for output in graph.output:
        if output.name in renamed:
            raise ChainxError(
                f"the model output {output.name!r} is a Conv output; chainx needs a classifier "
                "head after the last Conv."
            )
    position = {name: i for i, node in enumerate(graph.node) for name in node.output}
    inserts = sorted(((position[p.point], p) for p in points), key=lambda item: -item[0])
    for index, point in inserts:
        mul = helper.make_node(
            "Mul", [point.point, point.multiplier], [point.scored], name=point.multiplier
        )
        graph.node.insert(index + 1, mul)
    for point in points:
        shape = point.shape
        if multipliers is None:
            graph.input.append(
                helper.make_tensor_value_info(point.multiplier, TensorProto.FLOAT, shape)
            )
        else:
            value = np.asarray(multipliers[point.layer], np.float32).reshape(shape)
            graph.initializer.append(numpy_helper.from_array(value, point.multiplier))
    return onnx.shape_inference.infer_shapes(result, strict_mode=True)


def score_muls(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Scored layer (node name) → its score Mul, in a scored model or a chain."""
    return {
        node.name[len(SCORE_PREFIX) :]: node
        for node in model.graph.node
        if node.name.startswith(SCORE_PREFIX)
    }


def output_kind(model: onnx.ModelProto) -> str:
    """What the model's output holds, judged by the op that produces it."""
    producer = {name: node for node in model.graph.node for name in node.output}
    node = producer.get(model.graph.output[0].name)
    if node is not None and node.op_type == "Softmax":
        return "probabilities"
    if node is not None and node.op_type == "LogSoftmax":
        return "log-probabilities"
    return "logits"
