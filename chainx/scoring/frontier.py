"""The fidelity–sparsity frontier from one optimisation: where the score path crosses each
budget, the state is kept, to be cut to exactly that budget and fine-tuned afterwards.

Why cut on the path: the scores at the step where the path first keeps no more than a
budget are the optimiser's own answer at that size, found under the λ that produced it. A
budget the path never reaches (smaller than what sparsification ends with) is cut from the
final scores instead, by rank; each cut records which (`source`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chainx.scoring.model import ScoringModel


@dataclass
class ScoreState:
    scores: list[torch.Tensor]
    gates: torch.Tensor
    masks: list[torch.Tensor]
    step: int

    @classmethod
    def of(cls, scoring: ScoringModel, step: int) -> ScoreState:
        with torch.no_grad():
            return cls(
                [s.detach().clone() for s in scoring.scores],
                scoring.gates.detach().clone(),
                [m.clone() for m in scoring.masks],
                step,
            )

    def restore(self, scoring: ScoringModel) -> None:
        with torch.no_grad():
            for score, value in zip(scoring.scores, self.scores, strict=True):
                score.copy_(value)
            scoring.gates.copy_(self.gates)
        scoring.masks = [m.clone() for m in self.masks]


class FrontierRecorder:
    """Watches phase 1 and keeps the state at each budget's crossing."""

    def __init__(self, scoring: ScoringModel, budgets: tuple[float, ...], tau: float) -> None:
        self.scoring = scoring
        self.budgets = sorted(set(budgets), reverse=True)
        self.tau = tau
        self.total = sum(point.channels for point in scoring.points)
        self.crossed: dict[float, ScoreState] = {}
        self.last: ScoreState | None = None

    def observe(self, step: int) -> None:
        """After a phase-1 step: keep the state for every budget the path now meets."""
        waiting = [b for b in self.budgets if b not in self.crossed]
        if not waiting:
            return
        with torch.no_grad():
            kept = int(sum((m > self.tau).sum() for m in self.scoring.multipliers()))
        for budget in waiting:
            if kept <= budget * self.total:
                self.crossed[budget] = ScoreState.of(self.scoring, step)

    def finish(self, step: int) -> None:
        """At the end of phase 1: the state from which unreached budgets are cut."""
        self.last = ScoreState.of(self.scoring, step)

    def start_of(self, budget: float) -> tuple[ScoreState, str]:
        """The state to cut `budget` from: the path's at its crossing; for a budget the path
        passed between two recorded crossings, the path's at the larger one (the nearest
        denser state); for one the path never reached, the final one."""
        passed = any(b <= budget for b in self.crossed)
        denser = [b for b in self.crossed if b >= budget]
        if passed and denser:
            return self.crossed[min(denser)], "path"
        assert self.last is not None, "finish() runs before the cuts"
        return self.last, "final"
