"""Filter importance for the baselines a chain is compared with, and their per-layer budget.

Each baseline ranks the units (filters, hidden neurons) of every scored layer and keeps the
top k, where k is the number the NeuroChains chain keeps in that layer. Kept units get
multiplier 1: the baselines prune, they learn nothing.

- random: a seeded random order.
- weight-l1: the L1 norm of the unit's weights (Li et al. 2017).
- activation: mean |activation| over the region, at the score point.
- taylor: first-order Taylor importance (Molchanov et al. 2017), |Σ_xy a·∂L/∂a| per image,
  averaged over the region, with L the cross-entropy to the original's top-1 classes.
- unscaled: NeuroChains' own selection with every multiplier 1 (an ablation: selection
  without the learned scores).
- relevance: LRP relevance at the score point, summed over the region (Yeom et al. 2021);
  in `chainx/scoring/relevance.py`.

Controls (issue 12): `shuffled_multipliers` gives NeuroChains' learnt values to random
filters of the same layer; `chainx/onnx/random_weights.py` re-draws the network's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx

from chainx.errors import ChainxError
from chainx.onnx.graph import GraphIndex, attributes
from chainx.onnx.runtime import session, tensor_batches, with_outputs
from chainx.onnx.score_points import ScorePoint

if TYPE_CHECKING:
    from chainx.scoring.model import ScoringModel

Importance = dict[str, np.ndarray]


def weight_l1(model: onnx.ModelProto, points: list[ScorePoint]) -> Importance:
    g = GraphIndex.build(model)
    nodes = {node.name: node for node in g.nodes}
    result = {}
    for point in points:
        node = nodes[point.layer]
        if point.kind == "head":
            result[point.layer] = _head_output_l1(g, point)
            continue
        weight = np.abs(g.constants[node.input[1]].astype(np.float64))
        if node.op_type == "Conv":
            per_unit = weight.reshape(weight.shape[0], -1).sum(1)
        elif node.op_type == "Gemm" and attributes(node).get("transB", 0):
            per_unit = weight.sum(1)
        else:  # Gemm without transB, MatMul: (in, out)
            per_unit = weight.sum(0)
        result[point.layer] = per_unit
    return result


def mean_activation(
    model: onnx.ModelProto, points: list[ScorePoint], images: np.ndarray
) -> Importance:
    """Mean |activation| per unit at each score point, run in onnxruntime."""
    names = [p.point for p in points]
    sess = session(with_outputs(model, names))
    sums = {p.point: np.zeros(p.channels) for p in points}
    counts = {p.point: 0 for p in points}
    for values in tensor_batches(sess, images, names, batch_size=1):
        for point in points:
            value = np.abs(values[point.point].astype(np.float64))
            per_unit = np.moveaxis(value, point.axis, 0).reshape(point.channels, -1)
            sums[point.point] += per_unit.sum(1)
            counts[point.point] += per_unit.shape[1]
    return {p.layer: sums[p.point] / max(counts[p.point], 1) for p in points}


def taylor(scoring: ScoringModel, images: np.ndarray, kind: str) -> Importance:
    """|Σ_xy a·∂L/∂a| per image, as the gradient of per-image multipliers at 1."""
    import torch

    from chainx.scoring.model import log_probabilities, padded_batches, quiet_list_indexing

    scoring.to("cpu")
    total = {p.layer: np.zeros(p.channels) for p in scoring.points}
    step = scoring.fixed_batch or 16
    for start in range(0, len(images), step):
        piece = torch.from_numpy(images[start : start + step])
        count = len(piece)  # a fixed batch is filled with copies, which do not count
        (batch,) = padded_batches(piece, step) if scoring.fixed_batch else (piece,)
        with torch.no_grad():
            target = scoring.unscored(batch).reshape(len(batch), -1).argmax(-1)
        multipliers = [
            torch.ones(len(batch), *p.shape[1:], requires_grad=True) for p in scoring.points
        ]
        with quiet_list_indexing():
            output = scoring.net(batch, *multipliers)
        loss = torch.nn.functional.nll_loss(
            log_probabilities(output.reshape(len(batch), -1), kind), target, reduction="sum"
        )
        grads = torch.autograd.grad(loss, multipliers)
        for point, grad in zip(scoring.points, grads, strict=True):
            per_image = grad.reshape(len(batch), -1)[:count]
            total[point.layer] += per_image.abs().sum(0).double().numpy()
    return {layer: value / len(images) for layer, value in total.items()}


def _head_output_l1(g: GraphIndex, point: ScorePoint) -> np.ndarray:
    """A head has no weight at its score point: the L1 norm of its columns of the output
    projection (the Transpose and Reshape that merge the heads lead there)."""
    name = point.point
    for _ in range(len(g.nodes)):
        readers = g.consumers.get(name, [])
        if len(readers) != 1:
            break
        node = readers[0]
        if node.op_type in {"MatMul", "Gemm"} and node.input[1] in g.constants:
            weight = np.abs(g.constants[node.input[1]].astype(np.float64))
            transposed = node.op_type == "Gemm" and attributes(node).get("transB", 0)
            per_feature = weight.sum(0) if transposed else weight.sum(1)
            return per_feature.reshape(point.channels, -1).sum(1)
        if node.op_type not in {"Transpose", "Reshape"}:
            break
        name = node.output[0]
    return np.ones(point.channels)  # no output projection found: every head alike


def random_order(points: list[ScorePoint], seed: int) -> Importance:
    rng = np.random.default_rng(seed)
    return {p.layer: rng.random(p.channels) for p in points}


def shuffled_multipliers(multipliers: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each layer's multipliers at a random permutation of its units: NeuroChains' per-layer
    counts and learnt values, given to randomly chosen filters (the within-layer shuffle of
    Frankle et al. 2021's sanity checks).

    Layers draw in sorted order, so the result depends on the seed alone.
    """
    rng = np.random.default_rng(seed)
    shuffled = {
        layer: rng.permutation(np.asarray(multipliers[layer])) for layer in sorted(multipliers)
    }
    return {layer: shuffled[layer] for layer in multipliers}


def keep_top(importance: Importance, budget: dict[str, int]) -> dict[str, np.ndarray]:
    """Multiplier 1 for the `budget[layer]` most important units of each layer, else 0.

    Ties go to the lower index, so a baseline is reproducible.
    """
    multipliers = {}
    for layer, count in budget.items():
        values = np.asarray(importance[layer], np.float64)
        if not np.isfinite(values).all():
            raise ChainxError(f"importance of layer {layer} is not finite")
        chosen = np.argsort(-values, kind="stable")[:count]
        mask = np.zeros(len(values), np.float32)
        mask[chosen] = 1.0
        multipliers[layer] = mask
    return multipliers


def baseline_multipliers(
    method: str,
    chain_multipliers: dict[str, np.ndarray],
    rank: Callable[[], Importance],
) -> dict[str, np.ndarray]:
    """The baseline's multipliers at the chain's per-layer budget; `rank` gives its ranking."""
    budget = {layer: int(np.count_nonzero(m)) for layer, m in chain_multipliers.items()}
    if method == "unscaled":
        return {layer: (m != 0).astype(np.float32) for layer, m in chain_multipliers.items()}
    return keep_top(rank(), budget)
