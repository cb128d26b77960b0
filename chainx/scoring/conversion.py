"""Can the scores be trusted? onnx2torch must convert every op, and the converted model must
compute what onnxruntime computes on the region, before any long optimisation starts."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from chainx.errors import ChainxError
from chainx.onnx.runtime import run, session
from chainx.scoring.model import ScoringModel


def check_convertible(model: onnx.ModelProto) -> None:
    """Name every node onnx2torch has no converter for, all at once, before any long work."""
    from onnx2torch.node_converters.registry import get_converter

    version = next((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), 0)
    missing = []
    for node in model.graph.node:
        try:
            get_converter(node.op_type, version, node.domain or "")
        except NotImplementedError:
            missing.append(
                f"{node.name} ({node.domain + '.' if node.domain else ''}{node.op_type})"
            )
    if missing:
        raise ChainxError(
            f"{len(missing)} nodes use ops that chainx cannot run in torch (onnx2torch has no "
            f"converter for them at opset {version}): {', '.join(missing[:20])}"
            + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            + ". Export the model with standard ONNX ops."
        )


def check_conversion(
    scoring: ScoringModel, normalised: onnx.ModelProto, images: np.ndarray
) -> None:
    """The torch model must compute what onnxruntime computes, or the scores mean nothing."""
    with torch.no_grad():
        converted = scoring.unscored(torch.from_numpy(images)).numpy()
    reference = run(session(normalised), images)
    error = float(np.abs(converted.reshape(reference.shape) - reference).max())
    scale = max(float(np.abs(reference).max()), 1e-12)
    if error > 1e-3 * scale:
        ops = sorted({node.op_type for node in normalised.graph.node})
        raise ChainxError(
            f"onnx2torch's conversion of the model differs from onnxruntime by {error:.3g} "
            f"(max |output| {scale:.3g}) on the region images, so its scores could not be "
            f"trusted. The model uses: {', '.join(ops)}. Check for ops whose torch and ONNX "
            "semantics differ (e.g. Resize rounding)."
        )
