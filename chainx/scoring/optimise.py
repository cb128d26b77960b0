"""NeuroChains score optimisation: sparse scores that keep the region's outputs.

Phase 1 minimises KL(p_original ‖ p_scored) + λ·mean|score| with Adam under a cosine
schedule, scores kept non-negative; the layer gates learn from the KL. λ grows
geometrically over the phase (continuation), and a KL guard switches the L1 off for each
step the KL exceeds a budget. The scores are then thresholded (by τ, or to a budget reached
gradually), and phase 2 fine-tunes the surviving scores with the mask fixed, adding a
hinge on the original top-1 class's margin so that the chain keeps the original
predictions.

Why continuation: Adam gives every score a unit-size step. At the start the KL gradient is
zero, so under a strong L1 all scores fall together; a deep network without normalisation
(EfficientNet-Lite0: 49 convs, BN folded) then collapses before the KL can tell filters
apart, and dead ReLUs stop it from recovering. A mild λ first separates the filters (about
70% removed at full agreement there), and the growing λ then removes the rest.

Why a guard without memory: it used to scale λ by 0.7 for every step over the budget and
by 1.05 for every step under it, so one drift cost about 7 steps of recovery and a burst
(λ down to 10⁻³) about 140, while the cosine schedule took the step size away. On
EfficientNet-Lite0 and an ants/bees region, phase 1 then ended at 24 % of the filters
(5,039 kept); switched off only while the KL is over the budget, the path rides the budget
down to 10 % (2,097) in the same 300 steps, and the chain found from it kept 2 % (19/20)
where it had kept 13 %.

Why scale to the region's signal: λ and the KL budget are in nats of a trained classifier,
which loses about ln(classes) nats with every filter off. Where the outputs move by far less
(untrained weights, near-uniform outputs), every L1 step outweighs the KL it costs, and all
filters fall together at any λ (docs/method.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from chainx.errors import ChainxError
from chainx.scoring.auto_budget import GRID, smallest_holding
from chainx.scoring.budget import (
    FLOOR,
    Persistence,
    enough_to_cut,
    gradual_keep,
    keep_top,
)
from chainx.scoring.compiled import compile_if_worth
from chainx.scoring.finetune import Report, finetune
from chainx.scoring.frontier import FrontierRecorder
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective, region_signal
from chainx.scoring.settings import FrontierCut, OptimiseResult, OptimiseSettings, StepReport
from chainx.scoring.threshold import threshold_and_finetune

# Nats by which the region's outputs change with every filter off (`region_signal`).
SILENT_SIGNAL = 1e-5  # below: nothing to explain
STRONG_SIGNAL = 1.0  # below: λ, the KL budget and the margin scale down with the signal


def _kept(scoring: ScoringModel, tau: float) -> int:
    with torch.no_grad():
        return int(sum((m > tau).sum() for m in scoring.multipliers()))


def region_objective(
    scoring: ScoringModel, images: np.ndarray, kind: str, settings: OptimiseSettings
) -> tuple[Objective, OptimiseSettings, float]:
    """The scoring model on the settings' device, the region's objective there, the
    settings scaled to the region's signal (`scaled_to_signal`), and that signal."""
    device = torch.device(settings.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # shrinking scores make denormals, 3x slower steps
    scoring.to(device)
    objective = Objective(
        scoring,
        torch.from_numpy(images).to(device),
        kind,
        settings.batch_size,
        settings.augment,
        settings.seed,
        settings.views,
        settings.temperature,
        settings.class_weight,
    )
    signal = region_signal(objective)
    return objective, scaled_to_signal(settings, signal, len(images)), signal


def scaled_to_signal(settings: OptimiseSettings, signal: float, images: int) -> OptimiseSettings:
    """The settings for a region whose outputs carry `signal` nats (`region_signal`).

    Why: λ, the KL budget and the margin are in nats of a trained classifier's outputs. Where
    the filters move the outputs by less than STRONG_SIGNAL (an untrained network, near-
    uniform outputs), every L1 step outweighs the KL it costs and all filters fall together;
    scaled by the signal, the trade-off is the same as on a trained network. No signal at
    all leaves nothing to explain.
    """
    if signal < SILENT_SIGNAL:
        raise ChainxError(
            f"the model's outputs on the {images} region images do not depend on its filters: "
            f"with every filter removed they change by {signal:.1e} nats (KL), so there is "
            "nothing to explain. Untrained weights often answer the same for every input. "
            "Check that the model holds trained weights and that the images are preprocessed "
            "as it expects (--mean/--std)."
        )
    scale = min(1.0, signal / STRONG_SIGNAL)
    if scale == 1.0:
        return settings
    budget = settings.kl_budget * scale if settings.kl_budget is not None else None
    return replace(
        settings, lam=settings.lam * scale, kl_budget=budget, margin=settings.margin * scale
    )


@dataclass
class Sparsified:
    """Phase 1's outcome: what the chain and the frontier's cuts are then chosen from."""

    objective: Objective
    settings: OptimiseSettings  # scaled to the region's signal
    requested_lam: float
    signal: float
    recorder: FrontierRecorder | None
    persistence: Persistence
    steps: int
    compiled: str
    history: list[StepReport]
    report: Report
    frontier: tuple[float, ...]
    started: float


def optimise(
    scoring: ScoringModel,
    images: np.ndarray,
    kind: str,
    settings: OptimiseSettings,
    on_step: Callable[[StepReport], None] = lambda report: None,
    frontier: tuple[float, ...] = (),
) -> OptimiseResult:
    """Phase 1 (sparsify), then the chain: by default the search for the sparsest budget
    that keeps the region (`auto_budget`); with --keep-ratio or --tau, that threshold and
    phase 2 (fine-tune). Returns the chain's multipliers.

    With `frontier` (fractions of filters kept), the same run also yields one fine-tuned
    cut per budget (`OptimiseResult.frontier`), after the chain itself, which stays the
    same as without it.
    """
    return conclude(scoring, sparsify(scoring, images, kind, settings, on_step, frontier))


def _searching(settings: OptimiseSettings) -> bool:
    """Whether the chain's budget is the default search's (no --keep-ratio or --tau)."""
    return settings.min_agreement is not None and settings.keep_ratio is None


def sparsify(
    scoring: ScoringModel,
    images: np.ndarray,
    kind: str,
    settings: OptimiseSettings,
    on_step: Callable[[StepReport], None] = lambda report: None,
    frontier: tuple[float, ...] = (),
) -> Sparsified:
    """Phase 1: the score path, with the states the budgets are later cut from."""
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    requested_lam = settings.lam
    objective, settings, signal = region_objective(scoring, images, kind, settings)
    history: list[StepReport] = []

    def report(phase: str, step: int, total: int, loss: float, kl: float, agree: float) -> None:
        entry = StepReport(phase, step, total, loss, kl, _kept(scoring, settings.tau), agree)
        history.append(entry)
        on_step(entry)

    params = scoring.learnt()
    recorded = (*frontier, *(GRID if _searching(settings) else ()))
    recorder = FrontierRecorder(scoring, recorded, settings.tau) if recorded else None
    adam = torch.optim.Adam(params, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(adam, max(settings.steps, 1))
    stable, previous, steps, strength = 0, None, 0, 1.0
    enough = enough_to_cut(scoring, settings)
    persistence = Persistence(scoring)
    compiled, step_started = "eager", time.perf_counter()
    for step in range(settings.steps):
        if step == 2:  # the first step warms up; the second is a typical one
            step_s, kept = time.perf_counter() - step_started, _kept(scoring, settings.tau)
            compiled = compile_if_worth(scoring, objective, settings, step_s, kept, on_step)
        step_started = time.perf_counter()
        adam.zero_grad()
        # Continuation: λ grows geometrically, so the filters separate while the
        # pressure is mild and the tail goes once the important ones are established.
        lam = settings.lam * settings.lam_growth ** (step / settings.steps) * strength
        loss, kl, agree = objective.step(
            lam,
            augment=True,
            hinge=settings.hinge if settings.hold_margin is not None else 0.0,
            margin=settings.margin,
            hold=settings.hold_margin,
        )
        if settings.kl_budget is not None:
            # The KL guard: no L1 pull while the region's outputs drift; the next step below
            # the budget pulls at full strength again.
            strength = 0.0 if kl > settings.kl_budget else 1.0
        adam.step()
        schedule.step()
        with torch.no_grad():
            for score in scoring.scores:
                score.clamp_(min=0.0)
        steps = step + 1
        if settings.keep_ratio is not None and settings.gradual:
            keep_top(scoring, gradual_keep(steps, settings.steps, settings.keep_ratio))
        persistence.observe()
        report("sparsify", steps, settings.steps, loss, kl, agree)
        if history[-1].kept <= enough:
            break
        if recorder is not None:
            recorder.observe(steps)
        with torch.no_grad():
            mask = torch.cat([m > settings.tau for m in scoring.multipliers()])
        stable = stable + 1 if previous is not None and torch.equal(mask, previous) else 0
        previous = mask
        if stable >= settings.patience and steps >= 0.7 * settings.steps:
            break

    if recorder is not None:
        recorder.finish(steps)
    return Sparsified(
        objective,
        settings,
        requested_lam,
        signal,
        recorder,
        persistence,
        steps,
        compiled,
        history,
        report,
        frontier,
        started,
    )


def conclude(scoring: ScoringModel, phase1: Sparsified) -> OptimiseResult:
    """After phase 1: the chain (the default search's budget, or --keep-ratio's or τ's,
    fine-tuned), then the frontier's cuts."""
    objective, settings, report = phase1.objective, phase1.settings, phase1.report
    search = None
    if _searching(settings):
        search = smallest_holding(
            scoring, objective, settings, phase1.recorder, phase1.persistence, report
        )
        final, gates = search.tuned.multipliers, search.tuned.gates.cpu().numpy()
        settings = replace(settings, finetune_lr=search.finetune_lr)  # the frontier's too
    else:
        final = threshold_and_finetune(
            scoring,
            objective,
            settings,
            phase1.requested_lam,
            phase1.history,
            report,
            phase1.persistence,
        )
        gates = torch.sigmoid(scoring.gates).detach().cpu().numpy()
    multipliers = as_arrays(scoring, final)
    params = scoring.learnt()
    cuts = _frontier_cuts(
        scoring,
        objective,
        params,
        settings,
        phase1.recorder,
        phase1.frontier,
        report,
        phase1.persistence,
    )
    history = phase1.history
    return OptimiseResult(
        multipliers=multipliers,
        gates={point.layer: float(g) for point, g in zip(scoring.points, gates, strict=True)},
        steps=phase1.steps,
        finetune_steps=sum(r.phase.startswith(("fine-tune", "budget")) for r in history),
        seconds=time.perf_counter() - phase1.started,
        history=history,
        frontier=cuts,
        signal=phase1.signal,
        output_scale=objective.scale,
        compiled=phase1.compiled,
        budgets=search.trials if search else [],
        chosen=search.chosen if search else None,
        budget_reason=search.reason if search else "",
        finetune_lr=settings.finetune_lr,  # the search's choice where it ran
        step_sizes=search.step_sizes if search else [],
    )


def as_arrays(scoring: ScoringModel, values: list[torch.Tensor]) -> dict[str, np.ndarray]:
    return {
        point.layer: m.detach().cpu().numpy().astype(np.float32)
        for point, m in zip(scoring.points, values, strict=True)
    }


def _frontier_cuts(
    scoring: ScoringModel,
    objective: Objective,
    params: list[torch.Tensor],
    settings: OptimiseSettings,
    recorder: FrontierRecorder | None,
    budgets: tuple[float, ...],
    report: Callable[[str, int, int, float, float, float], None],
    persistence: Persistence,
) -> list[FrontierCut]:
    """Each budget cut from its state on the score path (or the final one), exactly to
    the budget, then fine-tuned as the chain is."""
    cuts = []
    for budget in sorted(set(budgets), reverse=True) if recorder is not None else []:
        state, source = recorder.start_of(budget)
        state.restore(scoring)
        keep_top(scoring, budget, final=True, persistence=persistence)
        phase = f"keep {budget:g}"
        final = finetune(scoring, objective, params, settings, report, phase, FLOOR).multipliers
        cuts.append(FrontierCut(budget, as_arrays(scoring, final), source, state.step))
    return cuts


def finetune_selection(
    scoring: ScoringModel,
    images: np.ndarray,
    kind: str,
    settings: OptimiseSettings,
    selection: dict[str, np.ndarray],
    min_score: float = 0.0,
) -> dict[str, np.ndarray]:
    """Fine-tune the scores and gates of a fixed selection of filters, from multipliers of 1,
    as phase 2 fine-tunes NeuroChains' own; a baseline given this differs from the chain only
    in which filters it keeps.

    Scores are kept ≥ 0, so some can reach 0 and drop their filter (fine-tuned baselines
    kept 28–31 of NeuroChains' 40 filters on ResNet-20). With `min_score` > 0 the selected
    scores are kept ≥ `min_score` instead: every selected filter stays in the chain, so all
    methods are compared at the same physical size.
    """
    # The margin scaled to the region's signal, as NeuroChains' own fine-tuning used it.
    objective, settings, _ = region_objective(scoring, images, kind, settings)
    kept = [torch.from_numpy(selection[p.layer] != 0).to(settings.device) for p in scoring.points]
    with torch.no_grad():
        for score, mask in zip(scoring.scores, kept, strict=True):
            score.copy_(mask.to(score.dtype) * scoring.unit_score)
        scoring.gates.fill_(scoring.gate_init)
    scoring.masks = kept
    params = scoring.learnt()
    final = finetune(scoring, objective, params, settings, _quiet, floor=min_score).multipliers
    return as_arrays(scoring, final)


def _quiet(*report: object) -> None:
    """No progress to report (a baseline's fine-tuning)."""
