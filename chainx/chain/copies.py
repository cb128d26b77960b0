"""The exact-copy check: every Conv, Gemm and MatMul weight of a chain is, bit for bit, a
slice of the user's own weight."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from chainx.channels.emitter import WeightSlice

# Ops that only move a tensor's elements: a weight the user's file computes from a constant
# through these holds the constant's very bits (the ONNX zoo's CNTK exports reshape their
# last weight from 4-D at run time).
MOVING_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    """A constant by name: an initializer, a Constant op, or one of those moved by Identity
    and MOVING_OPS nodes whose other inputs are constants too; None otherwise."""
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    opset = next((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), 0)

    def value(name: str, depth: int) -> np.ndarray | None:
        if name in initializers:
            return numpy_helper.to_array(initializers[name], base_dir="")
        node = producers.get(name)
        if node is None or depth > len(model.graph.node):
            return None
        if node.op_type == "Constant":
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            return None if attribute is None else numpy_helper.to_array(attribute.t)
        if node.op_type == "Identity":
            return value(node.input[0], depth + 1)
        if node.op_type not in MOVING_OPS or node.output[0] != name:
            return None
        inputs = [value(used, depth + 1) if used else None for used in node.input]
        if any(v is None for used, v in zip(node.input, inputs, strict=True) if used):
            return None
        return _moved(node, inputs, opset)

    return value(name, 0)


def _moved(node: onnx.NodeProto, inputs: list[np.ndarray | None], opset: int) -> np.ndarray:
    """The output of one moving node on constant inputs, as onnx's reference runs it."""
    names = [f"in{i}" if used else "" for i, used in enumerate(node.input)]
    step = onnx.helper.make_node(node.op_type, names, ["out"])
    step.attribute.extend(node.attribute)
    graph = onnx.helper.make_graph(
        [step],
        "moved",
        [
            onnx.helper.make_tensor_value_info(
                n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape
            )
            for n, v in zip(names, inputs, strict=True)
            if n
        ],
        [onnx.helper.make_empty_tensor_value_info("out")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(names, inputs, strict=True) if n}
    return ReferenceEvaluator(model).run(None, feeds)[0]


@dataclass
class CopyCheck:
    checked: int
    mismatched: list[str]

    @property
    def passed(self) -> bool:
        return not self.mismatched


def check_exact_copies(
    chain: onnx.ModelProto,
    original: onnx.ModelProto,
    slices: list[WeightSlice],
    normalised: onnx.ModelProto | None = None,
) -> CopyCheck:
    """Every Conv and Gemm weight in the chain equals a slice of the original, bit for bit.

    A node is looked up by name in the user's model; one that only normalisation named
    (the user's node had no name) is looked up in the normalised model, whose weights are
    the user's, untouched. A MatMul of two activations (attention's QKᵀ and softmax·V)
    holds no weight and is not checked.
    """
    recorded = {s.node: s for s in slices}
    original_nodes = {node.name: (node, original) for node in original.graph.node}
    for node in normalised.graph.node if normalised is not None else []:
        original_nodes.setdefault(node.name, (node, normalised))
    mismatched: list[str] = []
    checked = 0
    computed = {
        name
        for node in chain.graph.node
        if node.op_type not in {"Constant", "Identity"}
        for name in node.output
    } | {chain.graph.input[0].name}
    for node in chain.graph.node:
        if node.op_type not in {"Conv", "Gemm", "MatMul"}:
            continue
        if node.op_type == "MatMul" and node.input[1] in computed:
            continue
        checked += 1
        source, owner = original_nodes.get(node.name, (None, original))
        weight = _constant(chain, node.input[1])
        entry = recorded.get(node.name)
        if source is None or weight is None:
            mismatched.append(f"{node.name}: no source node of that name in the original")
            continue
        reference = _constant(owner, source.input[1])
        if reference is None:
            mismatched.append(f"{node.name}: its original weight is not a constant")
            continue
        if entry is not None:
            index = [np.asarray(a, np.int64) for a in entry.axes]
            index += [np.arange(n) for n in reference.shape[len(index) :]]
            reference = reference[np.ix_(*index)]
        same = (
            weight.shape == reference.shape
            and weight.dtype == reference.dtype
            and weight.tobytes() == reference.tobytes()
        )
        if not same:
            mismatched.append(f"{node.name}: weight differs from its source slice")
    return CopyCheck(checked, mismatched)
