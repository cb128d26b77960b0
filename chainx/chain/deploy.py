"""chain.deploy.onnx: the chain in the form onnxruntime runs fastest, at a stated tolerance.

Why a second file: onnxruntime's fast CPU convolutions (its NCHWc layout) work on blocks of
8 or 16 channels. A chain's layers keep odd counts (15, 27, 35 filters), and a convolution
whose channel count is not a whole number of blocks runs on the slow path, with a reorder
before and after it: on this project's CPU an inverted-residual block of 15 → 27 → 15
channels took 2.3 times as long as one of 16 → 32 → 16 (docs/performance.md). So each
scored layer's computed filters are rounded up to whole blocks with removed filters of the
same layer, carried by the surgery although their multiplier is zero: they compute exactly
zero, as in chain.onnx, and downstream ops see what they saw. A padding filter is chosen
first from the channels that other layers of the same width compute, so that a depthwise
convolution or a residual sum finds its channels there rather than behind a zero-filling
Pad and Gather. Then the scores are folded into the weights.

The weights are then no longer exact slices of the source (chain.onnx is that), and sums
run in another order, so the deploy file is checked as chain.onnx is, against the float64
masked model (`chain.exactness`), or against chain.onnx to DEPLOY_TOLERANCE.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from chainx.chain.exactness import (
    FLOAT16_TOLERANCE,
    Exactness,
    check_exactness,
    within,
)
from chainx.chain.export import add_metadata, source_form
from chainx.channels.surgery import present_units, shrink
from chainx.onnx.passes.float16 import float16_form
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import SCORE_PREFIX, ScorePoint, scored_model
from chainx.scoring.settings import MaskedOutputs
from chainx.version import __version__

BLOCK = 16  # onnxruntime's NCHWc block with AVX-512, a multiple of AVX2's 8
DEPLOY_TOLERANCE = 1e-4  # relative to max |output|, as chain.onnx against the scoring model
ROUNDS = 4  # carrying a channel can bring a filter that read it back to life: re-round


def deploy_chain(
    normalised: onnx.ModelProto,
    points: list[ScorePoint],
    multipliers: dict[str, np.ndarray],
    float16: str | None = None,
    channels_last: bool = False,
    block: int = BLOCK,
) -> onnx.ModelProto:
    """chain.deploy.onnx: `deploy_model` in the source's form, with its provenance."""
    model = deploy_model(normalised, points, multipliers, block)
    model = source_form(model, float16, channels_last)
    add_metadata(model, {"chainx.version": __version__, "chainx.deploy_block": str(block)})
    padded = f" and every scored layer padded with zero filters to a multiple of {block}"
    model.doc_string = (
        "Deployment form of a chain extracted by chainx: the scores folded into the weights"
        f"{padded if block > 1 else ''}. Checked against chain.onnx, whose weights are exact "
        "copies of the source model's."
    )
    return model


def deploy_model(
    normalised: onnx.ModelProto,
    points: list[ScorePoint],
    multipliers: dict[str, np.ndarray],
    block: int = BLOCK,
) -> onnx.ModelProto:
    """The padded, score-folded chain of `multipliers`, in the normalised model's form."""
    scored = scored_model(normalised, points, multipliers)
    layers = {point.layer: point.channels for point in points}
    carried: dict[str, np.ndarray] = {}
    for _ in range(ROUNDS if block > 1 else 1):
        result = shrink(scored, carried)
        present = present_units(result.model, result.slices, layers)
        padding = padding_filters(points, present, block)
        if not padding:
            break
        for point, units in padding.items():
            # The filter and its zero product both stay, so that the Conv keeps them.
            mask = carried.get(point.point, np.zeros(point.channels, bool))
            mask[present[point.layer]] = True
            mask[units] = True
            carried[point.point] = carried[point.scored] = mask
    return fold_scores(result.model)


def padding_filters(
    points: list[ScorePoint], present: dict[str, np.ndarray], block: int
) -> dict[ScorePoint, np.ndarray]:
    """Per layer whose computed filters are not whole blocks, the filters (by index) that
    round them up."""
    kept_by_width: dict[int, Counter] = {}
    for point in points:
        kept_by_width.setdefault(point.channels, Counter()).update(present[point.layer].tolist())
    padding = {}
    for point in points:
        kept = len(present[point.layer])
        wanted = min(-(-kept // block) * block, point.channels)
        if kept == 0 or wanted == kept:
            continue
        elsewhere = kept_by_width[point.channels]
        removed = np.setdiff1d(np.arange(point.channels), present[point.layer])
        # Channels other layers of this width compute first, then the lowest indices.
        order = sorted(removed.tolist(), key=lambda index: (-elsewhere[index], index))
        padding[point] = np.asarray(order[: wanted - kept], np.int64)
    return padding


def fold_scores(chain: onnx.ModelProto) -> onnx.ModelProto:
    """The chain with each score Mul folded into the Conv (or BatchNormalization) before it."""
    result = onnx.ModelProto()
    result.CopyFrom(chain)
    graph = result.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output}
    readers = Counter(name for node in graph.node for name in node.input)
    folded = []
    for mul in graph.node:
        if not mul.name.startswith(SCORE_PREFIX) or mul.input[1] not in initializers:
            continue
        node = producer.get(mul.input[0])
        if node is None or readers[mul.input[0]] != 1 or not _foldable(node, initializers):
            continue
        scale = numpy_helper.to_array(initializers[mul.input[1]]).reshape(-1)
        for position in (1, 2):  # weight and bias, or a BatchNormalization's scale and shift
            if len(node.input) > position and node.input[position]:
                value = numpy_helper.to_array(initializers[node.input[position]])
                shape = (-1,) + (1,) * (value.ndim - 1)
                scaled = (value * scale.reshape(shape)).astype(value.dtype)
                name = f"{node.name}:{position}:scored"
                graph.initializer.append(numpy_helper.from_array(scaled, name))
                node.input[position] = name
        node.output[0] = mul.output[0]
        folded.append(mul)
    for mul in folded:
        graph.node.remove(mul)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return result


def _foldable(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """A Conv, or a BatchNormalization, whose per-filter constants are all initializers."""
    if node.op_type == "Conv":
        return all(name in initializers for name in node.input[1:] if name)
    if node.op_type == "BatchNormalization":
        return all(name in initializers for name in node.input[1:3])
    return False


def check_deploy(
    deploy: onnx.ModelProto,
    chain: onnx.ModelProto,
    images: np.ndarray,
    expected: MaskedOutputs | None = None,
) -> Exactness:
    """The deploy file in onnxruntime with graph optimisations off: against the float64
    masked model where `expected` has it, to the chain's own rule (`check_exactness`);
    else against chain.onnx, max |Δ| ≤ DEPLOY_TOLERANCE · max |chain output| (float16:
    1e-2)."""
    output = run(session(deploy), images)
    float16 = bool(float16_form(chain))
    if expected is not None and expected.float64 is not None and not float16:
        return check_exactness(output, expected)
    tolerance = FLOAT16_TOLERANCE if float16 else DEPLOY_TOLERANCE
    return within(output, run(session(chain), images).astype(np.float64), tolerance)
