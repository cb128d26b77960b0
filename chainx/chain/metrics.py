"""What a chain explains: fidelity to the original on a set of images, the area under a
fidelity–sparsity frontier, and paired statistics over trials. Pure numpy and scipy."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import stats

from chainx.chain.verify import log_softmax

CONFIDENCE = 0.95


def _restricted_argmax(log_probs: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The argmax over `classes` only, as class indices."""
    allowed = np.asarray(classes, dtype=np.int64)
    return allowed[log_probs[:, allowed].argmax(1)]


def _top_margin(log_probs: np.ndarray, top: np.ndarray) -> np.ndarray:
    """logp[top] − max over the other classes, per image."""
    rows = np.arange(len(log_probs))
    others = log_probs.copy()
    others[rows, top] = -np.inf
    return log_probs[rows, top] - others.max(1)


def _mean_or_none(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None


def _agreements(
    log_p: np.ndarray, log_q: np.ndarray, classes: Sequence[int], subset: np.ndarray
) -> dict[str, Any]:
    """Top-1 and within-class agreement on the images in `subset` (None on no image)."""
    p, q = log_p[subset], log_q[subset]
    return {
        "images": int(subset.sum()),
        "agreement": _mean_or_none(p.argmax(1) == q.argmax(1)),
        "class_agreement": _mean_or_none(
            _restricted_argmax(p, classes) == _restricted_argmax(q, classes)
        ),
    }


def _majority_share(predictions: np.ndarray) -> float:
    """The agreement of always answering the most frequent of `predictions`."""
    return float(np.unique(predictions, return_counts=True)[1].max() / len(predictions))


def fidelity_metrics(
    chain_out: np.ndarray,
    original_out: np.ndarray,
    kind: str,
    region_classes: Sequence[int],
    labels: Sequence[int | None] | None = None,
    folder_classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """How faithfully the chain's (N, K) outputs follow the original's, as a JSON-ready dict.

    `kind` is the outputs' kind (logits, probabilities, log-probabilities); `region_classes`
    the classes the original predicts on the region; `labels` the folder labels as class
    indices (None where unknown); `folder_classes` the class indices of the region's folders.

    Margins are taken on log-probabilities, so they mean the same for every kind. The
    margin retention is the median over images of chain margin / original margin, both at
    the original's top-1 class; images whose original margin is 0 (a tie) are left out, and
    it is None when every image is. "confident" holds the images whose original top-2
    margin is above its median here, "borderline" the rest.
    """
    log_p = log_softmax(np.asarray(original_out), kind)
    log_q = log_softmax(np.asarray(chain_out), kind)
    if len(log_p) == 0:
        raise ValueError("fidelity_metrics needs at least one image")
    everything = np.ones(len(log_p), dtype=bool)
    overall = _agreements(log_p, log_q, region_classes, everything)
    top = log_p.argmax(1)
    original_margin = _top_margin(log_p, top)
    chain_margin = _top_margin(log_q, top)
    untied = original_margin > 0
    confident = original_margin > np.median(original_margin)

    folder_agreement = folder_chance = None
    if folder_classes is not None:
        original_folder = _restricted_argmax(log_p, folder_classes)
        folder_agreement = float(
            np.mean(original_folder == _restricted_argmax(log_q, folder_classes))
        )
        folder_chance = _majority_share(original_folder)

    accuracy = None
    if labels is not None:
        known = np.array([label is not None for label in labels], dtype=bool)
        if known.any():
            truth = np.array([label for label in labels if label is not None])
            accuracy = float(np.mean(log_q.argmax(1)[known] == truth))

    return {
        **overall,
        "folder_class_agreement": folder_agreement,
        "mean_kl": float((np.exp(log_p) * (log_p - log_q)).sum(1).mean()),
        "margin_retention": (
            float(np.median(chain_margin[untied] / original_margin[untied]))
            if untied.any()
            else None
        ),
        "accuracy": accuracy,
        "confident": _agreements(log_p, log_q, region_classes, confident),
        "borderline": _agreements(log_p, log_q, region_classes, ~confident),
        "chance": {
            "class_agreement": _majority_share(_restricted_argmax(log_p, region_classes)),
            "folder_class_agreement": folder_chance,
        },
    }


def frontier_auc(points: list[tuple[float, float]], low: float, high: float) -> float | None:
    """The mean agreement over removed ∈ [low, high]: the area under the piecewise-linear
    curve through the (fraction of filters removed, agreement) points, divided by
    high − low.

    None when the points do not span [low, high] (no extrapolation; the curve is only cut
    at the ends) or when the range is empty (high ≤ low). Points at the same fraction
    removed join by a vertical step, which adds no area.
    """
    ordered = sorted(points, key=lambda point: point[0])
    if high <= low or not ordered or ordered[0][0] > low or ordered[-1][0] < high:
        return None
    area = 0.0
    for (x0, y0), (x1, y1) in pairwise(ordered):
        start, end = max(x0, low), min(x1, high)
        if end <= start:
            continue
        slope = (y1 - y0) / (x1 - x0)
        area += (end - start) * (y0 + slope * ((start + end) / 2 - x0))
    return area / (high - low)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """The mean over trials with its 95 % Student-t confidence interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(data.mean())
    if data.size == 1:
        return {"mean": mean, "low": mean, "high": mean, "n": 1}
    half = stats.t.ppf((1 + CONFIDENCE) / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size)
    return {
        "mean": mean,
        "low": float(mean - half),
        "high": float(mean + half),
        "n": int(data.size),
    }


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """a against b, paired by trial: the mean of a − b with its 95 % t-interval, the trials
    a wins, loses and ties, and the two-sided Wilcoxon signed-rank p-value (zero
    differences dropped; None with fewer than 2 non-zero differences)."""
    if len(a) != len(b):
        raise ValueError(f"paired_test needs pairs: {len(a)} values against {len(b)}")
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    nonzero = np.count_nonzero(differences)
    return {
        "difference": mean_ci(differences),
        "wins": int((differences > 0).sum()),
        "losses": int((differences < 0).sum()),
        "ties": int((differences == 0).sum()),
        "wilcoxon_p": (
            float(stats.wilcoxon(differences, alternative="two-sided").pvalue)
            if nonzero >= 2
            else None
        ),
    }
