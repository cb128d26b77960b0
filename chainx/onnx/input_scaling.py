"""Find the normalisation a model applies to its own input, so that chainx does not apply it
a second time: exporters often keep `(x - mean) / std` or a Keras `Rescaling` in the graph."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

AFFINE_OPS = {"Sub", "Div", "Mul", "Add"}


@dataclass(frozen=True)
class InGraphNormalisation:
    ops: tuple[str, ...]
    # The pixel range the model expects: 1.0 for [0, 1], 255.0 for 0–255.
    pixel_scale: float

    def describe(self) -> str:
        top = "1" if self.pixel_scale == 1.0 else "255"
        return (
            f"the model normalises its input itself ({', '.join(self.ops)} at the input), "
            f"so pixels go in as [0, {top}]; --mean/--std override"
        )


def in_graph_normalisation(model: onnx.ModelProto) -> InGraphNormalisation | None:
    """The per-channel affine map `a·x + b` that Sub/Div/Mul/Add with constants apply to
    the image input before anything else, or None.

    A model scaled for 0–255 pixels is recognised by the map: a tiny factor (Keras'
    `Rescaling(1/255)`, 1/127.5) or a large offset without a scale (Caffe's mean
    subtraction); otherwise it reads [0, 1] pixels (torchvision's mean and std).
    """
    graph = model.graph
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value or 0
    constants = {init.name: init for init in graph.initializer}
    scale, offset = np.ones(1), np.zeros(1)
    ops: list[str] = []
    current = graph.input[0].name
    while True:
        users = [node for node in graph.node if current in node.input]
        if len(users) != 1 or users[0].op_type not in AFFINE_OPS:
            break
        node = users[0]
        others = [name for name in node.input if name != current]
        if len(others) != 1 or others[0] not in constants:
            break
        value = numpy_helper.to_array(constants[others[0]]).astype(np.float64).reshape(-1)
        if value.size not in {1, channels}:
            break
        input_first = node.input[0] == current
        if node.op_type == "Add":
            offset = offset + value
        elif node.op_type == "Mul":
            scale, offset = scale * value, offset * value
        elif node.op_type == "Sub":
            scale, offset = (scale, offset - value) if input_first else (-scale, value - offset)
        elif input_first:  # Div by a constant
            scale, offset = scale / value, offset / value
        else:  # a constant divided by the input is not a normalisation
            break
        ops.append(node.op_type)
        current = node.output[0]
    if not ops:
        return None
    factor, shift = float(np.abs(scale).max()), float(np.abs(offset).max())
    reads_0_255 = factor < 0.05 or (shift > 10 and factor <= 1)
    return InGraphNormalisation(tuple(ops), 255.0 if reads_0_255 else 1.0)
