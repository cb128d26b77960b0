"""How the tools/ scripts export a torch classifier: TorchScript exporter, dynamic batch."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn


def export_classifier(
    model: nn.Module, input_shape: tuple[int, ...], out: Path | io.BytesIO
) -> None:
    """Export with input "input" and output "logits", batch axis dynamic, opset 17."""
    if isinstance(out, Path):
        out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(),
            (torch.zeros(*input_shape),),
            str(out) if isinstance(out, Path) else out,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def randomise_batchnorm(module: nn.Module) -> None:
    """Trained-like BatchNorm statistics, so that BN does not map zero to zero.

    Draws from torch's global generator, layer by layer in module order; callers seed it.
    """
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.5, 0.5)


def export_and_check(model: nn.Module, probe: torch.Tensor, path: Path) -> onnx.ModelProto:
    """Export, run the full checker, and compare onnxruntime with torch on `probe`."""
    export_classifier(model, (1, *probe.shape[1:]), path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"op types: {dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(probe).numpy()
    diff = float(np.abs(session.run(["logits"], {"input": probe.numpy()})[0] - expected).max())
    print(f"onnxruntime vs torch on {len(probe)} inputs: max abs diff {diff:.2e}")
    if diff >= 1e-4:
        raise SystemExit(f"onnxruntime and torch disagree: max abs diff {diff:.2e} >= 1e-4")
    return proto
