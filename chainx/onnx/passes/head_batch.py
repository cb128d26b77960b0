"""Attention whose heads were merged into the batch axis, with the heads on their own axis.

tf2onnx writes Keras's MultiHeadAttention einsums as batched MatMuls over (N·H, T, D):
Reshape (N, H, …) → (N·H, …), Transpose, MatMul, and a Reshape back to (N, H, …).
torch's nn.MultiheadAttention, through the TorchScript exporter with a free batch, splits
its (T, N, C) projections as Reshape → (T, N·H, D), Transpose to (N·H, T, D) and Reshape
→ (N, H, T, D). With the heads inside the batch axis, the channel analysis cannot drop one
head's rows. A Reshape that merges the batch with the heads writes the same values in the
same order as one to (…, N, H, …), and MatMul and Transpose work alike on one more axis;
so each merge Reshape is given the unmerged shape, the Transposes in between one more
axis, and the Reshapes that split the batch again take the values as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.onnx.passes.base import ModelPass, PassResult
from chainx.onnx.passes.infer_shapes import static_shapes


class UnmergeHeadBatch(ModelPass):
    """A Reshape that merges the batch with H heads (`_merge`) gets the unmerged shape. The
    merged tensors may only be read by Transposes (the merged pair moves as one axis),
    MatMuls of two merged tensors with the same H and merged axis before the last two, and
    Reshapes without a 0 ("copy") in their shape; a group of merges whose tensors are read
    otherwise, or are a model output, stays as it is."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        shapes = static_shapes(model)
        constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        merges = {
            node.output[0]: merge
            for node in model.graph.node
            if (merge := _merge(node, constants, shapes)) is not None
        }
        if not merges:
            return PassResult(model, modified=False)
        heads = {name: merge.heads for name, merge in merges.items()}
        axis = {name: merge.axis for name, merge in merges.items()}  # the merged axis
        # Follow the merged tensors; a root (merge Reshape output) names each group.
        root = {name: name for name in merges}
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
                if perm:
                    lifted[node.name] = _lifted_perm(perm, axis[merged[0]])
                    root[node.output[0]] = group
                    axis[node.output[0]] = perm.index(axis[merged[0]])
                    continue
            elif node.op_type == "MatMul" and len(merged) == 2:
                other = find(root[merged[1]])
                rank = len(shapes.get(merged[0]) or [])
                same = axis[merged[0]] == axis[merged[1]] < rank - 2
                if heads[group] == heads[other] and same:
                    parent[other] = group
                    root[node.output[0]] = group
                    axis[node.output[0]] = axis[merged[0]]
                    continue
            elif node.op_type == "Reshape" and node.input[0] in root:
                shape = constants.get(node.input[1])
                if shape is not None and not (shape == 0).any():
                    continue
            poisoned |= {root[name] for name in merged}
        poisoned |= {root[name] for name in outputs & set(root)}
        # Groups joined after one of their members was poisoned are poisoned whole.
        stay = {find(name) for name in poisoned}
        chosen = {name for name in merges if find(name) not in stay}
        if not chosen:
            return PassResult(model, modified=False)
        groups = {find(name) for name in chosen}
        for node in model.graph.node:
            if node.op_type == "Reshape" and node.output[0] in chosen:
                new = merges[node.output[0]].unmerged
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


@dataclass(frozen=True)
class Merge:
    heads: int
    axis: int  # of the merged tensor: the one that holds batch × heads
    unmerged: np.ndarray  # the Reshape's shape with the batch and the heads apart


def _lifted_perm(perm: list[int], merged: int) -> list[int]:
    """`perm` over the tensor with its merged axis `merged` as two axes (batch, heads)."""
    lifted: list[int] = []
    for p in perm:
        lifted += [merged, merged + 1] if p == merged else [p + (p > merged)]
    return lifted


def _merge(
    node: onnx.NodeProto, constants: dict[str, np.ndarray], shapes: dict[str, list[int | None]]
) -> Merge | None:
    """Where `node` is a Reshape that merges the batch with H heads:
    (N, H, …) → (-1, s…) with H·prod(s) = prod(…) (tf2onnx), or (…, N, C) → (…, -1, D)
    with C = H·D, the batch free (nn.MultiheadAttention through TorchScript)."""
    if node.op_type != "Reshape" or node.input[1] not in constants:
        return None
    shape = constants[node.input[1]]
    source = shapes.get(node.input[0])
    if shape.ndim != 1 or len(shape) < 2 or source is None or len(source) < 3:
        return None
    free = [i for i, d in enumerate(source) if d is None]
    if shape[0] == -1 and (shape[1:] > 0).all() and all(d is not None for d in source[1:]):
        h = source[1]
        if h >= 2 and h * math.prod(int(d) for d in shape[1:]) == math.prod(source[1:]):
            return Merge(h, 0, np.array([-1, h, *shape[1:]], dtype=shape.dtype))
        return None
    at = len(source) - 2
    others = [i for i in range(len(source)) if i not in (at, at + 1)]
    if free != [at] or len(shape) != len(source) or shape[at] != -1 or shape[-1] <= 0:
        return None
    if any(shape[i] != source[i] for i in others) or source[-1] % shape[-1]:
        return None
    h = source[-1] // int(shape[-1])
    if h < 2:
        return None
    unmerged = np.array([*shape[:at], -1, h, shape[-1]], dtype=shape.dtype)
    return Merge(h, at, unmerged)
