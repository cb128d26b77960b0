"""The default budget: the sparsest chain that still keeps the region.

Why a search: the size at which a chain stops reproducing its region differs by model and
region (about a twentieth of ResNet-20's and of EfficientNet-Lite0's filters, a tenth of
the MNIST sample's), so a fixed --keep-ratio or τ suits some and not others.
Sparsification records its state where the score path crosses each budget of GRID
(`FrontierRecorder`). The search starts at the last budget the path crossed (the KL guard
stops the path near the region's limit): each candidate is cut to exactly its budget and
fine-tuned, as the frontier's cuts are, and holds if the fine-tuned chain agrees with the
original on at least `min_agreement` of the region. Denser budgets follow until one
holds, then sparser ones, each cut from the last chain that held, until one fails; then it
bisects between the two, so the answer is not limited to the grid. Where even half the
filters fail, the filters above τ are the last candidate, as --tau keeps them.

Pruning in steps, each repaired by fine-tuning, holds where one deep cut breaks the
network: Lite0 cut from a quarter of its filters to 5 % in one step kept none of its 20
images, and in five steps 19. Cut straight from the path's end instead of from the
fine-tuned chain at its budget, one step further already lost the region there (18/20).
One optimisation, then a handful of fine-tunings, each stopped once the region has
agreed for PATIENCE steps.

Why the first candidate chooses the fine-tuning's step size: Adam moves every kept score by
about the learning rate each step, and how large a step a chain bears differs by model. On
EfficientNet-Lite0 (49 layers, no normalisation) fine-tuning at 0.05 often never bettered
the cut itself (its best state was step 0), so the next, deeper cut started from an
unrepaired chain and failed: the chain then depended on rounding (1,607 filters at one
thread, 733 at two). At a fifth of it the first cut was repaired and the walk went on (525
and 619). On ResNet-20 and the MNIST sample the fifth repaired less and the chains grew by
7–24 filters. So the first candidate is fine-tuned at both, and the one that keeps more of
the region (then the lower KL) sets the step for the rest. Where neither betters the cut
they tie, and --finetune-lr is kept: on the unseen EfficientNet-Lite1 that stopped one
region at 90.5 % removed (docs/method.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from chainx.scoring.budget import FLOOR, Persistence, keep_top
from chainx.scoring.finetune import Report, Tuned, finetune
from chainx.scoring.frontier import FrontierRecorder
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective
from chainx.scoring.settings import BudgetTrial, OptimiseSettings, StepSizeTrial

# Budgets the path is recorded at, each about 0.7 of the one before.
GRID = (
    0.5,
    0.35,
    0.25,
    0.18,
    0.13,
    0.09,
    0.065,
    0.045,
    0.032,
    0.023,
    0.016,
    0.011,
    0.008,
    0.0055,
    0.004,
)
REFINEMENTS = 2  # bisections between the grid budgets that held and failed
PATIENCE = 10  # a candidate's fine-tuning stops once the region agreed this many steps
FINER_STEP = 5  # the first candidate is also fine-tuned at --finetune-lr / FINER_STEP


@dataclass
class Search:
    """What the search found: the chain's fine-tuned state, every budget tried, which of
    them is the chain, and why."""

    tuned: Tuned
    trials: list[BudgetTrial]
    chosen: int
    reason: str
    holds: bool
    finetune_lr: float  # the step size every candidate after the first was fine-tuned at
    step_sizes: list[StepSizeTrial]  # the first candidate's fine-tunings, one per step size


def smallest_holding(
    scoring: ScoringModel,
    objective: Objective,
    settings: OptimiseSettings,
    recorder: FrontierRecorder,
    persistence: Persistence,
    report: Report,
    step_sizes: tuple[float, ...] | None = None,
) -> Search:
    """The sparsest budget whose fine-tuned chain keeps `settings.min_agreement` of the
    region; where none does, the one that keeps the most (the sparsest among ties). The
    first candidate chooses among `step_sizes` (default: --finetune-lr and a FINER_STEP-th
    of it)."""
    wanted = settings.min_agreement if settings.min_agreement is not None else 1.0
    params = scoring.learnt()
    trials: list[BudgetTrial] = []
    tuned: dict[float, Tuned] = {}
    steps = list(step_sizes or (settings.finetune_lr, settings.finetune_lr / FINER_STEP))
    step_trials: list[StepSizeTrial] = []

    def holds(budget: float, start: Tuned | None = None, tau: bool = False) -> bool:
        """Cut to `budget` from the path (or from the chain `start`) and fine-tune; with
        `tau`, keep the path's last state's filters above τ instead."""
        state, source = (start.state, "held") if start else recorder.start_of(budget)
        if tau:
            state, source = recorder.start_of(0.0)[0], "τ"
        results: list[tuple[float, Tuned]] = []
        for lr in steps:
            state.restore(scoring)
            if tau:
                with torch.no_grad():
                    scoring.masks = [m > settings.tau for m in scoring.multipliers()]
            else:
                keep_top(scoring, budget, final=True, persistence=persistence)
            phase = f"budget {budget:.3g}" + (f" lr {lr:g}" if len(steps) > 1 else "")
            at = replace(settings, finetune_lr=lr)
            result = finetune(
                scoring, objective, params, at, report, phase, FLOOR, PATIENCE, wanted
            )
            results.append((lr, result))
        lr, result = max(results, key=lambda r: (r[1].agreement, -r[1].kl))
        if len(steps) > 1:
            step_trials.extend(StepSizeTrial(size, t.agreement, t.kl) for size, t in results)
        steps[:] = [lr]  # the first candidate's choice holds for the rest
        tuned[budget] = result
        filters = int(sum(int((m != 0).sum()) for m in result.multipliers))
        step = start.state.step if start else state.step
        trials.append(BudgetTrial(budget, filters, result.agreement, result.kl, source, step))
        return result.agreement >= wanted - 1e-9

    # From where the path ended: denser until a budget holds, then sparser, each cut from
    # the last chain that held, until one fails.
    reached = [i for i, budget in enumerate(GRID) if budget in recorder.crossed]
    index = reached[-1] if reached else 0
    held, failed = None, None
    while index >= 0 and held is None:
        if holds(GRID[index]):
            held = GRID[index]
        else:
            index -= 1
    # A budget that failed as a cut from the path may hold as a cut from the chain that
    # held, repaired by its fine-tuning: the path rides the KL guard, its states are rough.
    while held is not None and failed is None and index + 1 < len(GRID):
        index += 1
        if holds(GRID[index], tuned[held]):
            held = GRID[index]
        else:
            failed = GRID[index]
    if held is None:  # every grid budget failed: the filters above τ, as --tau keeps them
        recorder.start_of(0.0)[0].restore(scoring)  # the path's last state
        with torch.no_grad():
            kept = sum(int((m > settings.tau).sum()) for m in scoring.multipliers())
        if kept:
            holds(kept / sum(scoring.channels), tau=True)
    for _ in range(REFINEMENTS if held is not None and failed is not None else 0):
        middle = math.sqrt(held * failed)
        if holds(middle, tuned[held]):
            held = middle
        else:
            failed = middle
    passing = [t for t in trials if t.agreement >= wanted - 1e-9]
    if passing:
        best = min(passing, key=lambda t: (t.filters, t.keep_ratio))
        reason = (
            f"the sparsest budget tried whose fine-tuned chain keeps ≥ {wanted:.0%} of the "
            f"region's top-1s ({best.agreement:.0%})"
        )
    else:
        best = max(trials, key=lambda t: (t.agreement, -t.filters))
        reason = (
            f"no budget tried kept {wanted:.0%} of the region's top-1s; this one keeps the "
            f"most ({best.agreement:.0%})"
        )
    reason += f"; fine-tuned at step size {steps[0]:g}, chosen on the first budget tried"
    chosen = trials.index(best)
    return Search(
        tuned[best.keep_ratio], trials, chosen, reason, bool(passing), steps[0], step_trials
    )
