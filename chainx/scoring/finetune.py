"""Phase 2: the kept scores fine-tuned with the mask fixed, on KL plus the margin hinge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chainx.scoring.budget import hold_floor
from chainx.scoring.frontier import ScoreState
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective
from chainx.scoring.reduced import shrunk_to_masks
from chainx.scoring.settings import OptimiseSettings

Report = Callable[[str, int, int, float, float, float], None]


@dataclass
class Tuned:
    """The best state a fine-tuning saw: its multipliers, layer gates (after the sigmoid),
    region agreement and KL."""

    multipliers: list[torch.Tensor]
    gates: torch.Tensor
    agreement: float
    kl: float
    state: ScoreState  # the scores, gate logits and masks, to go on from


def finetune(
    scoring: ScoringModel,
    objective: Objective,
    params: list[torch.Tensor],
    settings: OptimiseSettings,
    report: Report,
    phase: str = "fine-tune",
    floor: float = 0.0,
    patience: int | None = None,
    settle_at: float = 1.0,
) -> Tuned:
    """Fine-tune the kept scores, mask fixed, each kept ≥ `floor`; returns the best state
    seen (highest agreement, then lowest KL). It stops early once the region's agreement
    has been at least `settle_at` for `patience` steps running (default:
    `settings.finetune_patience`)."""
    adam = torch.optim.Adam(params, lr=settings.finetune_lr)
    best: Tuned | None = None
    settled = 0  # steps running with the whole region in agreement
    patience = settings.finetune_patience if patience is None else patience
    if floor:
        hold_floor(scoring, floor)
    with shrunk_to_masks(scoring):
        for step in range(settings.finetune_steps + 1):
            adam.zero_grad()
            loss, kl, agree = objective.step(
                hinge=settings.hinge, margin=settings.margin, hold=settings.hold_margin
            )
            if objective.views:
                # Judged on the region, not on this step's random views.
                kl, agree = objective.evaluate()
            if best is None or (agree, -kl) > (best.agreement, -best.kl):
                multipliers = [m.detach().clone() for m in scoring.multipliers()]
                gates = torch.sigmoid(scoring.gates).detach().clone()
                best = Tuned(multipliers, gates, agree, kl, ScoreState.of(scoring, step))
            settled = settled + 1 if agree >= settle_at - 1e-9 else 0
            if step == settings.finetune_steps or (patience is not None and settled > patience):
                break
            adam.step()
            with torch.no_grad():
                for score in scoring.scores:
                    score.clamp_(min=0.0)
            if floor:
                hold_floor(scoring, floor)
            report(phase, step + 1, settings.finetune_steps, loss, kl, agree)
    return best
