"""LRP relevance per filter (Bach et al. 2015), the pruning criterion of Yeom et al. 2021.

zennit's rules attach by module type, and onnx2torch's converted network has nn.Conv2d,
nn.Linear, nn.BatchNorm2d, nn.ReLU and AvgPool modules that they match. Three of its parts
are rewritten first, on a copy: a BatchNorm right after a Conv is merged into it (zennit's
canonical form; the forward stays the same), each Add of two tensors becomes zennit's
Sum of the stacked operands (its Norm rule splits the relevance in proportion to each
operand's contribution, where the plain gradient would copy it into both branches of a
residual), and a final Softmax or LogSoftmax is dropped, so that the logit is explained.
GlobalAveragePool gets the Norm rule, as AvgPool does; activations and a BatchNorm that
cannot be merged pass the relevance unchanged (zennit's Pass). Other modules (Reshape, the
score Muls at multiplier 1, Concat, Mul gates) pass it as a plain gradient.

zennit passes the relevance itself backwards in place of the gradient, so the relevance at
a score point is the gradient arriving at its Mul's output, read by a tensor hook.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from onnx2torch.node_converters.activations import OnnxSoftmaxV1V11
from onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
from onnx2torch.node_converters.global_average_pool import (
    OnnxGlobalAveragePool,
    OnnxGlobalAveragePoolWithKnownInputShape,
)
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from zennit.composites import EpsilonPlus, LayerMapComposite, layer_map_base
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Epsilon, Norm
from zennit.types import Convolution

from chainx.errors import ChainxError
from chainx.scoring.importance import Importance
from chainx.scoring.model import ScoringModel, padded_batches, quiet_list_indexing

# epsilon-plus: z+ on convolutions, ε on dense layers (zennit's EpsilonPlus), as in Yeom et
# al.; epsilon: ε everywhere, which conserves the relevance exactly where biases are zero.
RULES = ("epsilon-plus", "epsilon")
GLOBAL_POOLS = (OnnxGlobalAveragePool, OnnxGlobalAveragePoolWithKnownInputShape)
SOFTMAXES = (nn.Softmax, nn.LogSoftmax, OnnxSoftmaxV1V11)


class StackedSum(nn.Module):
    """An Add as zennit's Sum over its stacked operands, where zennit's Norm rule applies."""

    def __init__(self) -> None:
        super().__init__()
        self.sum = Sum()

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.sum(torch.stack(torch.broadcast_tensors(first, second), dim=-1))


def _module(net: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return net.get_submodule(node.target) if node.op == "call_module" else None


def _merge_batchnorms(net: fx.GraphModule) -> None:
    for node in list(net.graph.nodes):
        source = node.args[0] if node.args else None
        if not isinstance(_module(net, node), nn.BatchNorm2d) or not isinstance(source, fx.Node):
            continue
        conv = _module(net, source)
        if isinstance(conv, nn.Conv2d) and len(source.users) == 1:
            net.add_submodule(source.target, fuse_conv_bn_eval(conv, _module(net, node)))
            node.replace_all_uses_with(source)
            net.graph.erase_node(node)


def _sums_for_adds(net: fx.GraphModule) -> None:
    for node in net.graph.nodes:
        module = _module(net, node)
        if (
            isinstance(module, OnnxBinaryMathOperation)
            and module.math_op_function is torch.add
            and all(isinstance(arg, fx.Node) for arg in node.args)
        ):
            net.add_submodule(node.target, StackedSum())


def _drop_softmax(net: fx.GraphModule, kind: str) -> None:
    if kind == "logits":
        return
    output = next(node for node in net.graph.nodes if node.op == "output")
    last = output.args[0]
    if not isinstance(last, fx.Node) or not isinstance(_module(net, last), SOFTMAXES):
        raise ChainxError(
            f"the model outputs {kind} without a final Softmax or LogSoftmax to remove, so LRP "
            "has no logit to explain."
        )
    output.args = (last.args[0],)
    net.graph.erase_node(last)


def explainable(scoring: ScoringModel, kind: str) -> fx.GraphModule:
    """A copy of the scoring network, on the CPU, in the form zennit's rules apply to."""
    net = copy.deepcopy(scoring.net).cpu().float().eval()
    _merge_batchnorms(net)
    _sums_for_adds(net)
    _drop_softmax(net, kind)
    net.delete_all_unused_submodules()
    net.graph.lint()
    net.recompile()
    return net


def composite(rule: str) -> Composite:
    pools = [(GLOBAL_POOLS, Norm())]
    if rule == "epsilon-plus":
        return EpsilonPlus(layer_map=pools)
    if rule == "epsilon":
        return LayerMapComposite(
            pools + layer_map_base() + [(Convolution, Epsilon()), (nn.Linear, Epsilon())]
        )
    raise ChainxError(f"unknown LRP rule {rule!r}; the rules are {', '.join(RULES)}")


def relevance(
    scoring: ScoringModel, images: np.ndarray, kind: str, rule: str = "epsilon-plus"
) -> Importance:
    """Per filter, the LRP relevance at its score point, summed over pixels and `images`.

    Each image explains its original top-1 class, starting from that logit's value; the
    multipliers are 1. Under "epsilon-plus" (z+) a convolution hands down relevance of the
    sign it receives, so filters get negative relevance only from what the dense layers'
    ε rule hands down.
    """
    net = explainable(scoring, kind)
    placeholders = [node for node in net.graph.nodes if node.op == "placeholder"]
    taps: dict[int, torch.Tensor] = {}

    def tap(index: int) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def save(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            output.register_hook(lambda grad: taps.__setitem__(index, grad.detach()))

        return save

    # Multiplier i is placeholder i + 1, read by point i's Mul alone.
    for index, placeholder in enumerate(placeholders[1:]):
        (mul,) = placeholder.users
        _module(net, mul).register_forward_hook(tap(index))
    total = {p.layer: np.zeros(p.channels) for p in scoring.points}
    step = scoring.fixed_batch or 16
    with composite(rule).context(net) as hooked:
        for start in range(0, len(images), step):
            taps.clear()
            piece = torch.from_numpy(images[start : start + step])
            count = len(piece)
            # A fixed batch is filled with copies; they start with no relevance.
            (batch,) = padded_batches(piece, step) if scoring.fixed_batch else (piece,)
            batch.requires_grad_(True)
            ones = [torch.ones(p.shape) for p in scoring.points]
            with quiet_list_indexing():
                output = hooked(batch, *ones).reshape(len(batch), -1)
            top = output.argmax(-1, keepdim=True)
            start_relevance = torch.zeros_like(output).scatter(-1, top, output.gather(-1, top))
            start_relevance[count:] = 0
            torch.autograd.grad(output, batch, start_relevance.detach())
            for index, point in enumerate(scoring.points):
                if index in taps:  # else no relevance reaches the point
                    tap = torch.movedim(taps[index], point.axis, 1)
                    per_unit = tap.reshape(len(batch), point.channels, -1).sum((0, 2))
                    total[point.layer] += per_unit.double().numpy()
    return total
