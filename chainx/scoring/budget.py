"""How a budget (`--keep-ratio`, a frontier's cut) decides which filters a chain keeps:
gradually while sparsifying, then exactly at the cut, and held through fine-tuning.

Why a budget binds whatever λ does: the user asked for that many filters. Where the L1
drove more scores to zero than the budget allows, the cut fills the budget from the zeros
that held on longest (`Persistence`), and fine-tuning keeps every cut filter's score above
FLOOR, so that none drops out of the chain.
"""

from __future__ import annotations

import math

import torch

from chainx.scoring.model import ScoringModel
from chainx.scoring.settings import OptimiseSettings

# The least score of a filter a budget keeps, while fine-tuning (its multiplier is then
# non-zero and the chain computes it).
FLOOR = 1e-3


class Persistence:
    """Every filter's multiplier summed over the sparsification steps: how long and how
    strongly it held on before the L1 took it, which ranks filters whose scores ended at
    zero."""

    def __init__(self, scoring: ScoringModel) -> None:
        self.scoring = scoring
        self.total = torch.zeros(sum(scoring.channels), device=scoring.gates.device)

    def observe(self) -> None:
        with torch.no_grad():
            self.total += torch.cat(self.scoring.multipliers()).to(self.total.device)


def keep_top(
    scoring: ScoringModel,
    fraction: float,
    final: bool = False,
    persistence: Persistence | None = None,
) -> None:
    """Mask all but the `fraction` of filters with the largest multipliers.

    Until the final cut a filter at zero stays unmasked, so that it can still come back.
    At the final cut, filters at zero fill the budget only by `persistence`; without it
    they are dropped.
    """
    with torch.no_grad():
        values = [m.detach() for m in scoring.multipliers()]
        flat = torch.cat(values)
        budget = max(1, math.ceil(fraction * len(flat)))
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, budget).indices] = True  # exactly the budget, ties or not
        if final:
            keep &= flat > 0
            missing = budget - int(keep.sum())
            if missing > 0 and persistence is not None:
                held = persistence.total.to(flat.device).masked_fill(keep, -math.inf)
                keep[torch.topk(held, missing).indices] = True
        scoring.masks = list(torch.split(keep, [len(v) for v in values]))


def hold_floor(scoring: ScoringModel, floor: float) -> None:
    """Keep every masked-in score at `floor` or above."""
    with torch.no_grad():
        for score, mask in zip(scoring.scores, scoring.masks, strict=True):
            score.copy_(torch.where(mask, score.clamp(min=floor), score))


def gradual_keep(step: int, total: int, keep_ratio: float) -> float:
    """The kept fraction at a step: 1 until 10% of the steps, the budget from 70% on.

    Cubic in between, as in gradual magnitude pruning: large cuts early while many filters
    are redundant, small ones late, so the scores can adapt to each cut.
    """
    start, end = 0.1 * total, 0.7 * total
    progress = min(max((step - start) / max(end - start, 1), 0.0), 1.0)
    return keep_ratio + (1 - keep_ratio) * (1 - progress) ** 3


def enough_to_cut(scoring: ScoringModel, settings: OptimiseSettings) -> int:
    """Filters above τ at which sparsification may stop (`sparsify_until`), or -1: never.

    Why: the cut to the budget holds once sparsification has weaned the network to about
    twice the budget; cut from three times it, the outputs collapsed (docs/performance.md).
    """
    if settings.sparsify_until is None or settings.keep_ratio is None or settings.gradual:
        return -1
    budget = math.ceil(settings.keep_ratio * sum(scoring.channels))
    return math.floor(settings.sparsify_until * budget)
