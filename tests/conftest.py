"""Tiny real models, built here in torch and exported to ONNX, for the surgery tests."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chainx.model_io import normalise
from chainx.score_points import ScorePoint, find_score_points, scored_model
from chainx.surgery import SurgeryResult, shrink
from chainx.verify import run, session

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_MODEL = REPO / "sample_models" / "mnist_resnet.onnx"
SAMPLE_REGION = REPO / "sample_models" / "mnist_region"
SAMPLE_HOLDOUT = REPO / "sample_models" / "mnist_holdout"


def export(module: nn.Module, shape: tuple[int, ...], fold: bool = True) -> onnx.ModelProto:
    """Export a module the way users' models arrive: TorchScript exporter, dynamic batch."""
    torch.manual_seed(0)
    module.eval()
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.5, 0.5)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.randn(*shape),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=fold,
        )
    return onnx.load_from_string(buffer.getvalue())


class Plain(nn.Module):
    """conv-relu-conv-relu-pool-linear: a chain with no branches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Block(nn.Module):
    """A CIFAR BasicBlock: identity, projection or option-A (Slice + channel Pad) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = shortcut
        self.pad = (cout - cin) // 2
        if shortcut == "projection":
            self.proj = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.proj_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut == "projection":
            s = self.proj_bn(self.proj(x))
        elif self.shortcut == "option-a":
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            s = x
        return F.relu(y + s)


class Residual(nn.Module):
    def __init__(self, shortcut: str) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        width = 8 if shortcut == "identity" else 16
        self.block1 = Block(8, 8, 1, "identity")
        self.block2 = Block(8, width, 1 if shortcut == "identity" else 2, shortcut)
        self.fc = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Depthwise(nn.Module):
    """An MBConv-like block: expand 1×1, depthwise 3×3, project 1×1, residual; ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 24, 1)
        self.depthwise = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.project = nn.Conv2d(24, 8, 1)
        self.head = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.stem(x))
        y = F.relu6(self.depthwise(F.relu6(self.expand(x))))
        x = x + self.project(y)
        x = F.relu6(self.head(x))
        return self.fc(torch.flatten(F.avg_pool2d(x, 4), 1))


MODELS = {
    "plain": (Plain, {}, (1, 3, 8, 8)),
    "identity": (Residual, {"shortcut": "identity"}, (1, 3, 8, 8)),
    "projection": (Residual, {"shortcut": "projection"}, (1, 3, 8, 8)),
    "option-a": (Residual, {"shortcut": "option-a"}, (1, 3, 8, 8)),
    "depthwise": (Depthwise, {}, (1, 3, 8, 8)),
}


def tiny_model(name: str, fold: bool = False) -> onnx.ModelProto:
    cls, kwargs, shape = MODELS[name]
    torch.manual_seed(0)
    return normalise(export(cls(**kwargs), shape, fold=fold))


def random_multipliers(
    points: list[ScorePoint], keep: float, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        p.conv: (rng.uniform(0.2, 1.5, p.channels) * (rng.random(p.channels) < keep)).astype(
            np.float32
        )
        for p in points
    }


def inputs_for(model: onnx.ModelProto, count: int = 4, seed: int = 1) -> np.ndarray:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [count] + [d.dim_value for d in dims[1:]]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def shrink_and_compare(
    model: onnx.ModelProto, multipliers: dict[str, np.ndarray]
) -> tuple[SurgeryResult, float]:
    """Shrink the scored model; return the result and max |Δ| against the scored model."""
    scored = scored_model(model, find_score_points(model), multipliers)
    result = shrink(scored)
    onnx.checker.check_model(result.model, full_check=True)
    x = inputs_for(model)
    expected = run(session(scored), x)
    actual = run(session(result.model), x)
    return result, float(np.abs(expected - actual).max() / max(np.abs(expected).max(), 1e-12))


@pytest.fixture(scope="session")
def sample_model() -> Path:
    return SAMPLE_MODEL
