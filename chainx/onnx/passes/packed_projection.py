"""nn.MultiheadAttention's packed in-projection as three projections, so that heads can be
followed from Q, K and V back to their weight rows.

torch writes `linear(x, W_qkv).unflatten(-1, (3, E)).unsqueeze(0).transpose(0, -2)
.squeeze(-2)[i]`: one MatMul to 3·E features, a Reshape to (…, 3, E), and a Gather along
the "3" axis after some unit-axis moves. The channel analysis follows the E features only
as one block of three, so it would keep every head's Q, K and V. Written as three MatMuls
on column blocks of W_qkv (bit-identical slices), each block's features are the Q, K or V
ones, and the head split that follows can drop a removed head's rows from each.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.graph import with_replaced
from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes

# The ops between the (…, 3, E) Reshape and the Gathers that pick Q, K and V.
UNIT_MOVES = frozenset({"Unsqueeze", "Transpose", "Squeeze"})


class SplitPackedProjection(ModelPass):
    """MatMul (x, W[D, 3E]) [+ Add b] → Reshape (…, 3, E) → Unsqueeze/Transpose/Squeeze →
    Gather(i) for i = 0, 1, 2 becomes, for each i, MatMul (x, W[:, iE:(i+1)E]) [+ Add
    b[iE:(i+1)E]] writing Gather(i)'s output. Nothing else may read the packed tensors."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        producer = {name: node for node in model.graph.node for name in node.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        for output in model.graph.output:  # a model output is read too: it must stay
            readers.setdefault(output.name, []).append(onnx.NodeProto(name=output.name))
        replaced: dict[str, list[onnx.NodeProto]] = {}  # Gather name → its new nodes
        dropped: set[str] = set()
        added: list[onnx.TensorProto] = []
        for node in model.graph.node:
            found = _packed(node, producer, readers, constants, shapes)
            if found is None:
                continue
            matmul, bias_add, chain, gathers = found
            weight = constants[matmul.input[1]]
            width = weight.shape[1] // 3
            for gather in gathers:
                index = int(constants[gather.input[1]])
                columns = slice(index * width, (index + 1) * width)
                name = f"{matmul.name}/part{index}"
                added.append(numpy_helper.from_array(weight[:, columns].copy(), f"{name}/W"))
                out = gather.output[0] if bias_add is None else f"{name}/out"
                new = [helper.make_node("MatMul", [matmul.input[0], f"{name}/W"], [out], name=name)]
                if bias_add is not None:
                    bias_name = next(i for i in bias_add.input if i in constants)
                    bias = constants[bias_name][columns].copy()
                    added.append(numpy_helper.from_array(bias, f"{name}/b"))
                    new.append(
                        helper.make_node(
                            "Add", [out, f"{name}/b"], [gather.output[0]], name=f"{name}/Add"
                        )
                    )
                replaced[gather.name] = new
            dropped |= {n.name for n in [matmul, *chain, *gathers]}
            if bias_add is not None:
                dropped.add(bias_add.name)
        if not replaced:
            return PassResult(model, modified=False)
        # The packed weight and the shapes only the old nodes read go with them.
        result = with_replaced(model, replaced, dropped, added)
        return PassResult(result, modified=True)


def _only_reader(name: str, readers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    found = readers.get(name, [])
    return found[0] if len(found) == 1 else None


def _packed(
    reshape: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    readers: dict[str, list[onnx.NodeProto]],
    constants: dict[str, np.ndarray],
    shapes: dict[str, list[int | None]],
) -> (
    tuple[onnx.NodeProto, onnx.NodeProto | None, list[onnx.NodeProto], list[onnx.NodeProto]] | None
):
    """(MatMul, its bias Add or None, the unit moves, the three Gathers) around a Reshape to
    (…, 3, E), or None."""
    if reshape.op_type != "Reshape":
        return None
    out_shape = shapes.get(reshape.output[0])
    if out_shape is None or len(out_shape) < 3 or out_shape[-2] != 3 or out_shape[-1] is None:
        return None
    width = out_shape[-1]
    source = producer.get(reshape.input[0])
    bias_add = None
    if source is not None and source.op_type == "Add":
        bias = [name for name in source.input if name in constants]
        if len(bias) != 1 or constants[bias[0]].shape != (3 * width,):
            return None
        if _only_reader(source.output[0], readers) is not reshape:
            return None
        bias_add = source
        source = producer.get(next(n for n in source.input if n not in constants))
    if source is None or source.op_type != "MatMul" or source.input[1] not in constants:
        return None
    weight = constants[source.input[1]]
    if weight.ndim != 2 or weight.shape[1] != 3 * width:
        return None
    if _only_reader(source.output[0], readers) is not (bias_add or reshape):
        return None
    chain: list[onnx.NodeProto] = [reshape]
    tensor = reshape.output[0]
    while (step := _only_reader(tensor, readers)) is not None and step.op_type in UNIT_MOVES:
        perm = next((list(a.ints) for a in step.attribute if a.name == "perm"), None)
        if step.op_type == "Transpose" and (perm is None or perm[-1] != len(perm) - 1):
            return None  # E must stay the last axis
        chain.append(step)
        tensor = step.output[0]
    gathers = readers.get(tensor, [])
    shape = shapes.get(tensor)
    if (
        len(gathers) != 3
        or shape is None
        or shape[0] != 3
        or any(g.op_type != "Gather" or g.input[1] not in constants for g in gathers)
        or any(next((a.i for a in g.attribute if a.name == "axis"), 0) != 0 for g in gathers)
        or sorted(int(constants[g.input[1]]) for g in gathers if constants[g.input[1]].ndim == 0)
        != [0, 1, 2]
    ):
        return None
    # The moves must only shift unit axes: the Gather's output is then (…, E) as the
    # MatMul's block i is, in the same order.
    picked = shapes.get(gathers[0].output[0])
    lead = shapes.get(source.output[0])
    if picked is None or lead is None or picked[-1] != width:
        return None
    if [d for d in picked[:-1] if d != 1] != [d for d in lead[:-1] if d != 1]:
        return None
    return source, bias_add, chain, gathers
