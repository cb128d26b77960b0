"""The stages that build a chain, shared by `chainx extract`, the Python API and sweep
trials:

    open_model → Source.images → optimise_scores → build_chain (export, verify)
                                                 → measure_chain (fidelity metrics), frontier_entry
                                                 → build_deploy (chain.deploy.onnx, checked)

Each stage is a function that takes the previous stages' records and returns its own.
`chainx.extraction.extract` runs them all and draws the result; a sweep trial runs them
once per method.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from chainx.chain.deploy import BLOCK, check_deploy, deploy_chain
from chainx.chain.exactness import first_parting
from chainx.chain.export import chain_summary, export_chain
from chainx.chain.metrics import fidelity_metrics
from chainx.chain.verify import (
    ChainVerification,
    Exactness,
    ModelCost,
    Reference,
    model_cost,
    verify_chain,
)
from chainx.channels.emitter import WeightSlice
from chainx.channels.surgery import present_units
from chainx.errors import stage
from chainx.images import ImageSet, Preprocessing, load_images, model_preprocessing
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.passes.channels_last import reads_channels_last
from chainx.onnx.passes.float16 import float16_form
from chainx.onnx.score_points import ScorePoint, find_score_points, output_kind, scored_model
from chainx.scoring.settings import MaskedOutputs, OptimiseResult, OptimiseSettings, StepReport
from chainx.settings import ReadSettings, class_of

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

    path: Path | None  # None for a model built in memory (the random-weights control)
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


def model_source(source: Source, model: onnx.ModelProto) -> Source:
    """Another normalised model of the same architecture and preprocessing, held in memory
    (the random-weights control): it is its own original."""
    return replace(source, path=None, original=model, digest="", normalised=model)


def open_model(model: Path, read: ReadSettings) -> Source:
    """Load and check the user's file, normalise it, and refuse what torch cannot convert."""
    from chainx.scoring.conversion import check_convertible  # torch loads here

    original = load_model(model)
    digest = sha256_file(model)
    with stage("normalise"):
        normalised = normalise(original, read.input_name, read.output_name)
        check_convertible(normalised)
        prep = model_preprocessing(normalised, read.size, read.resize, read.mean, read.std)
        kind, points = output_kind(normalised), find_score_points(normalised)
    return Source(model, original, digest, normalised, prep, kind, points, read)


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
    frontier: tuple[float, ...] = (),
) -> Scores:
    """The scores and gates that keep the original's outputs on the region."""
    from chainx.scoring.conversion import check_conversion
    from chainx.scoring.device import resolve_device
    from chainx.scoring.model import ScoringModel
    from chainx.scoring.optimise import optimise

    settings = replace(settings, device=resolve_device(settings.device))
    with stage("convert to torch"):
        scoring = ScoringModel(source.normalised, source.points)
        check_conversion(scoring, source.normalised, region.array)
    with stage("optimise"):
        step = on_step or _silent
        result = optimise(scoring, region.array, source.kind, settings, step, frontier)
    return Scores(scoring, result, settings)


def _silent(report: StepReport) -> None:
    """No progress to show (a sweep trial)."""


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
    expected: MaskedOutputs  # the masked scoring model's output on the region


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
    from chainx.scoring.model import masked_outputs  # torch is loaded by now

    mark = time.perf_counter()
    with stage("export"):
        surgery = export_chain(
            source.normalised,
            source.points,
            multipliers,
            {"sha256": source.digest, "settings": settings_record},
            float16_form(source.original),
            reads_channels_last(source.original, source.normalised.graph.input[0].name),
        )
        onnx.checker.check_model(surgery.model, full_check=True)
    export_s = time.perf_counter() - mark
    mark = time.perf_counter()
    with stage("verify"):
        expected = masked_outputs(scoring, region.array, multipliers)
        verification = verify_chain(
            surgery.model,
            source.path,
            source.original,
            source.normalised,
            surgery.slices,
            expected,
            region.array,
            holdout.array if holdout else None,
            source.kind,
            outputs,
        )
        exact = verification.exactness
        if not exact.passed and surgery.model.graph.input[0] == source.normalised.graph.input[0]:
            # The chain reads what the normalised model reads (not float16, not NHWC).
            scored = scored_model(source.normalised, source.points, multipliers)
            exact.parts_at = first_parting(surgery.model, scored, surgery.layouts, region.array)
    verify_s = time.perf_counter() - mark
    present = present_units(
        surgery.model, surgery.slices, {p.layer: p.channels for p in source.points}
    )
    return BuiltChain(
        surgery.model,
        surgery.slices,
        surgery.frozen,
        verification,
        present,
        export_s,
        verify_s,
        expected,
    )


@dataclass
class DeployChain:
    model: onnx.ModelProto
    check: Exactness  # against chain.onnx on the region
    cost: ModelCost
    block: int  # the channel block its layers are padded to (1: not padded)
    seconds: float


@stage("deploy")
def build_deploy(
    source: Source, multipliers: dict[str, np.ndarray], chain: BuiltChain, region: ImageSet
) -> DeployChain:
    """chain.deploy.onnx (chain/deploy.py) of `multipliers`, checked against the chain.

    Padding pays where layers run on the fast path once whole; on a small network (16
    filters a layer) it only adds work. Both forms are timed here and the faster is kept.
    """
    mark = time.perf_counter()
    candidates = []
    for block in (BLOCK, 1):
        model = deploy_chain(
            source.normalised,
            source.points,
            multipliers,
            float16_form(source.original),
            reads_channels_last(source.original, source.normalised.graph.input[0].name),
            block,
        )
        candidates.append((model_cost(model, region.array[:1]), block, model))
    cost, block, model = min(candidates, key=lambda candidate: candidate[0].latency_ms)
    onnx.checker.check_model(model, full_check=True)
    check = check_deploy(model, chain.model, region.array, chain.expected)
    return DeployChain(model, check, cost, block, time.perf_counter() - mark)


def folder_labels(images: ImageSet | None, class_names: list[str] | None) -> list[int | None]:
    """Class indices of the images' folder labels: by class names, or folders named 0, 1, …;
    None where the folder names no class."""
    if images is None:
        return []
    if class_names is None:
        return [int(label) if label.isdigit() else None for label in images.labels]
    return [class_of(label, class_names) for label in images.labels]


def measure_chain(
    chain: BuiltChain,
    kind: str,
    region_labels: list[int | None],
    holdout_labels: list[int | None],
) -> dict[str, Any]:
    """The chain's fidelity metrics on the region and the holdout (chain/metrics.py).

    The folder classes are the region's labelled classes; accuracy needs labels.
    """
    verification, outputs = chain.verification, chain.verification.outputs
    folder_classes = sorted({label for label in region_labels if label is not None}) or None

    def measured(chain_out: np.ndarray, original_out: np.ndarray, labels: list) -> dict:
        return fidelity_metrics(
            chain_out,
            original_out,
            kind,
            verification.classes,
            labels if any(label is not None for label in labels) else None,
            folder_classes,
        )

    return {
        "region": measured(outputs.chain_region, outputs.original_region, region_labels),
        "holdout": measured(outputs.chain_holdout, outputs.original_holdout, holdout_labels)
        if outputs.chain_holdout is not None
        else None,
    }


def frontier_entry(
    keep_ratio: float,
    built: BuiltChain,
    multipliers: dict[str, np.ndarray],
    measured: dict[str, Any],
    **extra: Any,  # noqa: ANN401
) -> dict[str, Any]:
    """One budget of a frontier: its size as built and verified, and its fidelity."""
    summary = chain_summary(multipliers, built.present)
    return {
        "keep_ratio": keep_ratio,
        "filters_kept": summary["filters_kept"],
        "filters_removed_fraction": summary["filters_removed_fraction"],
        "verified": built.verification.passed,
        "max_abs_diff": built.verification.exactness.max_abs_diff,
        **extra,
        **measured,
    }
