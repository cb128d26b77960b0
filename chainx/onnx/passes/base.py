"""What every normalisation pass shares: its result, its interface, and how errors name nodes."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import onnx


@dataclass(frozen=True)
class PassResult:
    """The model after a pass, and whether the pass changed anything."""

    model: onnx.ModelProto
    modified: bool


class ModelPass(abc.ABC):
    """One normalisation step, in the style of onnx-ir's passes, on an onnx.ModelProto.

    A pass may change the model it is given in place; use `PassResult.model` afterwards.
    """

    def __call__(self, model: onnx.ModelProto) -> PassResult:
        return self.call(model)

    @abc.abstractmethod
    def call(self, model: onnx.ModelProto) -> PassResult: ...


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports (0 if none)."""
    return next((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), 0)


def describe(node: onnx.NodeProto) -> str:
    """How an error names a node; before the naming pass a node may have no name yet."""
    if node.name:
        return f"node {node.name!r} ({node.op_type})"
    return f"the {node.op_type} node that writes {node.output[0]!r}"
