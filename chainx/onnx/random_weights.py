"""The random-weights control: the same architecture with its learnt weights re-drawn.

A chain extracted from such a network shows what the method finds in the architecture
alone, without the structure that training put into the weights (issue 12).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.graph import GraphIndex
from chainx.onnx.runtime import run_tensors

WEIGHTED_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def _set_constant(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace the value of the initializer or Constant node `name`, keeping its name."""
    tensor = numpy_helper.from_array(value, name)
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(tensor)
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            next(a for a in node.attribute if a.name == "value").t.CopyFrom(tensor)
            return
    raise ChainxError(f"{name} is not a constant of the model")


def _redraw_weights(model: onnx.ModelProto, rng: np.random.Generator) -> None:
    g = GraphIndex.build(model)
    drawn = set()
    for node in g.nodes:
        name = node.input[1] if node.op_type in WEIGHTED_OPS and len(node.input) > 1 else ""
        # A MatMul of two activations (attention) has no weight to re-draw.
        if not name or name in drawn or name not in g.constants:
            continue
        drawn.add(name)
        weight = g.constants[name]
        std = float(weight.astype(np.float64).std())
        _set_constant(model, name, rng.normal(0.0, std, weight.shape).astype(weight.dtype))


def _reestimate_batchnorm(model: onnx.ModelProto, images: np.ndarray | None) -> None:
    """Each BatchNormalization's running mean and variance, measured on `images`.

    In graph order, one run per node, so each one sees the statistics already re-estimated
    upstream, as the network it normalises now computes them.
    """
    norms = [node for node in model.graph.node if node.op_type == "BatchNormalization"]
    if not norms:
        return
    if images is None:
        raise ChainxError(
            "the model has BatchNormalization nodes, whose statistics must be re-estimated "
            "for random weights: give images."
        )
    g = GraphIndex.build(model)
    for node in norms:
        name = node.input[0]
        value = images if name == g.input_name else run_tensors(model, images, [name])[name]
        value = value.astype(np.float64)
        axes = (0, *range(2, value.ndim))
        dtype = g.constants[node.input[3]].dtype
        _set_constant(model, node.input[3], value.mean(axes).astype(dtype))
        _set_constant(model, node.input[4], value.var(axes).astype(dtype))


def random_weights_model(
    model: onnx.ModelProto, images: np.ndarray | None, seed: int
) -> onnx.ModelProto:
    """`model` with every Conv, Gemm and MatMul weight re-drawn, N(0, σ²) with σ the
    standard deviation of that layer's original weight (same shape and dtype).

    Biases are kept as they are, and so are BatchNormalization's scale and shift. Each
    BatchNormalization's running mean and variance are re-estimated as the per-channel mean
    and (population) variance of its input over `images` and pixels, computed in
    onnxruntime on the re-drawn model, node by node in graph order. Where BatchNorm is
    folded into the Conv (no BatchNormalization nodes) there is nothing to re-estimate and
    `images` may be None. `model` must be normalised (`chainx.onnx.normalise.normalise`),
    so that its weights are constants; weights computed at run time are left alone. The
    caller's model is not changed.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    _redraw_weights(result, np.random.default_rng(seed))
    _reestimate_batchnorm(result, images)
    return result
