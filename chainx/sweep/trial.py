"""One sweep trial: extract a chain from the trial's region, build the baselines at the same
per-layer budget, and export and verify each one the way `chainx extract` does.

`run_trial` is the one function the local process pool and Ray both run. It takes a
picklable `TrialSpec` and returns a JSON-ready record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import onnx

from chainx.chain.export import chain_summary, export_chain
from chainx.chain.verify import Reference, verify_chain
from chainx.channels.surgery import present_units
from chainx.images import ImageSet, load_image_files, model_preprocessing
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.pipeline import class_names_from
from chainx.render.layers import display_names
from chainx.render.report import class_of
from chainx.scoring import importance
from chainx.sweep.plan import CHAIN, TrialSpec


def _accuracy(output: np.ndarray | None, labels: list[int | None]) -> float | None:
    """Top-1 accuracy against the folder labels; None when a label's class is unknown."""
    if output is None or not labels or any(label is None for label in labels):
        return None
    return float(np.mean(output.argmax(1) == np.asarray(labels)))


def run_trial(spec: TrialSpec) -> dict[str, Any]:
    from chainx.scoring.model import ScoringModel, check_convertible, output_kind
    from chainx.scoring.optimise import finetune_selection, optimise, resolve_device

    started = time.perf_counter()
    config = spec.config
    original = load_model(config.model)
    normalised = normalise(original, config.input_name, config.output_name)
    check_convertible(normalised)
    prep = model_preprocessing(normalised, config.size, config.resize, config.mean, config.std)

    def load(files: tuple[tuple[Any, str], ...]) -> ImageSet:
        paths, labels = [p for p, _ in files], [label for _, label in files]
        return load_image_files(paths, labels, prep, config.strict)

    region = load(spec.region)
    holdout = load(spec.holdout) if spec.holdout else None
    kind = output_kind(normalised)
    points = find_score_points(normalised)
    settings = replace(
        config.optimise, seed=spec.seed, device=resolve_device(config.optimise.device)
    )
    scoring = ScoringModel(normalised, points)
    result = optimise(scoring, region.array, kind, settings)
    optimise_s = time.perf_counter() - started

    # Every chain keeps the normalised model's input and output names, so it names them.
    reference = Reference(normalised, config.model, original, normalised)
    original_outputs = (
        reference.run(region.array),
        reference.run(holdout.array) if holdout else None,
    )
    names = class_names_from(config.class_names)

    def labels(images: ImageSet | None) -> list[int | None]:
        """Class indices of the folder labels: by --class-names, or folders named 0, 1, …"""
        if images is None:
            return []
        if names is None:
            return [int(label) if label.isdigit() else None for label in images.labels]
        return [class_of(label, names) for label in images.labels]

    region_labels, holdout_labels = labels(region), labels(holdout)
    rankings = {
        "random": lambda: importance.random_order(points, spec.seed),
        "weight-l1": lambda: importance.weight_l1(normalised, points),
        "activation": lambda: importance.mean_activation(normalised, points, region.array),
        "taylor": lambda: importance.taylor(scoring, region.array, kind),
        "unscaled": lambda: {},
    }
    candidates = {CHAIN: result.multipliers}
    finetuned = set()
    for method in config.baselines:
        candidates[method] = importance.baseline_multipliers(
            method, result.multipliers, rankings[method]
        )
        if config.finetune_baselines and method != "unscaled":
            candidates[method] = finetune_selection(
                scoring, region.array, kind, settings, candidates[method]
            )
            finetuned.add(method)

    digest = sha256_file(config.model)
    layer_names = display_names([p.layer for p in points])
    methods = {}
    for method, multipliers in candidates.items():
        mark = time.perf_counter()
        surgery = export_chain(
            normalised, points, multipliers, {"sha256": digest, "settings": {"method": method}}
        )
        chain: onnx.ModelProto = surgery.model
        verification = verify_chain(
            chain,
            config.model,
            original,
            normalised,
            surgery.slices,
            scoring.masked(region.array, multipliers),
            region.array,
            holdout.array if holdout else None,
            kind,
            original_outputs,
        )
        present = present_units(chain, surgery.slices, {p.layer: p.channels for p in points})
        outputs = verification.outputs
        methods[method] = {
            **chain_summary(multipliers, present),
            "layer_filters": [int(len(present[p.layer])) for p in points],
            "layer_scored": [int(np.count_nonzero(multipliers[p.layer])) for p in points],
            "scores_finetuned": method == CHAIN or method in finetuned,
            "verified": verification.passed,
            "max_abs_diff": verification.exactness.max_abs_diff,
            "region": asdict(verification.region),
            "holdout": asdict(verification.holdout) if verification.holdout else None,
            "accuracy": {
                "region": _accuracy(outputs.chain_region, region_labels),
                "holdout": _accuracy(outputs.chain_holdout, holdout_labels),
            },
            "seconds": time.perf_counter() - mark,
        }
    return {
        "trial": spec.index,
        "seed": spec.seed,
        "classes": list(spec.classes),
        "region": [str(path) for path, _ in spec.region],
        "holdout_images": len(spec.holdout),
        "skipped_images": [
            f"{path}: {why}"
            for images in (region, holdout)
            if images is not None
            for path, why in images.skipped.unreadable
        ],
        "device": settings.device,
        "layers": [layer_names[p.layer] for p in points],
        "original_accuracy": {
            "region": _accuracy(original_outputs[0], region_labels),
            "holdout": _accuracy(original_outputs[1], holdout_labels),
        },
        "methods": methods,
        "optimise_s": optimise_s,
        "wall_s": time.perf_counter() - started,
    }
