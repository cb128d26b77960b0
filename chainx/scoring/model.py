"""The torch scoring model: the frozen network with one multiplier per filter.

Each filter's multiplier is its score times its layer's sigmoid gate. The multipliers enter
the converted network as extra inputs, at the Mul nodes that `score_points` inserts, so the
torch model and the exported ONNX chain compute the very same graph.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import fx, nn

from chainx.errors import ChainxError, NodeFault
from chainx.onnx.graph import fixed_batch
from chainx.onnx.score_points import ScorePoint, scored_model
from chainx.scoring.memory import keep_freed_memory
from chainx.scoring.settings import MaskedOutputs


def log_probabilities(output: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "probabilities":
        return output.clamp_min(1e-12).log()
    if kind == "log-probabilities":
        return output
    return torch.log_softmax(output, dim=-1)


def convert(model: onnx.ModelProto) -> nn.Module:
    import onnx2torch  # imports torchvision: slow, so only where torch work starts

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = onnx2torch.convert(model)
    except Exception as exc:
        raise ChainxError(
            f"onnx2torch cannot convert the model ({type(exc).__name__}: {exc}). "
            "chainx needs every op of the model to be convertible to torch."
        ) from None
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module.eval()


def replace_modules(
    net: fx.GraphModule,
    onnx_type: str,
    replacement: Callable[[nn.Module, torch.Tensor], nn.Module | None],
) -> int:
    """Replace each onnx2torch module of class `onnx_type` whose second input is an
    initializer by `replacement(module, initializer)`, where that is not None; returns how
    many."""
    replaced = 0
    for node in net.graph.nodes:
        if node.op != "call_module" or len(node.args) != 2:
            continue
        module = net.get_submodule(node.target)
        constant = node.args[1]
        if type(module).__name__ != onnx_type or getattr(constant, "op", None) != "get_attr":
            continue
        new = replacement(module, net.get_buffer(constant.target))
        if new is not None:
            net.set_submodule(node.target, new)
            replaced += 1
    return replaced


@dataclass
class ReducedNetwork:
    """The network shrunk to a mask (`scoring.reduced`) and, per score point, the filters
    its multiplier input carries (original indices, in the input's order), or None where
    the layer is gone."""

    net: nn.Module
    layouts: list[torch.Tensor | None]
    shapes: list[list[int]]

    def inputs(self, multipliers: list[torch.Tensor]) -> list[torch.Tensor]:
        """The shrunk network's multiplier inputs, from every filter's multiplier."""
        return [
            values[layout].reshape(shape)
            for values, layout, shape in zip(multipliers, self.layouts, self.shapes, strict=True)
            if layout is not None
        ]


def float64_network(net: nn.Module) -> nn.Module:
    """A float64 copy of an onnx2torch network: weights, buffers and casts to float32."""
    twin = copy.deepcopy(net).double()
    for module in twin.modules():
        if getattr(module, "torch_dtype", None) == torch.float32:  # onnx2torch's Cast
            module.torch_dtype = torch.float64
    return twin


@contextmanager
def quiet_list_indexing() -> Iterator[None]:
    """onnx2torch's Slice indexes with a list; torch warns about it on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using a non-tuple", category=UserWarning)
        yield


def padded_batches(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`x` in batches of a model's fixed batch `size`, the last padded with copies of its
    last image: the caller keeps the first len(x) outputs."""
    missing = -len(x) % size
    if missing:
        x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
    return list(torch.split(x, size))


def failing_node(
    net: nn.Module, x: torch.Tensor, shaped: list[torch.Tensor]
) -> tuple[str, str] | None:
    """Rerun `net` (an onnx2torch graph, whose modules are named after the ONNX nodes) one
    node at a time: the (node, op type) that raises, or None where nothing does."""
    graph = getattr(net, "_orig_mod", net)  # under torch.compile, the eager module
    if not isinstance(graph, fx.GraphModule):
        return None
    current: list[fx.Node] = []

    class Tracker(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            current[:] = [n]
            return super().run_node(n)

    try:
        with torch.no_grad():
            Tracker(graph).run(x, *shaped)
    except Exception:  # noqa: BLE001 - any failure: the node it happened at is the answer
        node = current[0] if current else None
        if node is None or node.op != "call_module":
            return None
        op = type(graph.get_submodule(node.target)).__name__.removeprefix("Onnx")
        return str(node.target), op
    return None


class ScoringModel(nn.Module):
    """The original network, frozen, with learnable per-filter scores and per-layer gates."""

    def __init__(
        self, model: onnx.ModelProto, points: list[ScorePoint], gate_init: float = 3.0
    ) -> None:
        super().__init__()
        keep_freed_memory()  # before the first large tensor
        self.source = model
        self.points = points
        self.net = convert(scored_model(model, points))
        for buffer in self.net.buffers():
            buffer.requires_grad_(False)
        self.gate_init = gate_init
        self.scores = nn.ParameterList(
            [nn.Parameter(torch.full((point.channels,), self.unit_score)) for point in points]
        )
        self.gates = nn.Parameter(torch.full((len(points),), gate_init))
        self.masks = [torch.ones(point.channels, dtype=torch.bool) for point in points]
        self.channels = [point.channels for point in points]
        # Each filter's layer, to compute every multiplier in one pass: a handful of kernel
        # launches a step instead of several per layer, which bound the step on a GPU.
        layer_of_filter = torch.arange(len(points)).repeat_interleave(torch.tensor(self.channels))
        self.register_buffer("layer_of_filter", layer_of_filter, persistent=False)
        self.fixed_batch = fixed_batch(model)
        self.compiled: nn.Module | None = None  # `use_compiled`: the scored steps' network
        self.net64: nn.Module | None = None  # `masked64`: `net` in float64, made once
        self.reduced: ReducedNetwork | None = None  # `use_reduced`: takes over from both

    @property
    def unit_score(self) -> float:
        """The score whose multiplier, at the initial gate, is 1 (to float32's rounding).

        Why: the optimisation starts from the original network. At scores of 1 every layer
        was scaled by sigmoid(gate_init) = 0.95, which a deep network without normalisation
        compounds: EfficientNet-Lite0's 49 layers started at a KL of 0.97 from the original,
        and the KL guard held the L1 off for steps 11–76 of 300 (docs/method.md)."""
        return 1.0 / float(torch.sigmoid(torch.tensor(self.gate_init)))

    def learnt(self) -> list[torch.Tensor]:
        """What the optimiser moves: each layer's scores and the gates (the network's own
        weights stay frozen)."""
        return [*self.scores, self.gates]

    def use_compiled(self, compiled: nn.Module | None) -> None:
        """Run the scored steps (`forward`) through `compiled`, `net` compiled
        (`compiled.compiled_network`), from now on, or eagerly again with None; the outputs
        for fixed multipliers (`masked`, `unscored`) stay eager."""
        # Not a submodule: it wraps `net`, whose parameters must not be listed twice.
        object.__setattr__(self, "compiled", compiled)

    def use_reduced(self, reduced: ReducedNetwork | None) -> None:
        """Run the scored steps through `reduced` (`scoring.reduced`), the network shrunk
        to the current masks, until None restores the whole one."""
        object.__setattr__(self, "reduced", reduced)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's own signature)
        # The masks are plain tensors, reassigned whole by the optimiser, so not buffers:
        # `.to(device)` must move them with the scores all the same.
        super()._apply(fn, recurse)
        self.masks = [fn(mask) for mask in self.masks]
        return self

    def multipliers(self) -> list[torch.Tensor]:
        """Per layer, score × the layer's gate × mask: the same products as one per layer."""
        scores = torch.cat(list(self.scores))
        gates = torch.sigmoid(self.gates)[self.layer_of_filter]
        masks = torch.cat(self.masks).to(scores.dtype)
        return list(torch.split(scores * gates * masks, self.channels))

    def run(
        self, x: torch.Tensor, multipliers: list[torch.Tensor], net: nn.Module | None = None
    ) -> torch.Tensor:
        shaped = [m.reshape(point.shape) for m, point in zip(multipliers, self.points, strict=True)]
        return self._call(self.net if net is None else net, x, shaped)

    def _call(self, net: nn.Module, x: torch.Tensor, shaped: list[torch.Tensor]) -> torch.Tensor:
        with quiet_list_indexing():
            if self.fixed_batch and len(x) != self.fixed_batch:
                pieces = padded_batches(x, self.fixed_batch)
                return torch.cat([self._net(net, piece, shaped) for piece in pieces])[: len(x)]
            return self._net(net, x, shaped)

    @staticmethod
    def _net(net: nn.Module, x: torch.Tensor, shaped: list[torch.Tensor]) -> torch.Tensor:
        try:
            return net(x, *shaped)
        except RuntimeError as exc:
            where = failing_node(net, x, shaped)
            if where is None:
                raise
            raise NodeFault(*where, exc) from exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduced is not None:
            return self.shrunk_run(self.reduced, x, self.multipliers())
        return self.run(x, self.multipliers(), self.compiled)

    def shrunk_run(
        self, reduced: ReducedNetwork, x: torch.Tensor, multipliers: list[torch.Tensor]
    ) -> torch.Tensor:
        """The output of `reduced`, the network shrunk to a mask, for every filter's
        multipliers (those it lacks must be 0)."""
        return self._call(reduced.net, x, reduced.inputs(multipliers))

    def masked(self, images: np.ndarray, multipliers: dict[str, np.ndarray]) -> np.ndarray:
        """The output for fixed multipliers, on the CPU: what chain.onnx must reproduce."""
        self.to("cpu")
        values = [
            torch.from_numpy(np.asarray(multipliers[p.layer], np.float32)) for p in self.points
        ]
        with torch.no_grad():
            return self.run(torch.from_numpy(images), values).numpy()

    def masked64(self, images: np.ndarray, multipliers: dict[str, np.ndarray]) -> np.ndarray:
        """`masked` computed in float64 from the same weights (each float32 weight is exactly
        a float64 one): the reference free of float32's rounding that a chain's error and
        `masked`'s own are measured against."""
        self.to("cpu")
        if self.net64 is None:
            # Not a submodule: its parameters are not the scores' model's.
            object.__setattr__(self, "net64", float64_network(self.net))
        values = [
            torch.from_numpy(np.asarray(multipliers[p.layer], np.float64)) for p in self.points
        ]
        with torch.no_grad():
            x = torch.from_numpy(images.astype(np.float64))
            return self.run(x, values, self.net64).numpy()

    def unscored(self, x: torch.Tensor) -> torch.Tensor:
        """The original network's output: every multiplier is exactly 1."""
        ones = [torch.ones(point.channels, device=x.device) for point in self.points]
        return self.run(x, ones)


def masked_outputs(
    scoring: ScoringModel, images: np.ndarray, multipliers: dict[str, np.ndarray]
) -> MaskedOutputs:
    """What a chain of `multipliers` must reproduce: the masked scoring model's output in
    float32 and, where its graph runs in float64, in float64 (`chain.exactness`)."""
    float32 = scoring.masked(images, multipliers)
    try:
        float64 = scoring.masked64(images, multipliers)
    except (RuntimeError, NodeFault):  # an op without a float64 kernel: the old rule
        float64 = None
    return MaskedOutputs(float32, float64)
