"""Turn final multipliers into chain.onnx: scored graph, surgery, provenance metadata."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
import onnx

from chainx.channels.emitter import WeightSlice
from chainx.channels.surgery import SurgeryResult, shrink
from chainx.onnx.passes.channels_last import with_channels_last_input
from chainx.onnx.passes.float16 import FLOAT16_INSIDE
from chainx.onnx.score_points import ScorePoint, scored_model
from chainx.version import __version__


def export_chain(
    normalised: onnx.ModelProto,
    points: list[ScorePoint],
    multipliers: dict[str, np.ndarray],
    provenance: dict[str, Any],
    float16: str | None = None,
    channels_last: bool = False,
) -> SurgeryResult:
    """The standalone chain; its metadata carries what verification needs to recheck it.

    The chain takes its source's form back: an NHWC input where the source read one
    (`channels_last`), and float16 (`float16`, the source's form from
    `passes.float16.float16_form`), its weights then the source's float16 values again.
    """
    result = shrink(scored_model(normalised, points, multipliers))
    result.model = source_form(result.model, float16, channels_last)
    sparse = {
        conv: {
            "total": int(len(values)),
            "index": np.flatnonzero(values).tolist(),
            "value": [float(v) for v in values[values != 0]],
        }
        for conv, values in multipliers.items()
    }
    metadata = {
        "chainx.version": __version__,
        "chainx.source_sha256": provenance["sha256"],
        "chainx.settings": json.dumps(provenance["settings"]),
        "chainx.multipliers": json.dumps(sparse),
        "chainx.slices": json.dumps([asdict(s) for s in result.slices]),
    }
    add_metadata(result.model, metadata)
    result.model.doc_string = (
        "Local inference chain extracted by chainx. Every Conv and Gemm weight is an exact "
        "slice of the source model's; the Mul nodes named chainx.score.<conv> multiply each "
        "kept filter by its score times its layer gate."
    )
    return result


def source_form(
    model: onnx.ModelProto, float16: str | None, channels_last: bool
) -> onnx.ModelProto:
    """A model built from the normalised one, in the source's form again."""
    if channels_last:
        model = with_channels_last_input(model)
    if float16 is not None:
        model = as_float16(model, keep_io_types=float16 == FLOAT16_INSIDE)
    return model


def chain_summary(
    multipliers: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    kinds: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Layers and units kept: those the chain physically computes. "Filters" counts units
    of every kind (filters, neurons, heads); with `kinds` (layer → ScorePoint.kind),
    `units` gives kept and total per kind.

    A filter with a non-zero score can still be gone: when its output is a constant (its
    inputs were all removed), that constant is folded exactly into its consumers' biases,
    and when nothing reads it, it is dead. Those are counted as `filters_folded`.
    """
    kept = sum(len(units) for units in present.values())
    total = sum(len(v) for v in multipliers.values())
    folded = sum(
        int(np.count_nonzero(np.delete(values, present[layer])))
        for layer, values in multipliers.items()
    )
    summary: dict[str, Any] = {
        "layers_kept": sum(len(units) > 0 for units in present.values()),
        "layers_total": len(multipliers),
        "filters_kept": kept,
        "filters_total": total,
        "filters_removed_fraction": 1 - kept / total,
        "filters_folded": folded,
    }
    if kinds:
        units: dict[str, dict[str, int]] = {}
        for layer, values in multipliers.items():
            entry = units.setdefault(kinds[layer], {"kept": 0, "total": 0})
            entry["kept"] += len(present[layer])
            entry["total"] += len(values)
        summary["units"] = units
    return summary


def add_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(chain: onnx.ModelProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in chain.metadata_props}


def multipliers_from_metadata(metadata: dict[str, str]) -> dict[str, np.ndarray]:
    sparse = json.loads(metadata["chainx.multipliers"])
    values = {}
    for conv, entry in sparse.items():
        dense = np.zeros(entry["total"], np.float32)
        dense[entry["index"]] = np.asarray(entry["value"], np.float32)
        values[conv] = dense
    return values


def slices_from_metadata(metadata: dict[str, str]) -> list[WeightSlice]:
    return [
        WeightSlice(s["node"], s["original"], tuple(s["axes"]))
        for s in json.loads(metadata["chainx.slices"])
    ]


def as_float16(model: onnx.ModelProto, keep_io_types: bool) -> onnx.ModelProto:
    """onnxconverter-common's conversion, with its clamps at float16's own limits, so that a
    weight that was float16 before normalisation comes back bit for bit (its defaults clamp
    to 1e-7 … 1e4)."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(
        model,
        min_positive_val=float(np.finfo(np.float16).smallest_subnormal),
        max_finite_val=float(np.finfo(np.float16).max),
        keep_io_types=keep_io_types,
    )
