"""Export torchvision and timm architectures, mask ~90% of their filters, check the surgery.

Each model, with random weights and random BatchNorm statistics, is exported by torch's
TorchScript exporter or its dynamo exporter, normalised, scored with a random mask and
shrunk; onnxruntime's output of the chain is compared with the masked torch scoring model
(onnx2torch), as `chainx verify` does. `tests/test_zoo.py` asserts on the
results; run this file to print the table for docs/zoo.md:

    .venv/bin/python tools/zoo.py [--exporter torchscript dynamo] [--models resnet18 ...]
    .venv/bin/python tools/zoo.py --models keras/MobileNetV2 ...   # tf2onnx, needs .venv-tf
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torchvision
from PIL import Image
from torch import nn

from chainx.channels.analysis import analyse_channels
from chainx.channels.surgery import SurgeryResult, present_units, shrink
from chainx.onnx.graph import GraphIndex, fixed_batch
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import ScorePoint, find_score_points, scored_model
from chainx.scoring.model import ScoringModel
from chainx.scoring.reduced import reduce

if __package__:  # imported as tools.zoo
    from tools.torch_export import randomise_batchnorm
else:  # run as a script: tools/ is first on sys.path
    from torch_export import randomise_batchnorm

# Architecture → input size. VGG's adaptive 7×7 pool needs a multiple of 7 at its input.
ZOO = {
    "vgg11_bn": 224,
    "resnet18": 64,
    "resnet50": 64,
    "resnext50_32x4d": 64,
    "mobilenet_v2": 64,
    "mobilenet_v3_small": 64,
    "efficientnet_b0": 64,
    "mnasnet0_5": 64,
    "densenet121": 64,
    "squeezenet1_1": 64,
    "googlenet": 64,
    "shufflenet_v2_x0_5": 64,
    "regnet_y_400mf": 64,
    "convnext_tiny": 64,
    # timm, random weights: ResNet-D, RegNetY (SE), MobileNetV3, EfficientNet, GhostNet and
    # RepVGG as trained (three branches per block) and reparameterised (one 3×3 conv).
    "timm/resnet18d": 64,
    "timm/regnety_002": 64,
    "timm/mobilenetv3_small_050": 64,
    "timm/efficientnet_b0": 64,
    "timm/ghostnet_050": 64,
    "timm/repvgg_a0": 64,
    "timm/repvgg_a0_reparameterised": 64,
    # Vision transformers at a small size (image 64, patch 8, 4 blocks, 4 heads), random
    # weights: torchvision's nn.MultiheadAttention, timm's packed qkv (ViT and DeiT).
    "vit_small": 64,
    "timm/vit_small": 64,
    "timm/deit_small": 64,
}
VIT = {"depth": 4, "heads": 4, "dim": 32, "mlp": 64}
REPARAMETERISED = "_reparameterised"
# Keras applications exported by tf2onnx (tools/export_keras.py, under a TensorFlow Python).
KERAS = {
    f"keras/{name}": 64
    for name in ("MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121", "NASNetMobile", "ViT")
}
TF2ONNX = "tf2onnx"
REPO = Path(__file__).resolve().parents[1]


def tf_python() -> Path | None:
    """A Python with tensorflow-cpu and tf2onnx: $CHAINX_TF_PYTHON, or setup.sh's .venv-tf."""
    chosen = os.environ.get("CHAINX_TF_PYTHON")
    path = Path(chosen) if chosen else REPO / ".venv-tf" / "bin" / "python"
    return path if path.exists() else None


def export_keras(name: str) -> onnx.ModelProto:
    """The Keras application `keras/<Name>`, exported in its own process (TensorFlow and
    torch in one process can crash)."""
    python = tf_python()
    if python is None:
        raise RuntimeError("no TensorFlow Python: run tools/setup.sh or set CHAINX_TF_PYTHON")
    with tempfile.TemporaryDirectory() as folder:
        arch = name.removeprefix("keras/")
        command = [str(python), str(REPO / "tools" / "export_keras.py"), "apps", "--out", folder]
        subprocess.run(command + ["--models", arch], check=True, capture_output=True)
        return onnx.load(str(Path(folder) / f"{arch}.onnx"))


EXPORTERS = ("torchscript", "dynamo")
KEEP = 0.1


def build_vit(name: str) -> nn.Module:
    if name == "vit_small":
        model = torchvision.models.VisionTransformer(
            image_size=64,
            patch_size=8,
            num_layers=VIT["depth"],
            num_heads=VIT["heads"],
            hidden_dim=VIT["dim"],
            mlp_dim=VIT["mlp"],
            num_classes=10,
        )
        nn.init.normal_(model.heads.head.weight)  # torchvision starts it at zero
        return model.eval()
    import timm

    arch = {"timm/vit_small": "vit_tiny_patch16_224", "timm/deit_small": "deit_tiny_patch16_224"}
    return timm.create_model(
        arch[name],
        pretrained=False,
        img_size=64,
        patch_size=8,
        depth=VIT["depth"],
        num_heads=VIT["heads"],
        embed_dim=VIT["dim"],
        mlp_ratio=VIT["mlp"] / VIT["dim"],
        num_classes=10,
    ).eval()


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.endswith("vit_small") or name.endswith("deit_small"):
        return build_vit(name)
    if name.startswith("timm/"):
        import timm
        import timm.utils

        arch = name.removeprefix("timm/").removesuffix(REPARAMETERISED)
        model = timm.create_model(arch, pretrained=False).eval()
        randomise_batchnorm(model)
        if name.endswith(REPARAMETERISED):
            model = timm.utils.reparameterize_model(model)
        return model
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    randomise_batchnorm(model)
    return model


# Held out of tuning the exactness rule (`chain.exactness`): torchvision families with
# trained-like weights, whose outputs are small beside their inner activations.
PERTURBED = ("mobilenet_v3_large", "shufflenet_v2_x1_0")


def perturbed(name: str, seed: int = 0) -> nn.Module:
    """A torchvision family at its random initialisation, every parameter + 0.02·N(0, 1),
    BatchNorm means from N(0, 0.1) and variances from U(0.5, 1.5)."""
    torch.manual_seed(seed)
    module = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter += 0.02 * torch.randn_like(parameter)
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.normal_(0, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    return module


def decisive(module: nn.Module, size: int) -> nn.Module:
    """Random weights answer with near ties (top-1 margins of 1 % of the logits' range),
    which any change of the scores flips: the classifier's bias for class 0 is raised by
    ten times that range, so that every image is class 0 by a wide margin."""
    last = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    with torch.no_grad():
        logits = module(torch.randn(4, 3, size, size))
        last.bias[0] += 10 * float(logits.max() - logits.min())
    return module


def export(
    name: str, exporter: str, wide_margin: bool = False, module: nn.Module | None = None
) -> onnx.ModelProto:
    """The family `name` with random weights (or `module`), through `exporter`; with
    `wide_margin`, every image is one class by a wide margin (`decisive`)."""
    if exporter == TF2ONNX:
        return export_keras(name)
    module = build(name) if module is None else module
    size = ZOO.get(name, 64)
    if wide_margin:
        decisive(module, size)
    x = torch.randn(1, 3, size, size)
    # Without gradients, nn.MultiheadAttention takes a fused kernel the TorchScript exporter
    # cannot write; with them it runs the ops it is made of.
    grad = name == "vit_small"
    with warnings.catch_warnings(), torch.set_grad_enabled(grad):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            program = torch.onnx.export(
                module, (x,), dynamo=True, input_names=["input"], output_names=["logits"]
            )
            return program.model_proto
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            x,
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def random_mask(
    model: onnx.ModelProto, points: list[ScorePoint], seed: int = 0, keep: float = KEEP
) -> dict[str, np.ndarray]:
    """Keep a fraction `keep` (10 %) of each layer's filters (at least one), and remove a
    few whole layers.

    A layer is removed whole only where the model still depends on its input without it (a
    residual branch, a concat input); the channel analysis tells.
    """
    rng = np.random.default_rng(seed)
    multipliers = {}
    for point in points:
        values = np.zeros(point.channels, np.float32)
        count = max(1, round(keep * point.channels))
        chosen = rng.choice(point.channels, count, replace=False)
        values[chosen] = rng.uniform(0.2, 1.5, count)
        multipliers[point.layer] = values
    for point in points[2::4][:4]:
        saved = multipliers[point.layer]
        multipliers[point.layer] = np.zeros_like(saved)
        states = analyse_channels(GraphIndex.build(scored_model(model, points, multipliers))).states
        if not states.need[states.g.input_name].any():
            multipliers[point.layer] = saved
    return multipliers


@dataclass
class ZooResult:
    name: str
    exporter: str
    ops: list[str]
    frozen: list[str]
    error: float
    # Against the masked model in float64: the chain's error and the float32 masked model's
    # own (its noise floor), relative to max |y|.
    error64: float
    noise64: float
    # The normalised model against the user's file in onnxruntime, at batch 1 and BATCH.
    batch_error: float
    reduced_error: float  # the fine-tuning's shrunk network (`scoring.reduced`) against the same
    scale: float
    masked: int
    removed: int
    layers_removed: int
    refilled: int
    params_before: int
    params_after: int
    seconds: float

    @property
    def removed_fraction(self) -> float:
        return self.removed / max(self.masked, 1)


def parameters(model: onnx.ModelProto) -> int:
    return int(sum(np.prod(init.dims) for init in model.graph.initializer))


def removed_filters(
    points: list[ScorePoint], multipliers: dict[str, np.ndarray], result: SurgeryResult
) -> int:
    """Masked units (filters, hidden neurons) that the chain does not compute."""
    present = present_units(result.model, result.slices, {p.layer: p.channels for p in points})
    removed = 0
    for point in points:
        masked = np.flatnonzero(multipliers[point.layer] == 0)
        removed += int((~np.isin(masked, present[point.layer])).sum())
    return removed


def reduced_output(
    scoring: ScoringModel, multipliers: dict[str, np.ndarray], x: np.ndarray
) -> np.ndarray:
    """The output of the scored network shrunk to the mask (`scoring.reduced`), as
    fine-tuning runs it, for the same multipliers."""
    values = [torch.from_numpy(multipliers[p.layer]) for p in scoring.points]
    reduced = reduce(scoring.source, scoring.points, [v != 0 for v in values])
    with torch.no_grad():
        return scoring.shrunk_run(reduced, torch.from_numpy(x), values).numpy()


BATCH = 3  # images at once for the normalised model's batch check


def batch_error(original: onnx.ModelProto, normalised: onnx.ModelProto, size: int) -> float:
    """max |Δ| / max |y| between the normalised model and the user's file, on one image and
    on BATCH at once (a file that fixes its batch runs its own batch at a time)."""
    images = np.random.default_rng(2).standard_normal((BATCH, 3, size, size)).astype(np.float32)
    errors = []
    for count in (1, BATCH):
        expected = run(session(original, cpu=True), images[:count])
        actual = run(session(normalised, cpu=True), images[:count], batch_size=count)
        errors.append(np.abs(expected - actual).max() / max(np.abs(expected).max(), 1e-12))
    return float(max(errors))


def check(name: str, exporter: str, seed: int = 0, keep: float = KEEP) -> ZooResult:
    started = time.perf_counter()
    original = export(name, exporter)
    model = normalise(original)
    points = find_score_points(model)
    multipliers = random_mask(model, points, seed, keep)
    scored = scored_model(model, points, multipliers)
    result = shrink(scored)
    onnx.checker.check_model(result.model, full_check=True)
    size = {**ZOO, **KERAS}[name]
    # The dynamo exporter writes the example's batch of 1 into the graph; where
    # normalisation could not free it, the model still fixes it.
    batch = fixed_batch(model) or 2
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size)).astype(np.float32)
    # The reference is the masked torch scoring model, as in `chainx verify`.
    scoring = ScoringModel(model, points)
    expected = scoring.masked(x, multipliers)
    actual = run(session(result.model), x)
    scale = float(np.abs(expected).max())
    error = float(np.abs(expected - actual).max() / max(scale, 1e-12))
    reference = scoring.masked64(x, multipliers)
    shrunk = reduced_output(scoring, multipliers, x)
    reduced_error = float(np.abs(expected - shrunk).max() / max(scale, 1e-12))
    return ZooResult(
        name=name,
        exporter=exporter,
        ops=sorted({node.op_type for node in model.graph.node}),
        frozen=sorted({op for _, op in result.frozen}),
        error=error,
        error64=float(np.abs(actual - reference).max() / max(scale, 1e-12)),
        noise64=float(np.abs(expected - reference).max() / max(scale, 1e-12)),
        batch_error=batch_error(original, model, size),
        reduced_error=reduced_error,
        scale=scale,
        masked=sum(int((m == 0).sum()) for m in multipliers.values()),
        removed=removed_filters(points, multipliers, result),
        layers_removed=sum(not m.any() for m in multipliers.values()),
        refilled=result.refilled,
        params_before=parameters(model),
        params_after=parameters(result.model),
        seconds=time.perf_counter() - started,
    )


# A full `chainx extract` of each family: every stage, at a small step count, on random
# images that the model gives one class by a wide margin (`decisive`); the frontier's cut
# at 10 % of the filters is exported and verified as well.
EXTRACT_IMAGES = 10
EXTRACT_OPTIONS = {
    "steps": 2,
    "finetune_steps": 1,
    "keep_ratio": 0.1,
    "filter_images": 0,
    "frontier": (0.5,),
}


@dataclass
class ExtractCheck:
    verified: bool
    frontier_verified: bool
    images: int
    seconds: float


def extract_check(
    model: onnx.ModelProto,
    size: int,
    folder: Path,
    images: int = EXTRACT_IMAGES,
    **options: object,
) -> ExtractCheck:
    """`chainx.extract` of `model` on `images` random images of `size` pixels."""
    import chainx

    started = time.perf_counter()
    path = folder / "model.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(3)
    for index in range(images):
        label = folder / "images" / "ab"[index % 2]
        label.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(label / f"{index}.png")
    result = chainx.extract(path, folder / "images", size=size, resize=size, seed=0, **options)
    return ExtractCheck(
        verified=result.verification.passed,
        frontier_verified=all(entry["verified"] for entry in result.frontier),
        images=result.verification.region.images,
        seconds=time.perf_counter() - started,
    )


def table(results: list[ZooResult]) -> str:
    lines = [
        "| model | exporter | ops met | frozen | max \\|Δ\\| / max \\|y\\| | masked filters "
        "physically removed | whole layers removed | removed channels re-created for frozen ops "
        "| parameters before → after | time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.exporter} | {', '.join(r.ops)} | {', '.join(r.frozen) or '—'} "
            f"| {r.error:.1e} | {r.removed}/{r.masked} ({100 * r.removed_fraction:.1f} %) "
            f"| {r.layers_removed} | {r.refilled} | {r.params_before:,} → {r.params_after:,} "
            f"| {r.seconds:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO) + list(KERAS))
    args = parser.parse_args()
    results = []
    for name in args.models:
        for exporter in [TF2ONNX] if name in KERAS else args.exporter:
            results.append(check(name, exporter))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
