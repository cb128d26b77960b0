"""Score optimisation on a tiny real model: sparsity, fidelity, thresholds, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import inputs_for, tiny_model

from chainx.errors import ChainxError
from chainx.optimise import OptimiseSettings, optimise
from chainx.score_points import find_score_points
from chainx.scoring import ScoringModel


def _run(settings: OptimiseSettings) -> tuple[object, np.ndarray]:
    model = tiny_model("projection")
    scoring = ScoringModel(model, find_score_points(model))
    images = inputs_for(model, count=8)
    return optimise(scoring, images, "logits", settings), images


def test_scores_become_sparse_and_the_history_is_reported() -> None:
    reports = []
    settings = OptimiseSettings(lam=5.0, steps=60, finetune_steps=10)
    model = tiny_model("projection")
    scoring = ScoringModel(model, find_score_points(model))
    result = optimise(scoring, inputs_for(model, count=8), "logits", settings, reports.append)
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert 0 < kept < total
    assert all((m >= 0).all() for m in result.multipliers.values())
    assert {r.phase for r in reports} == {"sparsify", "fine-tune"}
    assert reports[-1].phase == "fine-tune"
    assert all(0.0 <= g <= 1.0 for g in result.gates.values())


def test_keep_ratio_sets_the_budget() -> None:
    result, _ = _run(OptimiseSettings(lam=1.0, steps=20, finetune_steps=5, keep_ratio=0.25))
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert kept <= int(np.ceil(0.25 * total))


def test_same_seed_same_result_on_cpu() -> None:
    settings = OptimiseSettings(lam=20.0, steps=30, finetune_steps=5, augment=True, seed=7)
    first, _ = _run(settings)
    second, _ = _run(OptimiseSettings(**{**settings.__dict__}))
    for conv, values in first.multipliers.items():
        np.testing.assert_array_equal(values, second.multipliers[conv])


def test_a_threshold_that_removes_everything_is_explained() -> None:
    with pytest.raises(ChainxError, match="too strong"):
        _run(OptimiseSettings(lam=1.0, steps=5, finetune_steps=0, tau=1e6))
