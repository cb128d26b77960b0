"""The one pipeline that builds a chain, for the CLI, the Python API and sweep trials:

    open_model → read images → optimise_scores → build_chain (export, verify) → extract
    (describe, draw, record)

Each stage is a function that takes the previous stages' records and returns its own;
`extract` runs them all. A sweep trial runs the same stages up to `build_chain`, once per
method.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from chainx.chain.export import chain_summary, export_chain
from chainx.chain.result import ExtractResult, LayerGraph, layer_results
from chainx.chain.verify import ChainVerification, Reference, model_cost, verify_chain
from chainx.channels.emitter import WeightSlice
from chainx.channels.surgery import present_units
from chainx.images import ImageSet, Preprocessing, load_images, model_preprocessing
from chainx.onnx.graph import GraphIndex
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import ScorePoint, find_score_points, output_kind
from chainx.render.files import render_files
from chainx.render.layers import layer_edges
from chainx.render.paths import link_weights, strongest_paths
from chainx.render.report import predictions, report_html
from chainx.scoring.settings import OptimiseResult, OptimiseSettings, StepReport
from chainx.settings import ExtractSettings, ReadSettings, read_class_names
from chainx.version import __version__

if TYPE_CHECKING:
    from chainx.scoring.model import ScoringModel


@dataclass
class Listener:
    """How the pipeline talks to its caller (the CLI draws a progress bar from these)."""

    message: Callable[[str], None] = lambda text: None
    step: Callable[[StepReport], None] = lambda report: None


@dataclass
class Source:
    """The user's model, read, checked and normalised: what every later stage works on."""

    path: Path
    original: onnx.ModelProto
    digest: str
    normalised: onnx.ModelProto
    prep: Preprocessing
    kind: str  # what the output holds: logits, probabilities or log-probabilities
    points: list[ScorePoint]
    read: ReadSettings

    def images(self, folder: Path) -> ImageSet:
        return load_images(folder, self.prep, self.read.strict)

    def settings_record(self, optimise: OptimiseSettings) -> dict[str, Any]:
        """chain.json's "settings": how this chain was made, enough to rebuild it."""
        return {
            **asdict(optimise),
            "preprocessing": self.prep.to_json(),
            "output_kind": self.kind,
            "input": self.read.input_name,
            "output": self.read.output_name,
        }


def open_model(model: Path, read: ReadSettings) -> Source:
    """Load and check the user's file, normalise it, and refuse what torch cannot convert."""
    from chainx.scoring.conversion import check_convertible  # torch loads here

    original = load_model(model)
    digest = sha256_file(model)
    normalised = normalise(original, read.input_name, read.output_name)
    check_convertible(normalised)
    prep = model_preprocessing(normalised, read.size, read.resize, read.mean, read.std)
    return Source(
        path=model,
        original=original,
        digest=digest,
        normalised=normalised,
        prep=prep,
        kind=output_kind(normalised),
        points=find_score_points(normalised),
        read=read,
    )


@dataclass
class Scores:
    scoring: ScoringModel
    result: OptimiseResult
    settings: OptimiseSettings  # as run: the device resolved


def optimise_scores(
    source: Source,
    region: ImageSet,
    settings: OptimiseSettings,
    on_step: Callable[[StepReport], None] | None = None,
) -> Scores:
    """The scores and gates that keep the original's outputs on the region."""
    from chainx.scoring.conversion import check_conversion
    from chainx.scoring.device import resolve_device
    from chainx.scoring.model import ScoringModel
    from chainx.scoring.optimise import optimise

    settings = replace(settings, device=resolve_device(settings.device))
    scoring = ScoringModel(source.normalised, source.points)
    check_conversion(scoring, source.normalised, region.array)
    return Scores(
        scoring, optimise(scoring, region.array, source.kind, settings, on_step), settings
    )


OriginalOutputs = tuple[np.ndarray, np.ndarray | None]


def original_outputs(source: Source, region: ImageSet, holdout: ImageSet | None) -> OriginalOutputs:
    """The user's model on the region and the holdout, computed once for several chains."""
    # Every chain keeps the normalised model's input and output names.
    reference = Reference(source.normalised, source.path, source.original, source.normalised)
    return reference.run(region.array), reference.run(holdout.array) if holdout else None


@dataclass
class BuiltChain:
    model: onnx.ModelProto
    slices: list[WeightSlice]
    frozen: list[tuple[str, str]]
    verification: ChainVerification
    present: dict[str, np.ndarray]  # scored layer → the units the chain computes
    export_s: float
    verify_s: float


def build_chain(
    source: Source,
    scoring: ScoringModel,
    multipliers: dict[str, np.ndarray],
    region: ImageSet,
    holdout: ImageSet | None,
    settings_record: dict[str, Any],
    outputs: OriginalOutputs | None = None,
) -> BuiltChain:
    """Export the chain of `multipliers` and verify it in onnxruntime."""
    mark = time.perf_counter()
    surgery = export_chain(
        source.normalised,
        source.points,
        multipliers,
        {"sha256": source.digest, "settings": settings_record},
    )
    onnx.checker.check_model(surgery.model, full_check=True)
    export_s = time.perf_counter() - mark
    mark = time.perf_counter()
    verification = verify_chain(
        surgery.model,
        source.path,
        source.original,
        source.normalised,
        surgery.slices,
        scoring.masked(region.array, multipliers),
        region.array,
        holdout.array if holdout else None,
        source.kind,
        outputs,
    )
    verify_s = time.perf_counter() - mark
    present = present_units(
        surgery.model, surgery.slices, {p.layer: p.channels for p in source.points}
    )
    return BuiltChain(
        surgery.model, surgery.slices, surgery.frozen, verification, present, export_s, verify_s
    )


def extract(
    model: str | Path,
    images: str | Path,
    holdout: str | Path | None = None,
    *,
    settings: ExtractSettings | None = None,
    out: str | Path | None = None,
    force: bool = False,
    listener: Listener | None = None,
) -> ExtractResult:
    """Extract, verify and draw the chain of `model` on the region `images`.

    Nothing is written unless `out` is given. The result is returned even when the
    verification fails (`result.verification.passed`).
    """
    settings = settings or ExtractSettings()
    listener = listener or Listener()
    model, images = Path(model), Path(images)
    holdout = Path(holdout) if holdout is not None else None
    inputs = [model, images] + ([holdout] if holdout else [])
    if out is not None:
        from chainx.outputs import check_output_dir

        check_output_dir(Path(out), force, inputs)  # fail before the long work
    timings: dict[str, float] = {}
    started = time.perf_counter()

    source = open_model(model, settings.read)
    listener.message(f"preprocessing: {source.prep.describe()}")
    region = source.images(images)
    held = source.images(holdout) if holdout else None
    for name, loaded in (("region", region), ("holdout", held)):
        skipped = loaded.skipped.describe() if loaded else None
        if skipped:
            listener.message(f"{name}: {skipped}")
    listener.message(
        f"model: {len(source.points)} scored layers, "
        f"{sum(p.channels for p in source.points):,} filters; output treated as {source.kind}; "
        f"region: {len(region.paths)} images"
        + (f"; holdout: {len(held.paths)} images" if held else "")
    )
    timings["load_s"] = time.perf_counter() - started

    scores = optimise_scores(source, region, settings.optimise, listener.step)
    timings["optimise_s"] = scores.result.seconds
    settings_record = source.settings_record(scores.settings)
    chain = build_chain(
        source, scores.scoring, scores.result.multipliers, region, held, settings_record
    )
    timings["export_s"], timings["verify_s"] = chain.export_s, chain.verify_s

    multipliers = scores.result.multipliers
    layers = layer_results(source.points, multipliers, scores.result.gates, chain.present)
    order = [p.layer for p in source.points]
    edges = layer_edges(GraphIndex.build(source.normalised), order)
    names = {layer.node: layer.display for layer in layers}
    scored_units = {
        layer: units[multipliers[layer][units] != 0] for layer, units in chain.present.items()
    }
    mark = time.perf_counter()
    links = link_weights(chain.model, region.array, scored_units, edges)
    paths = strongest_paths(links, scored_units, order)
    if paths:
        listener.message(f"strongest inference path: {paths[0].describe(names)}")
    timings["paths_s"] = time.perf_counter() - mark

    cost = {
        "original": asdict(model_cost(model, region.array[:1])),
        "chain": asdict(model_cost(chain.model, region.array[:1])),
    }
    graph = LayerGraph(
        layers,
        edges,
        [path.describe(names) for path in paths],
        [layer for layer, _ in paths[0].filters] if paths else [],
    )
    mark = time.perf_counter()
    drawn = render_files(
        chain.model,
        graph,
        f"{model.stem} · {images.name}",
        region.array,
        source.prep,
        scored_units,
        multipliers,
        settings.filter_images,
    )
    timings["visualise_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    record = {
        "generator": "chainx",
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": str(model),
            "sha256": source.digest,
            "images": str(images),
            "holdout": str(holdout) if holdout else None,
        },
        "settings": settings_record,
        "summary": chain_summary(multipliers, chain.present),
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
        "filters": drawn.filter_sheets,
        "featuremaps": drawn.featuremaps,
        "frozen_ops": [{"node": name, "op_type": op} for name, op in chain.frozen],
        "metrics": {
            **chain.verification.to_json(),
            "cost": cost,
            "optimisation": {
                "steps": scores.result.steps,
                "finetune_steps": scores.result.finetune_steps,
            },
        },
        "timings": timings,
    }
    class_names = read_class_names(settings.read.class_names)
    outputs = chain.verification.outputs
    report = report_html(
        {**record, "files": {}},
        drawn.files,
        predictions(
            region.paths,
            region.labels,
            outputs.original_region,
            outputs.chain_region,
            source.kind,
            class_names,
        ),
        region.array,
        predictions(
            held.paths,
            held.labels,
            outputs.original_holdout,
            outputs.chain_holdout,
            source.kind,
            class_names,
        )
        if held
        else None,
        held.array if held else None,
        source.prep,
        class_names,
    )
    result = ExtractResult(
        chain=chain.model,
        verification=chain.verification,
        layers=layers,
        record=record,
        files={**drawn.files, "report.html": report.encode("utf-8")},
        inputs=inputs,
    )
    if out is not None:
        result.save(out, force=True)  # the folder was checked before the work began
    return result
