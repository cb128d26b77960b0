"""Which axis of each activation holds its channels (or features, or heads).

A CNN keeps its channels on axis 1 throughout. A transformer does not: a Linear layer on
(B, N, D) tokens mixes the last axis, and attention splits that axis into heads (B, H, N, Dh)
and merges them back. The channel axis follows the ops forward from the image input:

- a MatMul with a constant 2-D weight (a Linear layer) and LayerNormalization over the last
  axis put it last;
- elementwise ops keep it, Transpose moves it, Squeeze/Unsqueeze and reductions shift it;
  a reduction over the channel axis alone that keeps it leaves it there, with size 1;
- a Reshape that splits the last axis into (…, heads, head size) puts it on the heads axis,
  one that merges (heads, head size) back puts it last, one that only adds or drops unit
  axes moves it with them, one that keeps the last axis (patches flattened into tokens)
  keeps it last;
- every other op leaves its outputs on axis 1, as before.

An axis is only a claim about layout: each rule still checks that its inputs' axes are the
ones it understands, and an op whose axes no rule understands is frozen, which stays exact.
"""

from __future__ import annotations

import numpy as np
import onnx

ELEMENTWISE_OPS = frozenset(
    (
        "Relu LeakyRelu HardSwish Tanh Identity Neg Abs Erf Gelu Elu Selu Softsign Mish "
        "Dropout Sigmoid HardSigmoid Softplus Exp Cos Clip Sqrt Add Sub Mul Div Pow Cast "
        "Softmax Reciprocal"
    ).split()
)


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _axes_input(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], rank: int
) -> list[int] | None:
    axes = _attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].tolist()
    return None if axes is None else sorted(int(a) % rank for a in np.atleast_1d(axes))


def _leads_match(a: list[int | None], b: list[int | None]) -> bool:
    """Leading axes that hold the same sizes once unit (and unknown batch) axes are dropped:
    (B, N) and (B, N); (L, 1) and (L) where nn.MultiheadAttention folds a batch of 1; or
    (L, B) and (L·B), its rows with a free batch. The reshape keeps the element count, so
    leading axes whose tails match hold the same elements in the same order."""
    if None in b and None in a:
        return True
    a = [d for d in a if d not in (1, None)]
    b = [d for d in b if d not in (1, None)]
    return a == b


def head_split(in_shape: list[int | None], out_shape: list[int | None]) -> int | None:
    """Where the split tail starts when (…, D) → (…, k…, H, Dh) with k·…·H·Dh = D (the
    shortest such tail of at least two axes), or None."""
    if len(in_shape) < 2 or in_shape[-1] is None:
        return None
    for start in range(len(out_shape) - 2, 0, -1):
        tail = out_shape[start:]
        if any(d is None for d in tail) or int(np.prod(tail)) != in_shape[-1]:
            continue
        return start if _leads_match(in_shape[:-1], out_shape[:start]) else None
    return None


def merge_heads(in_shape: list[int | None], out_shape: list[int | None]) -> bool:
    """(…, H, Dh) → (…, H·Dh) with the leading axes kept (up to unit axes)."""
    if len(in_shape) < 3 or len(out_shape) < 2:
        return False
    if any(d is None for d in in_shape[-2:]) or out_shape[-1] != in_shape[-2] * in_shape[-1]:
        return False
    return _leads_match(in_shape[:-2], out_shape[:-1])


def unit_axes_moved(
    in_shape: list[int | None], out_shape: list[int | None], axis: int
) -> int | None:
    """Where a reshape that only adds or drops unit axes puts axis `axis`, or None."""
    if in_shape[axis] in (1, None):
        return None
    inner = [i for i, d in enumerate(in_shape) if d != 1]
    outer = [i for i, d in enumerate(out_shape) if d != 1]
    if [in_shape[i] for i in inner] != [out_shape[i] for i in outer]:
        return None
    return outer[inner.index(axis)]


REDUCTIONS = frozenset(
    {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax"}
)


def _reduced_axis(
    node: onnx.NodeProto, axis: int, rank: int, constants: dict[str, np.ndarray]
) -> int | None:
    """A reduction moves the channel axis past the axes it drops; one over the channel axis
    alone that keeps it (LayerNorm's mean, as tf2onnx writes it: GlobalAveragePool of (B, N,
    D)) leaves it in place with size 1, so that the mean broadcasts over the channels."""
    if node.op_type.startswith("Global"):
        reduced, keep = list(range(2, rank)), True
    else:
        reduced = _axes_input(node, constants, rank)
        keep = bool(_attr(node, "keepdims", 1))
        if reduced is None:
            return None
    if axis in reduced:
        return axis if keep and reduced == [axis] else None
    return axis if keep else axis - sum(a < axis for a in reduced)


def output_axis(
    node: onnx.NodeProto,
    axis: dict[str, int],
    shapes: dict[str, list[int | None]],
    constants: dict[str, np.ndarray],
    input_name: str,
) -> int | None:
    """The channel axis of the node's (first) output, or None for the default, axis 1."""
    activations = [name for name in node.input if name in axis]
    if not activations or node.output[0] not in shapes:
        return None
    x, op = activations[0], node.op_type
    rank_in, rank_out = len(shapes.get(x, [])), len(shapes[node.output[0]])
    if op == "MatMul" and node.input[1] in constants and constants[node.input[1]].ndim == 2:
        return rank_out - 1
    if op == "LayerNormalization" and int(_attr(node, "axis", -1)) % rank_in == rank_in - 1:
        return rank_out - 1
    if op in ELEMENTWISE_OPS:
        axes = {axis[name] for name in activations}
        ranks = {len(shapes.get(name, [])) for name in activations}
        if len(axes) == 1 and ranks == {rank_out}:
            return axes.pop()
        return None
    if op == "Transpose":
        # The image input's axis 1 is a convention (an NHWC input holds H there), not a fact.
        if x == input_name:
            return None
        perm = _attr(node, "perm")
        perm = list(range(rank_in))[::-1] if perm is None else list(perm)
        return perm.index(axis[x])
    if op in {"Squeeze", "Unsqueeze"}:
        axes = _axes_input(node, constants, rank_in if op == "Squeeze" else rank_out)
        if axes is None or (op == "Squeeze" and axis[x] in axes):
            return None
        if op == "Squeeze":
            return axis[x] - sum(a < axis[x] for a in axes)
        position = axis[x]
        for a in axes:
            if a <= position:
                position += 1
        return position
    if op in {"Split", "Slice"}:
        return axis[x]
    if op in REDUCTIONS:
        return _reduced_axis(node, axis[x], rank_in, constants)
    if op == "Reshape" and x in shapes:
        in_shape, out_shape = shapes[x], shapes[node.output[0]]
        last = in_shape[-1]
        if axis[x] == rank_in - 1 and rank_out >= 2 and last not in (None, 1):
            if out_shape[-1] == last:
                return rank_out - 1  # leading axes merged or split, the last one kept
        if axis[x] == rank_in - 1 and rank_in >= 3 and head_split(in_shape, out_shape):
            return rank_out - 2
        if axis[x] == rank_in - 2 and merge_heads(in_shape, out_shape):
            return rank_out - 1
        return unit_axes_moved(in_shape, out_shape, axis[x])
    return None


def channel_axes(
    nodes: list[onnx.NodeProto],
    shapes: dict[str, list[int | None]],
    constants: dict[str, np.ndarray],
    dynamic: set[str],
    input_name: str,
) -> dict[str, int]:
    """Activation (dynamic tensor of rank ≥ 2) → its channel axis."""
    axis = {input_name: 1}
    for node in nodes:
        if not any(name in dynamic for name in node.input):
            continue
        chosen = output_axis(node, axis, shapes, constants, input_name)
        for name in node.output:
            shape = shapes.get(name)
            if name and shape is not None and len(shape) >= 2:
                axis[name] = 1 if chosen is None or chosen >= len(shape) else chosen
    return axis
