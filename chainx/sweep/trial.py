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

from chainx.chain.export import chain_summary
from chainx.images import ImageSet, load_image_files
from chainx.pipeline import build_chain, open_model, optimise_scores, original_outputs
from chainx.render.layers import display_names
from chainx.render.report import class_of
from chainx.scoring import importance
from chainx.settings import read_class_names
from chainx.sweep.plan import CHAIN, TrialSpec


def _accuracy(output: np.ndarray | None, labels: list[int | None]) -> float | None:
    """Top-1 accuracy against the folder labels; None when a label's class is unknown."""
    if output is None or not labels or any(label is None for label in labels):
        return None
    return float(np.mean(output.argmax(1) == np.asarray(labels)))


def run_trial(spec: TrialSpec) -> dict[str, Any]:
    from chainx.scoring.optimise import finetune_selection  # torch loads here

    started = time.perf_counter()
    config = spec.config
    source = open_model(config.model, config.read)

    def load(files: tuple[tuple[Any, str], ...]) -> ImageSet:
        paths, labels = [p for p, _ in files], [label for _, label in files]
        return load_image_files(paths, labels, source.prep, config.read.strict)

    region = load(spec.region)
    holdout = load(spec.holdout) if spec.holdout else None
    points = source.points
    scores = optimise_scores(source, region, replace(config.optimise, seed=spec.seed))
    result, settings, scoring = scores.result, scores.settings, scores.scoring
    optimise_s = time.perf_counter() - started

    originals = original_outputs(source, region, holdout)
    names = read_class_names(config.read.class_names)

    def labels(images: ImageSet | None) -> list[int | None]:
        """Class indices of the folder labels: by --class-names, or folders named 0, 1, …"""
        if images is None:
            return []
        if names is None:
            return [int(label) if label.isdigit() else None for label in images.labels]
        return [class_of(label, names) for label in images.labels]

    region_labels, holdout_labels = labels(region), labels(holdout)
    normalised, kind = source.normalised, source.kind
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

    layer_names = display_names([p.layer for p in points])
    methods = {}
    for method, multipliers in candidates.items():
        mark = time.perf_counter()
        chain = build_chain(
            source, scoring, multipliers, region, holdout, {"method": method}, originals
        )
        verification, present = chain.verification, chain.present
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
            "region": _accuracy(originals[0], region_labels),
            "holdout": _accuracy(originals[1], holdout_labels),
        },
        "methods": methods,
        "optimise_s": optimise_s,
        "wall_s": time.perf_counter() - started,
    }
