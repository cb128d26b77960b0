"""One sweep trial: extract a chain from the trial's region, build every other method at the
same per-layer budget, at the chain's own budget and at each budget of the frontier, and
export, verify and measure each one the way `chainx extract` does. Optionally the
random-weights control and the stability of the chosen filters.

`run_trial` is the one function the local process pool and Ray both run. It takes a
picklable `TrialSpec` and returns a JSON-ready record.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from chainx.images import ImageSet, load_image_files
from chainx.pipeline import open_model, optimise_scores
from chainx.render.layers import point_display_names
from chainx.settings import read_class_names
from chainx.sweep.chains import TrialChains, accuracy
from chainx.sweep.controls import random_weights_method, stability
from chainx.sweep.methods import Methods
from chainx.sweep.plan import CHAIN, TrialSpec


def run_trial(spec: TrialSpec) -> dict[str, Any]:
    started = time.perf_counter()
    config = spec.config
    source = open_model(config.model, config.read)

    def load(files: tuple[tuple[Any, str], ...]) -> ImageSet:
        paths, labels = [p for p, _ in files], [label for _, label in files]
        return load_image_files(paths, labels, source.prep, config.read.strict)

    region = load(spec.region)
    holdout = load(spec.holdout) if spec.holdout else None
    points = source.points
    settings = replace(config.optimise, seed=spec.seed)
    scores = optimise_scores(source, region, settings, frontier=config.frontier)
    optimise_s = time.perf_counter() - started

    names = read_class_names(config.read.class_names)
    chains = TrialChains(source, scores, region, holdout, names)
    methods = Methods(source, scores, region, scores.settings, spec.seed, config.finetune_baselines)
    entries = {}
    for method in (CHAIN, *config.baselines):
        mark = time.perf_counter()
        entry = chains.main_entry(method, methods.multipliers(method, scores.result.multipliers))
        entry["scores_finetuned"] = methods.finetuned(method)
        entry["frontier"] = [
            chains.frontier_entry(
                method, cut.keep_ratio, methods.multipliers(method, cut.multipliers)
            )
            for cut in scores.result.frontier
        ]
        entry["seconds"] = time.perf_counter() - mark  # choosing, fine-tuning and building
        entries[method] = entry
    if "random-weights" in config.controls:
        redrawn = load(spec.redrawn) if spec.redrawn else None
        entries["random-weights"] = random_weights_method(
            source, (region, holdout, redrawn), scores.settings, config.frontier, spec.seed, names
        )

    layer_names = point_display_names(points)
    record = {
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
        "device": scores.settings.device,
        "layers": [layer_names[p.layer] for p in points],
        "original_accuracy": {
            "region": accuracy(chains.originals[0], chains.labels[0]),
            "holdout": accuracy(chains.originals[1], chains.labels[1]),
        },
        "methods": entries,
        "frontier": entries[CHAIN]["frontier"],
        "optimise_s": optimise_s,
    }
    if config.stability and spec.redrawn:
        record["stability"] = stability(source, scores, region, load(spec.redrawn))
    record["wall_s"] = time.perf_counter() - started
    return record
