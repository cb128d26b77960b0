"""Fine-tuning on the kept channels only: the scored network, shrunk to its mask.

Why: once the mask is fixed, a fine-tuning step of the whole network computes every removed
filter only to multiply it by zero, and at a 5 % budget that is most of the step. The
channel surgery that cuts the chain (`channels.surgery.shrink`) cuts the scored network
here too, with every masked-in filter and its score product carried whatever its value, so
that no kept filter is folded into a constant: each keeps its multiplier as an input, and
the shrunk network computes the masked one's outputs and gradients, its sums in another
order. Removed filters get no gradient either way, as under the full network's mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import fx, nn

from chainx.channels.surgery import shrink
from chainx.onnx.score_points import ScorePoint, score_muls, scored_model
from chainx.scoring.model import ReducedNetwork, ScoringModel, convert, replace_modules

# Shrink only where the mask removes at least this share of the filters: the surgery and
# the conversion cost about as much as a few steps of the whole network.
REDUCE_FROM_REMOVED = 0.5


class ChannelSelect(nn.Module):
    """onnx2torch's Gather of constant indices along one axis, as `index_select`.

    Why: onnx2torch gathers by advanced indexing, whose gradient is an accumulating
    `index_put`, and the shrunk network gathers wherever two layers meet with different
    channels; on Lite0 those gradients took a third of a fine-tuning step.
    """

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, self.axis, indices)


def select_gathers(net: fx.GraphModule) -> int:
    """Replace each Gather of a constant, non-negative 1-D index by a ChannelSelect;
    returns how many."""

    def select(gather: nn.Module, indices: torch.Tensor) -> nn.Module | None:
        if indices.dim() != 1 or bool((indices < 0).any()):
            return None
        return ChannelSelect(gather._axis)  # noqa: SLF001

    return replace_modules(net, "OnnxGather", select)


def _input_shape(point: ScorePoint, count: int) -> list[int]:
    """A multiplier input's shape in the shrunk network: `count` of the point's units."""
    shape = point.shape
    shape[point.axis] = count
    return shape


def worth_reducing(kept_share: float) -> bool:
    """Whether a mask keeping this share of the filters is worth shrinking the network to."""
    return kept_share <= 1 - REDUCE_FROM_REMOVED


def reduced_model(
    source: onnx.ModelProto, points: list[ScorePoint], masks: list[np.ndarray]
) -> tuple[onnx.ModelProto, list[np.ndarray | None]]:
    """The scored model shrunk to `masks`, each remaining score Mul reading a graph input
    (after the image, in the order of `points`), and the filters each input carries."""
    # Every kept filter's constant multiplier is its index + 1: nonzero, and after the
    # surgery's slicing it says which filter each remaining channel is.
    labels = {
        point.layer: np.where(mask, np.arange(1, point.channels + 1), 0).astype(np.float32)
        for point, mask in zip(points, masks, strict=True)
    }
    carried = {}
    for point, mask in zip(points, masks, strict=True):
        carried[point.point] = carried[point.scored] = np.asarray(mask, bool)
    model = shrink(scored_model(source, points, labels), carried).model
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    muls = score_muls(model)
    layouts: list[np.ndarray | None] = []
    for point in points:
        mul = muls.get(point.layer)
        if mul is None:
            layouts.append(None)
            continue
        label = initializers[mul.input[1]]
        graph.initializer.remove(label)
        values = numpy_helper.to_array(label)
        layouts.append(values.reshape(-1).astype(np.int64) - 1)
        mul.input[1] = point.multiplier
        shape = _input_shape(point, values.size)
        graph.input.append(
            helper.make_tensor_value_info(point.multiplier, onnx.TensorProto.FLOAT, shape)
        )
    # onnx2torch reads some ops' sizes (LayerNorm's) from the shapes inferred.
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True), layouts


def reduce(
    source: onnx.ModelProto, points: list[ScorePoint], masks: list[torch.Tensor]
) -> ReducedNetwork:
    device = masks[0].device
    model, layouts = reduced_model(source, points, [m.cpu().numpy() for m in masks])
    shapes = [
        _input_shape(point, 0 if layout is None else len(layout))
        for point, layout in zip(points, layouts, strict=True)
    ]
    net = convert(model)
    select_gathers(net)
    return ReducedNetwork(
        net=net.to(device),
        layouts=[None if lay is None else torch.from_numpy(lay).to(device) for lay in layouts],
        shapes=shapes,
    )


@contextmanager
def shrunk_to_masks(scoring: ScoringModel) -> Iterator[bool]:
    """Within: the scored steps run on the network shrunk to the scoring model's masks,
    where the masks remove enough (`worth_reducing`). Yields whether they do."""
    kept = sum(int(mask.sum()) for mask in scoring.masks)
    reduced = None
    if worth_reducing(kept / sum(scoring.channels)):
        try:
            reduced = reduce(scoring.source, scoring.points, scoring.masks)
        except Exception:  # noqa: BLE001
            # A graph the shrinking or its conversion cannot take: the whole network gives
            # the same fine-tuning, only slower (the zoo checks every family shrinks).
            reduced = None
    if reduced is not None and all(layout is None for layout in reduced.layouts):
        # No kept filter reaches the outputs: nothing to fine-tune, and the shrunk network
        # has no multiplier to take a gradient from.
        reduced = None
    scoring.use_reduced(reduced)
    try:
        yield reduced is not None
    finally:
        scoring.use_reduced(None)
