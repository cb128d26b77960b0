"""Attention whose heads were merged into the batch axis, with the heads on their own axis.

tf2onnx writes Keras's MultiHeadAttention einsums as batched MatMuls over (N·H, T, D):
Reshape (N, H, …) → (N·H, …), Transpose, MatMul, and a Reshape back to (N, H, …). With
the heads inside the batch axis, the channel analysis cannot drop one head's rows. A
Reshape that merges the batch with the next axis writes the same values in the same order
as one to (N, H, …), and MatMul and Transpose work alike on the extra leading axis; so
each merge Reshape is given the unmerged shape, the Transposes in between one more axis,
and the Reshapes that split the batch again take the values as they are.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes


class UnmergeHeadBatch(ModelPass):
    """Reshape (x (N, H, …) → (-1, s…)) with H·prod(s) = prod(x's dims after N) becomes
    Reshape (x → (-1, H, s…)). The merged tensors may only be read by Transposes that keep
    the batch first, MatMuls of two merged tensors with the same H, and Reshapes without
    a 0 ("copy") in their shape; a group of merges whose tensors are read otherwise, or
    are a model output, stays as it is."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        heads = {
            node.output[0]: h
            for node in model.graph.node
            if (h := _merged_heads(node, constants, shapes)) is not None
        }
        if not heads:
            return PassResult(model, modified=False)
        # Follow the merged tensors; a root (merge Reshape output) names each group.
        root = {name: name for name in heads}
        parent = dict(root)

        def find(name: str) -> str:
            while parent[name] != name:
                name = parent[name]
            return name

        poisoned: set[str] = set()  # members of groups that must stay merged
        outputs = {output.name for output in model.graph.output}
        lifted: dict[str, list[int]] = {}  # Transpose name → its perm with the extra axis
        for node in model.graph.node:  # topological order
            merged = [name for name in node.input if name in root]
            if not merged:
                continue
            group = find(root[merged[0]])
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
                if perm and perm[0] == 0:
                    lifted[node.name] = [0, 1, *(p + 1 for p in perm[1:])]
                    root[node.output[0]] = group
                    continue
            elif node.op_type == "MatMul" and len(merged) == 2:
                other = find(root[merged[1]])
                if heads[group] == heads[other]:
                    parent[other] = group
                    root[node.output[0]] = group
                    continue
            elif node.op_type == "Reshape" and node.input[0] in root:
                shape = constants.get(node.input[1])
                if shape is not None and not (shape == 0).any():
                    continue
            poisoned |= {root[name] for name in merged}
        poisoned |= {root[name] for name in outputs & set(root)}
        # Groups joined after one of their members was poisoned are poisoned whole.
        stay = {find(name) for name in poisoned}
        chosen = {name for name in heads if find(name) not in stay}
        if not chosen:
            return PassResult(model, modified=False)
        groups = {find(name) for name in chosen}
        for node in model.graph.node:
            if node.op_type == "Reshape" and node.output[0] in chosen:
                shape = constants[node.input[1]]
                new = np.array([-1, heads[node.output[0]], *shape[1:]], dtype=shape.dtype)
                name = f"{node.input[1]}_{node.name}_heads"
                model.graph.initializer.append(numpy_helper.from_array(new, name))
                node.input[1] = name
            elif node.name in lifted and find(root[node.output[0]]) in groups:
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("perm", lifted[node.name]))
        read = {name for node in model.graph.node for name in node.input}
        for init in [i for i in model.graph.initializer if i.name not in read]:
            model.graph.initializer.remove(init)
        del model.graph.value_info[:]  # the ranks changed: inferred again by the caller
        return PassResult(model, modified=True)


def _merged_heads(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], shapes: dict[str, list[int | None]]
) -> int | None:
    """H, where `node` is a Reshape of (N, H, …) to (-1, s…) with H·prod(s) = prod(…)."""
    if node.op_type != "Reshape" or node.input[1] not in constants:
        return None
    shape = constants[node.input[1]]
    source = shapes.get(node.input[0])
    if shape.ndim != 1 or len(shape) < 2 or shape[0] != -1 or (shape[1:] <= 0).any():
        return None
    if source is None or len(source) < 3 or any(d is None for d in source[1:]):
        return None
    h = source[1]
    if h < 2 or h * math.prod(int(d) for d in shape[1:]) != math.prod(source[1:]):
        return None
    return h
