"""The chains of one sweep trial: built, verified and measured on its region and holdout."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from chainx.chain.export import chain_summary
from chainx.images import ImageSet
from chainx.pipeline import (
    BuiltChain,
    Scores,
    Source,
    build_chain,
    folder_labels,
    frontier_entry,
    measure_chain,
    original_outputs,
)


def accuracy(output: np.ndarray | None, labels: list[int | None]) -> float | None:
    """Top-1 accuracy against the folder labels; None when a label's class is unknown."""
    if output is None or not labels or any(label is None for label in labels):
        return None
    return float(np.mean(output.argmax(1) == np.asarray(labels)))


class TrialChains:
    """Builds, verifies and measures the chains of one trial on its region and holdout."""

    def __init__(
        self,
        source: Source,
        scores: Scores,
        region: ImageSet,
        holdout: ImageSet | None,
        class_names: list[str] | None,
    ) -> None:
        self.source, self.scores, self.region, self.holdout = source, scores, region, holdout
        self.originals = original_outputs(source, region, holdout)
        self.labels = folder_labels(region, class_names), folder_labels(holdout, class_names)

    def _build(self, multipliers: dict[str, np.ndarray], record: dict[str, Any]) -> BuiltChain:
        return build_chain(
            self.source,
            self.scores.scoring,
            multipliers,
            self.region,
            self.holdout,
            record,
            self.originals,
        )

    def main_entry(self, method: str, multipliers: dict[str, np.ndarray]) -> dict[str, Any]:
        """The method at the chain's own budget, in today's record format."""
        built = self._build(multipliers, {"method": method})
        verification, present = built.verification, built.present
        outputs = verification.outputs
        points = self.source.points
        return {
            **chain_summary(multipliers, present, {p.layer: p.kind for p in points}),
            "layer_filters": [int(len(present[p.layer])) for p in points],
            "layer_scored": [int(np.count_nonzero(multipliers[p.layer])) for p in points],
            "verified": verification.passed,
            "max_abs_diff": verification.exactness.max_abs_diff,
            "region": asdict(verification.region),
            "holdout": asdict(verification.holdout) if verification.holdout else None,
            "accuracy": {
                "region": accuracy(outputs.chain_region, self.labels[0]),
                "holdout": accuracy(outputs.chain_holdout, self.labels[1]),
            },
            "metrics": measure_chain(built, self.source.kind, *self.labels),
        }

    def frontier_entry(
        self, method: str, keep_ratio: float, multipliers: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        built = self._build(multipliers, {"method": method, "frontier_keep_ratio": keep_ratio})
        measured = measure_chain(built, self.source.kind, *self.labels)
        return frontier_entry(keep_ratio, built, multipliers, measured)
