"""Controls that separate finding from fitting, run inside a sweep trial:

- random weights: the same architecture with every Conv/Gemm weight re-drawn at its layer's
  standard deviation (BatchNorm statistics re-estimated on region images, never the
  holdout); NeuroChains run on it the same way. If its chains also reach high region
  agreement, the method fits rather than finds;
- stability: the chain again with two more seeds, and on a re-drawn region of the same
  classes; the Jaccard overlap of the filters each keeps.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from chainx.images import ImageSet
from chainx.onnx.random_weights import random_weights_model
from chainx.pipeline import Scores, Source, model_source, optimise_scores
from chainx.scoring.settings import OptimiseSettings
from chainx.sweep.chains import TrialChains


def random_weights_method(
    source: Source,
    images: tuple[ImageSet, ImageSet | None, ImageSet | None],
    settings: OptimiseSettings,
    frontier: tuple[float, ...],
    seed: int,
    class_names: list[str] | None,
) -> dict[str, Any]:
    """NeuroChains on the random-weights model, measured against that model's own outputs:
    the method's entry, with its frontier. `images` are the trial's region, holdout and
    re-drawn region (which serves, with the region, to re-estimate BatchNorm)."""
    region, holdout, redrawn = images
    started = time.perf_counter()
    statistics = region.array if redrawn is None else np.concatenate([region.array, redrawn.array])
    control = model_source(source, random_weights_model(source.normalised, statistics, seed))
    scores = optimise_scores(control, region, settings, frontier=frontier)
    chains = TrialChains(control, scores, region, holdout, class_names)
    entry = chains.main_entry("random-weights", scores.result.multipliers)
    entry["scores_finetuned"] = True
    entry["seconds"] = time.perf_counter() - started
    entry["frontier"] = [
        chains.frontier_entry("random-weights", cut.keep_ratio, cut.multipliers)
        for cut in scores.result.frontier
    ]
    return entry


def kept_filters(multipliers: dict[str, np.ndarray]) -> set[tuple[str, int]]:
    return {
        (layer, int(i)) for layer, values in multipliers.items() for i in np.flatnonzero(values)
    }


def jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def stability(
    source: Source, scores: Scores, region: ImageSet, redrawn: ImageSet
) -> dict[str, Any]:
    """The chain's kept filters against those of two more seeds on the same region, and of
    the trial's seed on a re-drawn region of the same classes (the chain's own budget)."""
    settings = scores.settings
    chosen = kept_filters(scores.result.multipliers)

    def again(images: ImageSet, seed: int) -> set[tuple[str, int]]:
        return kept_filters(
            optimise_scores(source, images, replace(settings, seed=seed)).result.multipliers
        )

    total = sum(point.channels for point in source.points)
    return {
        "keep_ratio": len(chosen) / total,
        "seed_jaccard": [jaccard(chosen, again(region, settings.seed + k)) for k in (1, 2)],
        "region_jaccard": jaccard(chosen, again(redrawn, settings.seed)),
    }
