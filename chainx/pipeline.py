"""The extract pipeline: ONNX in → scores → chain.onnx → verification → diagram and report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from chainx import __version__
from chainx.chain.export import chain_summary, export_chain
from chainx.chain.result import LayerGraph, LayerResult
from chainx.chain.verify import model_cost, verify_chain
from chainx.channels.surgery import present_units
from chainx.errors import ChainxError, VerificationError
from chainx.images import ImageSet, load_images, model_preprocessing
from chainx.onnx.graph import GraphIndex
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points
from chainx.outputs import OUTPUT_FILES, OutputStage, check_output_dir, write_atomic
from chainx.render.diagram import write_chain_diagram
from chainx.render.featuremaps import layer_activations, write_featuremaps
from chainx.render.layers import display_names, layer_edges
from chainx.render.paths import link_weights, strongest_paths
from chainx.render.report import Prediction, predictions, write_report
from chainx.scoring.settings import OptimiseSettings, StepReport


@dataclass
class ExtractOptions:
    model: Path
    images: Path
    out: Path
    holdout: Path | None = None
    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    force: bool = False
    strict: bool = False
    filter_images: int = 4
    class_names: Path | None = None
    input_name: str | None = None
    output_name: str | None = None
    optimise: OptimiseSettings = field(default_factory=OptimiseSettings)


@dataclass
class Listener:
    """How the pipeline talks to its caller (the CLI draws a progress bar from these)."""

    message: Callable[[str], None] = lambda text: None
    step: Callable[[StepReport], None] = lambda report: None


@dataclass
class ExtractReport:
    out: Path
    summary: dict[str, Any]
    files: dict[str, str]
    data: dict[str, Any]


def extract(options: ExtractOptions, listener: Listener | None = None) -> ExtractReport:
    from chainx.scoring.activation_max import write_filter_sheets  # torch loads here, not at import
    from chainx.scoring.model import ScoringModel, check_convertible, output_kind
    from chainx.scoring.optimise import optimise, resolve_device

    listener = listener or Listener()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    protected = [options.model, options.images] + ([options.holdout] if options.holdout else [])
    check_output_dir(options.out, options.force, protected)

    original = load_model(options.model)
    digest = sha256_file(options.model)
    normalised = normalise(original, options.input_name, options.output_name)
    check_convertible(normalised)
    prep = model_preprocessing(normalised, options.size, options.resize, options.mean, options.std)
    listener.message(f"preprocessing: {prep.describe()}")
    region = load_images(options.images, prep, options.strict)
    holdout = load_images(options.holdout, prep, options.strict) if options.holdout else None
    for name, images in (("region", region), ("holdout", holdout)):
        skipped = images.skipped.describe() if images else None
        if skipped:
            listener.message(f"{name}: {skipped}")
    kind = output_kind(normalised)
    points = find_score_points(normalised)
    listener.message(
        f"model: {len(points)} scored layers, {sum(p.channels for p in points):,} filters; "
        f"output treated as {kind}; region: {len(region.paths)} images"
        + (f"; holdout: {len(holdout.paths)} images" if holdout else "")
    )
    timings["load_s"] = time.perf_counter() - started

    settings = options.optimise
    settings.device = resolve_device(settings.device)
    scoring = ScoringModel(normalised, points)
    _check_conversion(scoring, normalised, region.array)
    result = optimise(scoring, region.array, kind, settings, listener.step)
    timings["optimise_s"] = result.seconds

    mark = time.perf_counter()
    settings_json = {
        **{k: v for k, v in asdict(settings).items()},
        "preprocessing": prep.to_json(),
        "output_kind": kind,
        "input": options.input_name,
        "output": options.output_name,
    }
    surgery = export_chain(
        normalised, points, result.multipliers, {"sha256": digest, "settings": settings_json}
    )
    chain = surgery.model
    onnx.checker.check_model(chain, full_check=True)
    timings["export_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    verification = verify_chain(
        chain,
        options.model,
        original,
        normalised,
        surgery.slices,
        scoring.masked(region.array, result.multipliers),
        region.array,
        holdout.array if holdout else None,
        kind,
    )
    timings["verify_s"] = time.perf_counter() - mark

    present = present_units(chain, surgery.slices, {p.layer: p.channels for p in points})
    layers = _layer_results(points, result.multipliers, result.gates, present)
    edges = layer_edges(GraphIndex.build(normalised), [p.layer for p in points])
    summary = chain_summary(result.multipliers, present)

    mark = time.perf_counter()
    names = {layer.node: layer.display for layer in layers}
    scored_units = {
        layer: units[result.multipliers[layer][units] != 0] for layer, units in present.items()
    }
    links = link_weights(chain, region.array, scored_units, edges)
    paths = strongest_paths(links, scored_units, [p.layer for p in points])
    if paths:
        listener.message(f"strongest inference path: {paths[0].describe(names)}")
    timings["paths_s"] = time.perf_counter() - mark

    out = options.out
    stage = OutputStage(out)
    try:
        chain_path = stage.path / "chain.onnx"
        write_atomic(chain_path, chain.SerializeToString())
        cost = {
            "original": asdict(model_cost(options.model, region.array[:1])),
            "chain": asdict(model_cost(chain_path, region.array[:1])),
        }
        title = f"{options.model.stem} · {options.images.name}"
        graph = LayerGraph(
            layers,
            edges,
            [path.describe(names) for path in paths],
            [layer for layer, _ in paths[0].filters] if paths else [],
        )
        write_chain_diagram(graph, title, stage.path)
        mark = time.perf_counter()
        activations = layer_activations(chain, region.array)
        featuremaps = write_featuremaps(
            activations, region.array, prep, names, stage.path / "featuremaps"
        )
        filter_sheets = {}
        if options.filter_images:
            targets = _top_filters(
                activations, scored_units, result.multipliers, options.filter_images
            )
            filter_sheets = write_filter_sheets(
                chain, targets, activations, region.array, prep, names, stage.path / "filters"
            )
        timings["visualise_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started
        files = {name: str(out / name) for name in OUTPUT_FILES}
        data = {
            "generator": "chainx",
            "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {
                "model": str(options.model),
                "sha256": digest,
                "images": str(options.images),
                "holdout": str(options.holdout) if options.holdout else None,
            },
            "settings": settings_json,
            "summary": summary,
            "layers": [layer.to_json() for layer in layers],
            "edges": edges,
            "paths": [
                {
                    "strength": path.strength,
                    "text": path.describe(names),
                    "filters": [
                        {"node": layer, "display": names[layer], "index": index}
                        for layer, index in path.filters
                    ],
                }
                for path in paths
            ],
            "filters": {layer: f"filters/{name}" for layer, name in filter_sheets.items()},
            "featuremaps": {layer: f"featuremaps/{name}" for layer, name in featuremaps.items()},
            "frozen_ops": [{"node": name, "op_type": op} for name, op in surgery.frozen],
            "metrics": {
                **verification.to_json(),
                "cost": cost,
                "optimisation": {"steps": result.steps, "finetune_steps": result.finetune_steps},
            },
            "timings": timings,
            "files": files,
        }
        write_atomic(stage.path / "chain.json", json.dumps(data, indent=2).encode())
        names_of_classes = class_names_from(options.class_names)
        outputs = verification.outputs

        def predicted(images: ImageSet, original_out: Any, chain_out: Any) -> list[Prediction]:
            return predictions(
                images.paths, images.labels, original_out, chain_out, kind, names_of_classes
            )

        write_report(
            stage.path,
            data,
            predicted(region, outputs.original_region, outputs.chain_region),
            region.array,
            predicted(holdout, outputs.original_holdout, outputs.chain_holdout)
            if holdout
            else None,
            holdout.array if holdout else None,
            prep,
            names_of_classes,
        )
        stage.publish()
    except BaseException:
        stage.discard()
        raise
    report = ExtractReport(out=out, summary=summary, files=files, data=data)
    if not verification.passed:
        raise VerificationError(verification.failure())
    return report


def class_names_from(path: Path | None) -> list[str] | None:
    """One class name per line, in the model's output order."""
    if path is None:
        return None
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ChainxError(f"--class-names {path}: cannot be read ({exc}).") from None
    return names


def _top_filters(
    activations: dict[str, np.ndarray],
    kept: dict[str, np.ndarray],
    multipliers: dict[str, np.ndarray],
    count: int,
) -> list[Any]:
    """The `count` highest-scored kept filters of every retained spatial layer."""
    from chainx.scoring.activation_max import Target

    targets = []
    for layer, activation in activations.items():
        units = kept[layer]
        if activation.shape[1] != len(units):
            continue
        order = np.argsort(-multipliers[layer][units], kind="stable")[:count]
        targets += [Target(layer, int(i), int(units[i])) for i in order]
    return targets


def _check_conversion(scoring: Any, normalised: onnx.ModelProto, images: np.ndarray) -> None:
    """The torch model must compute what onnxruntime computes, or the scores mean nothing."""
    import torch

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


def _layer_results(
    points: list[Any],
    multipliers: dict[str, np.ndarray],
    gates: dict[str, float],
    present: dict[str, np.ndarray],
) -> list[LayerResult]:
    names = display_names([p.layer for p in points])
    layers = []
    for point in points:
        values = multipliers[point.layer]
        kept = present[point.layer]
        layers.append(
            LayerResult(
                node=point.layer,
                display=names[point.layer],
                total=point.channels,
                gate=gates[point.layer],
                kept_indices=[int(i) for i in kept],
                kept_scores=[float(values[i]) for i in kept],
                folded=int(np.count_nonzero(np.delete(values, kept))),
            )
        )
    return layers
