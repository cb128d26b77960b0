"""What follows phase 1 under --keep-ratio or --tau: the mask, then phase 2."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import torch

from chainx.errors import ChainxError
from chainx.scoring.budget import FLOOR, Persistence, keep_top
from chainx.scoring.finetune import finetune
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective
from chainx.scoring.settings import OptimiseSettings, StepReport


def threshold(
    scoring: ScoringModel,
    settings: OptimiseSettings,
    lam: float,
    history: list[StepReport],
    persistence: Persistence | None = None,
) -> None:
    """The mask after phase 1: the budget's top filters with `persistence` (its cut), or
    every filter above τ without."""
    if settings.keep_ratio is not None and persistence is not None:
        keep_top(scoring, settings.keep_ratio, final=True, persistence=persistence)
    else:
        with torch.no_grad():
            values = [m.detach() for m in scoring.multipliers()]
            scoring.masks = [v > settings.tau for v in values]
    if any(mask.any() for mask in scoring.masks):
        return
    total = sum(len(mask) for mask in scoring.masks)
    kept = [r.kept for r in history if r.phase == "sparsify"]
    # The count kept just before it first fell to none.
    last = next((before for before, now in pairwise(kept) if now == 0 < before), 0)
    if last > total // 2:
        raise ChainxError(
            f"every filter fell below the threshold τ={settings.tau} at once ({last:,} of "
            f"{total:,} were kept the step before): the scores fell together because the KL "
            "could not tell the filters apart. A layer that feeds a normalisation over its "
            "channels (LayerNorm, as in ConvNeXt) is blind to a uniform scaling. Set "
            "--keep-ratio (e.g. 0.1): a budget cuts by rank while sparsifying, which the "
            f"outputs do notice; or lower --lam (e.g. {lam / 4:g})."
        )
    raise ChainxError(
        f"every filter scored below the threshold τ={settings.tau}: λ={lam:g} is "
        f"too strong for this model. Try --lam {lam / 4:g} or set --keep-ratio."
    )


def threshold_and_finetune(
    scoring: ScoringModel,
    objective: Objective,
    settings: OptimiseSettings,
    requested_lam: float,
    history: list[StepReport],
    report: Callable[[str, int, int, float, float, float], None],
    persistence: Persistence,
) -> list[torch.Tensor]:
    """What follows phase 1, from the scores as they are: the mask, then phase 2; returns
    the best multipliers seen. `settings` are the scaled ones (`region_objective`);
    `requested_lam` and `history` only word the error when nothing is kept."""
    params = scoring.learnt()
    if settings.keep_ratio is None:
        threshold(scoring, settings, requested_lam, history)
        return finetune(scoring, objective, params, settings, report).multipliers
    if not settings.gradual:
        # Fine-tune everything above τ first, then cut to the budget and fine-tune again:
        # the scores the first fine-tuning settles rank the filters better than phase 1's.
        if any(bool((m > settings.tau).any()) for m in scoring.multipliers()):
            threshold(scoring, settings, requested_lam, history)
            finetune(scoring, objective, params, settings, report)
        keep_top(scoring, settings.keep_ratio, final=True, persistence=persistence)
        return finetune(
            scoring, objective, params, settings, report, "fine-tune (budget)", FLOOR
        ).multipliers
    keep_top(scoring, settings.keep_ratio, final=True, persistence=persistence)
    return finetune(scoring, objective, params, settings, report, floor=FLOOR).multipliers
