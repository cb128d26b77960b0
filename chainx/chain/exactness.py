"""Does a chain compute what the masked scoring model computes? Told apart from float32's
rounding by a float64 reference.

Why: a fixed tolerance relative to the output's size fails a correct chain wherever the
outputs are small beside the inner activations (MobileNetV3, ShuffleNetV2 with trained-like
weights), since float32 then rounds away more of the output than the tolerance allows. The
masked model computed in float64 from the same weights has no such rounding. The float32
masked model's own error against it is the rounding any float32 computation of this graph
makes on these images (its noise floor); a chain whose error is within ROUNDING_FACTOR of
that floor is exact up to rounding, and a surgery error, which changes whole channels, is
far above it. On the 48 torchvision and timm zoo cases the chains' error was 0.3–2.8
times the floor (docs/zoo.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from chainx.onnx.graph import GraphIndex
from chainx.onnx.runtime import run_tensors
from chainx.scoring.settings import MaskedOutputs

ROUNDING_FACTOR = 8.0
# The least tolerance, relative to max |output|: a few float32 ulps, for a graph whose
# float32 masked model happens to round nothing.
ROUNDING_FLOOR = 4 * float(np.finfo(np.float32).eps)
# Without a float64 reference: relative to max |output|.
EXACTNESS_TOLERANCE = 1e-4
# A float16 chain rounds every value to 11 significant bits, against the float32 scoring
# model: its outputs differ by ~1e-3 of their scale after a few layers.
FLOAT16_TOLERANCE = 1e-2
# Where a failing chain parts from the masked model: the first tensor that differs by more
# than this fraction of its own size (two float32 runs differ by ~1e-7 of it).
PARTING = 1e-5


@dataclass
class Exactness:
    max_abs_diff: float  # the chain's error: against `reference`
    max_abs_output: float
    tolerance: float
    passed: bool
    reference: str = "float32"  # "float64": the masked model in float64
    # The float32 masked model's own error against the float64 one: float32's rounding.
    noise: float | None = None
    parts_at: str | None = None  # where a failing chain first differs (`first_parting`)


def check_exactness(
    output: np.ndarray, expected: MaskedOutputs, float16: bool = False
) -> Exactness:
    """The chain's `output` against the masked model: within ROUNDING_FACTOR × float32's
    rounding of the float64 reference; without one, or for a float16 chain, within a fixed
    fraction of max |output| (EXACTNESS_TOLERANCE, FLOAT16_TOLERANCE)."""
    output = output.astype(np.float64)
    if expected.float64 is None or float16:
        relative = FLOAT16_TOLERANCE if float16 else EXACTNESS_TOLERANCE
        return within(output, expected.float32.astype(np.float64), relative)
    reference = expected.float64
    error = float(np.abs(output - reference).max())
    noise = float(np.abs(expected.float32.astype(np.float64) - reference).max())
    scale = float(np.abs(reference).max())
    tolerance = ROUNDING_FACTOR * noise + ROUNDING_FLOOR * scale
    return Exactness(error, scale, tolerance, bool(error <= tolerance), "float64", noise)


def within(output: np.ndarray, expected: np.ndarray, relative: float) -> Exactness:
    """max |Δ| ≤ `relative` · max |expected|."""
    diff = float(np.abs(output.astype(np.float64) - expected).max())
    scale = float(np.abs(expected).max())
    tolerance = relative * scale
    return Exactness(diff, scale, tolerance, bool(diff <= tolerance))


def first_parting(
    chain: onnx.ModelProto,
    scored: onnx.ModelProto,
    layouts: dict[str, tuple[str, np.ndarray]],
    images: np.ndarray,
) -> str | None:
    """The first node of `scored` (the masked graph the chain was cut from) whose output the
    chain computes differently: on the channels the chain holds (`layouts`: original
    tensor → its name in the chain and the original channels it holds, on the tensor's
    unit axis), by more than PARTING of the tensor's size. None where every tensor agrees."""
    g = GraphIndex.build(scored)
    pairs = [
        (node, name, layouts[name])
        for node in scored.graph.node
        for name in node.output
        if name in layouts and name in g.axis
    ]
    if not pairs:
        return None
    ours = run_tensors(scored, images, [name for _, name, _ in pairs], cpu=True)
    theirs = run_tensors(chain, images, [placed for _, _, (placed, _) in pairs], cpu=True)
    for node, name, (placed, layout) in pairs:
        expected = np.take(ours[name], layout, axis=g.axis[name])
        got = theirs[placed]
        if got.shape != expected.shape:
            continue
        scale = max(float(np.abs(ours[name]).max()), 1e-30)
        if float(np.abs(got - expected).max()) > PARTING * scale:
            return f"{node.name} ({node.op_type})"
    return None
