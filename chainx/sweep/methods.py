"""The methods a sweep trial compares at one budget: NeuroChains' own chain; baselines that
choose as many filters per layer by another rule (random, weight L1, mean activation,
Taylor, LRP relevance); and two controls: NeuroChains' own choice with multipliers of 1
(`unscaled`), and its per-layer counts and learnt multipliers given to random filters of
the same layer (`shuffle`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from chainx.images import ImageSet
from chainx.pipeline import Scores, Source
from chainx.scoring import importance
from chainx.scoring.settings import OptimiseSettings
from chainx.sweep.plan import CHAIN

if TYPE_CHECKING:
    from chainx.scoring.importance import Importance

# Methods that carry NeuroChains' own multipliers or choice, so fine-tuning does not apply.
NOT_FINETUNED = ("unscaled", "shuffle")
BASELINE_MIN_SCORE = 0.05


class Methods:
    """Every method's multipliers at the per-layer budget of a reference chain (NeuroChains'
    chain at that budget). Rankings are computed once per trial, on first use."""

    def __init__(
        self,
        source: Source,
        scores: Scores,
        region: ImageSet,
        settings: OptimiseSettings,
        seed: int,
        finetune: bool,
    ) -> None:
        self.source, self.scores, self.region = source, scores, region
        self.settings, self.seed, self.finetune = settings, seed, finetune
        self._rankings: dict[str, Importance] = {}

    def _rank(self, method: str) -> Callable[[], Importance]:
        def ranking() -> Importance:
            if method not in self._rankings:
                self._rankings[method] = self._compute(method)
            return self._rankings[method]

        return ranking

    def _compute(self, method: str) -> Importance:
        source, scoring, images = self.source, self.scores.scoring, self.region.array
        if method == "random":
            return importance.random_order(source.points, self.seed)
        if method == "weight-l1":
            return importance.weight_l1(source.normalised, source.points)
        if method == "activation":
            return importance.mean_activation(source.normalised, source.points, images)
        if method == "taylor":
            return importance.taylor(scoring, images, source.kind)
        if method == "relevance":
            from chainx.scoring.relevance import relevance

            return relevance(scoring, images, source.kind)
        raise ValueError(f"no ranking for {method!r}")

    def finetuned(self, method: str) -> bool:
        return method == CHAIN or (self.finetune and method not in NOT_FINETUNED)

    def multipliers(self, method: str, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if method == CHAIN:
            return reference
        if method == "shuffle":
            return importance.shuffled_multipliers(reference, self.seed)
        chosen = importance.baseline_multipliers(method, reference, self._rank(method))
        if not self.finetuned(method):
            return chosen
        from chainx.scoring.optimise import finetune_selection

        # A floor on the scores: no selected filter drops out, so every method keeps the
        # chain's physical size.
        return finetune_selection(
            self.scores.scoring,
            self.region.array,
            self.source.kind,
            self.settings,
            chosen,
            min_score=BASELINE_MIN_SCORE,
        )
