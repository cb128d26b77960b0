"""Score optimisation on a tiny real model: sparsity, fidelity, thresholds, reproducibility."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
from conftest import SAMPLE_MODEL, SAMPLE_REGION

from chainx.errors import ChainxError
from chainx.images import load_images, make_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import OptimiseSettings, optimise, sparsify

MODEL = normalise(load_model(SAMPLE_MODEL))
IMAGES = load_images(SAMPLE_REGION, make_preprocessing([None, 1, 28, 28], None, 28, None, None))


def _run(settings: OptimiseSettings, on_step: object = None) -> tuple[object, np.ndarray]:
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    if on_step is None:
        return optimise(scoring, IMAGES.array, "logits", settings), IMAGES.array
    return optimise(scoring, IMAGES.array, "logits", settings, on_step), IMAGES.array


def test_scores_become_sparse_and_the_history_is_reported() -> None:
    reports = []
    result, _ = _run(OptimiseSettings(steps=100, finetune_steps=20), reports.append)
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert 0 < kept < total
    assert all((m >= 0).all() for m in result.multipliers.values())
    assert {r.phase for r in reports} == {"sparsify", "fine-tune"}
    assert reports[-1].phase == "fine-tune"
    assert all(0.0 <= g <= 1.0 for g in result.gates.values())


def test_keep_ratio_sets_the_budget() -> None:
    result, _ = _run(OptimiseSettings(lam=3.0, steps=20, finetune_steps=5, keep_ratio=0.25))
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert kept <= int(np.ceil(0.25 * total))


def test_same_seed_same_result_on_cpu() -> None:
    settings = OptimiseSettings(lam=30.0, steps=30, finetune_steps=5, augment=True, seed=7)
    first, _ = _run(settings)
    second, _ = _run(OptimiseSettings(**{**settings.__dict__}))
    for conv, values in first.multipliers.items():
        np.testing.assert_array_equal(values, second.multipliers[conv])


def test_a_threshold_that_removes_everything_is_explained() -> None:
    with pytest.raises(ChainxError, match="too strong"):
        _run(OptimiseSettings(lam=3.0, steps=5, finetune_steps=0, tau=1e6))


def test_a_cut_after_fine_tuning_meets_the_budget() -> None:
    reports = []
    settings = OptimiseSettings(
        lam=30.0, steps=40, finetune_steps=10, tau=0.0, keep_ratio=0.1, gradual=False
    )
    result, _ = _run(settings, reports.append)
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert 0 < kept <= int(np.ceil(0.1 * total))
    assert [p for p in dict.fromkeys(r.phase for r in reports)] == [
        "sparsify",
        "fine-tune",
        "fine-tune (budget)",
    ]


def test_sparsification_stops_near_the_budget_and_fine_tuning_once_settled() -> None:
    reports = []
    settings = OptimiseSettings(
        lam=30.0,
        steps=200,
        finetune_steps=60,
        tau=0.0,
        keep_ratio=0.15,  # at 0.1 the region holds 19/20 at best: nothing settles early
        gradual=False,
        sparsify_until=3.0,
        finetune_patience=5,
    )
    result, _ = _run(settings, reports.append)
    total = sum(len(m) for m in result.multipliers.values())
    enough = 3 * int(np.ceil(0.15 * total))
    sparsify = [r for r in reports if r.phase == "sparsify"]
    # It stops at the first step at or under three budgets, long before its 200 steps.
    assert sparsify[-1].kept <= enough < min(r.kept for r in sparsify[:-1])
    assert result.steps == len(sparsify) < 200
    for phase in ("fine-tune", "fine-tune (budget)"):
        agreement = [r.agreement for r in reports if r.phase == phase]
        settled = [a == 1.0 for a in agreement[-5:]]
        # Either five full agreements ended it early, or it ran its 60 steps without them.
        assert (len(agreement) < 60 and all(settled)) or len(agreement) == 60
    assert result.finetune_steps == sum(r.phase.startswith("fine-tune") for r in reports) < 120


@pytest.mark.parametrize(("hold", "active"), [(0.5, False), (2.0, True)])
def test_the_hinge_holds_a_fraction_of_each_original_margin(hold: float, active: bool) -> None:
    from chainx.scoring.objective import Objective

    scoring = ScoringModel(MODEL, find_score_points(MODEL))  # every multiplier starts at 1
    objective = Objective(scoring, torch.from_numpy(IMAGES.array), "logits", 32, False, 0)
    # Unscored, the chain is the original: its margin is the original margin, so holding
    # half of it costs nothing, while asking for twice as much does.
    loss, kl, agree = objective.step(hinge=1.0, margin=100.0, hold=hold)
    assert agree == 1.0 and kl == pytest.approx(0.0, abs=1e-6)
    assert (loss > 1e-3) == active


def test_nan_during_optimisation_stops_with_a_clear_message() -> None:
    images = IMAGES.array.copy()
    images[0, 0, 0, 0] = np.nan  # as a model that overflows would produce
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    with pytest.raises(ChainxError, match="NaN or Inf"):
        optimise(scoring, images, "logits", OptimiseSettings(steps=3, finetune_steps=0))


def test_finetune_selection_keeps_the_selection_and_fits_its_scores() -> None:
    from chainx.chain.verify import log_softmax
    from chainx.scoring.optimise import finetune_selection

    points = find_score_points(MODEL)
    scoring = ScoringModel(MODEL, points)
    rng = np.random.default_rng(0)
    selection = {p.layer: (rng.random(p.channels) < 0.5).astype(np.float32) for p in points}
    tuned = finetune_selection(
        scoring, IMAGES.array, "logits", OptimiseSettings(finetune_steps=30), selection
    )
    for p in points:
        assert not tuned[p.layer][selection[p.layer] == 0].any()
    original = log_softmax(
        scoring.masked(IMAGES.array, {p.layer: np.ones(p.channels) for p in points}), "logits"
    )

    def kl(multipliers: dict[str, np.ndarray]) -> float:
        log_q = log_softmax(scoring.masked(IMAGES.array, multipliers), "logits")
        return float((np.exp(original) * (original - log_q)).sum(1).mean())

    assert kl(tuned) < kl(selection)


def _with_head_scaled(factor: float) -> object:
    """The sample with its classifier's weights and bias times `factor`: outputs that move
    with the filters by `factor`² as many nats, as an untrained network's do."""
    from onnx import numpy_helper

    model = type(MODEL)()
    model.CopyFrom(MODEL)
    for tensor in model.graph.initializer:
        if tensor.name in ("linear.weight", "linear.bias"):
            tensor.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor) * factor, tensor.name)
            )
    return model


def test_the_region_signal_is_the_kl_of_the_network_with_every_filter_off() -> None:
    import torch

    from chainx.scoring.objective import Objective, region_signal

    signals = []
    for factor in (1.0, 0.03, 0.0):
        model = _with_head_scaled(factor)
        scoring = ScoringModel(model, find_score_points(model))
        objective = Objective(scoring, torch.from_numpy(IMAGES.array), "logits", 32, False, 0)
        signals.append(region_signal(objective))
    assert signals[0] > 1.0  # a trained 10-class network: about ln 10
    assert 1e-5 < signals[1] < signals[0] / 50  # logits 33× smaller: far fewer nats
    assert signals[2] == 0.0  # the head ignores its input


def test_weak_outputs_give_a_chain_not_a_collapse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scaled to the region's signal, λ removes filters on a weak-output network as on a
    trained one; unscaled, the L1 outweighs every KL step and all scores fall to 0."""
    import chainx.scoring.optimise as optimise_module

    model = _with_head_scaled(0.03)
    settings = OptimiseSettings(steps=100, finetune_steps=10)
    result = optimise(
        ScoringModel(model, find_score_points(model)), IMAGES.array, "logits", settings
    )
    total = sum(len(m) for m in result.multipliers.values())
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert 0 < kept < total
    assert result.signal is not None and result.signal < 0.05

    monkeypatch.setattr(optimise_module, "STRONG_SIGNAL", 1e-9)  # no scaling
    with pytest.raises(ChainxError, match=r"at once \(168 of 168 were kept the step before\)"):
        optimise(ScoringModel(model, find_score_points(model)), IMAGES.array, "logits", settings)


def test_outputs_that_ignore_the_filters_are_refused_with_a_reason() -> None:
    model = _with_head_scaled(0.0)
    scoring = ScoringModel(model, find_score_points(model))
    with pytest.raises(ChainxError, match="do not depend on its filters"):
        optimise(scoring, IMAGES.array, "logits", OptimiseSettings(steps=5, finetune_steps=0))


def test_views_are_new_each_step_with_the_original_on_the_same_views_as_targets() -> None:
    import torch

    from chainx.scoring.objective import Objective

    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    region = torch.from_numpy(IMAGES.array)
    objective = Objective(scoring, region, "logits", 32, False, 0, views=4)
    first, second = objective.batches(False), objective.batches(False)
    views = torch.cat([batch for batch, _ in first])
    assert len(views) == 5 * len(region)
    torch.testing.assert_close(views[: len(region)], region)  # the region, then its views
    assert not torch.equal(views, torch.cat([batch for batch, _ in second]))
    for batch, target in first:
        expected = torch.log_softmax(scoring.unscored(batch), -1)
        torch.testing.assert_close(target, expected)


def test_with_views_the_chain_is_the_best_fine_tuning_step_on_the_region_itself() -> None:
    from chainx.chain.verify import log_softmax

    reports = []
    settings = OptimiseSettings(steps=40, finetune_steps=15, views=2, keep_ratio=0.2)
    result, images = _run(settings, reports.append)
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    ones = {p.layer: np.ones(p.channels) for p in scoring.points}
    original = log_softmax(scoring.masked(images, ones), "logits").argmax(1)
    chain = log_softmax(scoring.masked(images, result.multipliers), "logits").argmax(1)
    tuned = [r.agreement for r in reports if r.phase == "fine-tune"]
    assert float((chain == original).mean()) >= max(tuned)


def test_the_scoring_model_starts_as_the_original() -> None:
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    for multiplier in scoring.multipliers():
        np.testing.assert_allclose(multiplier.detach().numpy(), 1.0, rtol=1e-6)
    x = torch.from_numpy(IMAGES.array)
    with torch.no_grad():
        start, original = scoring(x).numpy(), scoring.unscored(x).numpy()
    np.testing.assert_allclose(start, original, rtol=1e-5, atol=1e-5 * np.abs(original).max())


def test_the_kl_guard_switches_the_l1_off_on_every_step_over_its_budget() -> None:
    # A budget every step exceeds once the first L1 step has moved the scores: each step
    # after one over the budget has no L1 in its loss, and no filter is pulled out.
    reports = []
    settings = OptimiseSettings(steps=30, finetune_steps=0, kl_budget=1e-12)
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    sparsify(scoring, IMAGES.array, "logits", settings, reports.append)
    after_over = [now for before, now in pairwise(reports) if before.kl > 1e-12]
    assert len(after_over) >= 25
    assert all(r.loss == pytest.approx(r.kl, rel=1e-6, abs=1e-9) for r in after_over)
    assert reports[0].loss > reports[0].kl  # the first step, from the original, pulled
    assert reports[-1].kept == sum(p.channels for p in scoring.points)
