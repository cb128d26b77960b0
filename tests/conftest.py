"""Tiny real models, built here in torch and exported to ONNX, for the surgery tests."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image
from torch import nn

from chainx.channels.surgery import SurgeryResult, shrink
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import ScorePoint, find_score_points, scored_model
from tools.torch_export import randomise_batchnorm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLE_MODEL = REPO / "sample_models" / "mnist_resnet.onnx"
SAMPLE_REGION = REPO / "sample_models" / "mnist_region"
SAMPLE_HOLDOUT = REPO / "sample_models" / "mnist_holdout"


def export(
    module: nn.Module,
    shape: tuple[int, ...],
    fold: bool = True,
    opset: int = 17,
    dynamo: bool = False,
) -> onnx.ModelProto:
    """Export a module the way users' models arrive: TorchScript (dynamic batch) or dynamo."""
    torch.manual_seed(0)
    module.eval()
    randomise_batchnorm(module)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                module,
                (torch.randn(*((2,) + shape[1:])),),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                input_names=["input"],
                output_names=["logits"],
                verbose=False,
            )
            return program.model_proto
        torch.onnx.export(
            module,
            torch.randn(*shape),
            buffer,
            dynamo=False,
            opset_version=opset,
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


class Inception(nn.Module):
    """Two branches concatenated on the channel axis, then a Conv that reads both."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch1 = nn.Conv2d(8, 6, 1)
        self.branch3 = nn.Conv2d(8, 10, 3, padding=1)
        self.mix = nn.Conv2d(16, 12, 3, padding=1)
        self.fc = nn.Linear(12 + 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        joined = torch.cat([F.relu(self.branch1(x)), F.relu(self.branch3(x))], 1)
        y = torch.cat([F.relu(self.mix(joined)), joined], 1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Grouped(nn.Module):
    """A ResNeXt-like grouped 3×3 between two 1×1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 24, 3, padding=1, groups=4)
        self.project = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.grouped(F.relu(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.project(x), 1), 1))


class PreActivation(nn.Module):
    """DenseNet-like BN-ReLU-Conv: removed filters reach consumers as BN constants.

    The 1×1 conv can fold them into its bias; the padded 3×3 conv must carry them; the
    final BN-ReLU reaches the Gemm, which folds them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(12)
        self.pointwise = nn.Conv2d(12, 8, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(12)
        self.spatial = nn.Conv2d(12, 8, 3, padding=1, bias=False)
        self.norm3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a = self.pointwise(F.relu(self.norm1(x)))
        b = self.spatial(F.relu(self.norm2(x)))
        y = F.relu(self.norm3(torch.cat([a, b], 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class SqueezeExcite(nn.Module):
    """x · Sigmoid(FC(GAP(x))): the gate branch reads the channels it scales."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.reduce = nn.Conv2d(12, 4, 1)
        self.expand = nn.Conv2d(4, 12, 1)
        self.head = nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = F.relu(self.head(x * gate))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvClassifier(nn.Module):
    """SqueezeNet's head: the last 1×1 conv has one channel per class; it is not scored."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.classifier = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.classifier(F.relu(self.stem(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: chunk in two, one half through convs, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.branch = nn.Conv2d(6, 6, 1)
        self.depthwise = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.head = nn.Conv2d(12, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        kept, worked = x.chunk(2, dim=1)
        x = torch.cat([kept, F.relu(self.depthwise(F.relu(self.branch(worked))))], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(self.head(x)), 1), 1))


class Upsampling(nn.Module):
    """A decoder step: upsample a coarse map and add it to a fine one (FPN-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.fine = nn.Conv2d(3, 8, 3, padding=1)
        self.coarse = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = F.relu(self.fine(x))
        coarse = F.interpolate(F.relu(self.coarse(fine)), scale_factor=2.0, mode="nearest")
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(fine + coarse, 1), 1))


class MlpHead(nn.Module):
    """VGG's head: a spatial map flattened into hidden fully connected layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.hidden = nn.Linear(6 * 2 * 2, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2), 1)
        return self.fc(F.dropout(F.relu(self.hidden(x)), training=self.training))


MODELS = {
    "plain": (Plain, {}, (1, 3, 8, 8)),
    "identity": (Residual, {"shortcut": "identity"}, (1, 3, 8, 8)),
    "projection": (Residual, {"shortcut": "projection"}, (1, 3, 8, 8)),
    "option-a": (Residual, {"shortcut": "option-a"}, (1, 3, 8, 8)),
    "depthwise": (Depthwise, {}, (1, 3, 8, 8)),
    "inception": (Inception, {}, (1, 3, 8, 8)),
    "grouped": (Grouped, {}, (1, 3, 8, 8)),
    "pre-activation": (PreActivation, {}, (1, 3, 8, 8)),
    "squeeze-excite": (SqueezeExcite, {}, (1, 3, 8, 8)),
    "conv-classifier": (ConvClassifier, {}, (1, 3, 8, 8)),
    "shuffle-split": (ShuffleUnit, {}, (1, 3, 8, 8)),
    "upsampling": (Upsampling, {}, (1, 3, 8, 8)),
    "mlp-head": (MlpHead, {}, (1, 3, 8, 8)),
}


def tiny_model(
    name: str, fold: bool = False, opset: int = 17, dynamo: bool = False
) -> onnx.ModelProto:
    cls, kwargs, shape = MODELS[name]
    torch.manual_seed(0)
    return normalise(export(cls(**kwargs), shape, fold=fold, opset=opset, dynamo=dynamo))


def unreadable_images(data: Path) -> Path:
    """A labelled folder (classes 3 and 8, six files each) of which no image can be read."""
    for label in ("3", "8"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            (data / label / f"{i}.png").write_bytes(b"not a png")
    return data


def model_with_weights(text: str, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    """An ONNX-text model with random float32 initializers (variances positive)."""
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        value = (
            rng.uniform(0.5, 1.5, shape) if name.startswith("var") else rng.standard_normal(shape)
        )
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    return model


def random_multipliers(
    points: list[ScorePoint], keep: float, seed: int = 0
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        p.layer: (rng.uniform(0.2, 1.5, p.channels) * (rng.random(p.channels) < keep)).astype(
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def assert_report_images_ok(report: Path) -> int:
    """Every inline image of report.html decodes, is finite and is not blank; returns count."""
    page = report.read_text(encoding="utf-8")
    images = re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", page)
    for encoded in images:
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), np.float64)
        assert np.isfinite(pixels).all() and pixels.std() > 0.5
    return len(images)


def assert_report_renders(report: Path, screenshot: Path) -> None:
    """A real headless Chromium: every image decodes, no console message, a non-blank page."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    url = report.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--enable-logging=stderr", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 'data-images="ok"' in dom.stdout  # the page's own check: every image decoded
    # Chromium logs every console message (errors too) as a CONSOLE line; the page has none.
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={screenshot}", url],
        capture_output=True,
        timeout=300,
        check=True,
    )
    pixels = np.asarray(Image.open(screenshot).convert("L"), np.float64)
    assert pixels.std() > 10  # not a blank page


@pytest.fixture(scope="session")
def sample_model() -> Path:
    return SAMPLE_MODEL
