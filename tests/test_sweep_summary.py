"""The sweep summary on hand-built trial records: frontier tables with confidence intervals,
the area under the frontier, paired tests, stability, the frontier plot, and old records."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from chainx.sweep.plan import CHAIN
from chainx.sweep.summary import SUMMARY_FILES, summarise, summary_markdown, write_summary

T_975_3 = 3.182446  # Student t, 97.5 % quantile, 3 degrees of freedom (from a table)
RATIOS = [0.2, 0.1, 0.05]
# Holdout class agreement per trial (rows) at keep ratios 0.2, 0.1, 0.05 (columns).
CLASS_AGREEMENT = {
    CHAIN: [[0.9, 0.8, 0.6], [0.8, 0.7, 0.5], [0.9, 0.9, 0.7], [0.8, 0.6, 0.6]],
    "random": [[0.7, 0.5, 0.5], [0.8, 0.6, 0.5], [0.6, 0.5, 0.5], [0.9, 0.4, 0.4]],
}
REMOVED = {CHAIN: [0.8, 0.9, 0.95], "random": [0.82, 0.91, 0.97]}
CHANCE = [0.5, 0.55, 0.6, 0.5]


def fidelity(agreement: float, class_agreement: float, chance: float) -> dict[str, Any]:
    """A fidelity_metrics dict; the confident half agrees a little more, by construction."""
    return {
        "images": 20,
        "agreement": agreement,
        "class_agreement": class_agreement,
        "folder_class_agreement": None,
        "mean_kl": 2 * (1 - class_agreement),
        "margin_retention": class_agreement - 0.5,
        "accuracy": None,
        "confident": {"images": 10, "agreement": agreement, "class_agreement": 1.0},
        "borderline": {"images": 10, "agreement": agreement, "class_agreement": 0.5},
        "chance": {"class_agreement": chance, "folder_class_agreement": None},
    }


def method_entry(method: str, trial: int, frontier: bool) -> dict[str, Any]:
    """The per-method fields of today's records, with the frontier when asked."""
    agreement = CLASS_AGREEMENT[method][trial]
    entry: dict[str, Any] = {
        "filters_total": 100,
        "filters_kept": 10 + trial,
        "filters_removed_fraction": 0.9 - 0.01 * trial,
        "layers_kept": 3,
        "layer_filters": [5, 5 + trial, 0],
        "scores_finetuned": method == CHAIN,
        "verified": True,
        "region": {"images": 20, "agreement": 1.0, "class_agreement": 1.0, "mean_kl": 0.1},
        "holdout": {
            "images": 40,
            "agreement": agreement[1] - 0.1,
            "class_agreement": agreement[1],
            "mean_kl": 1.0,
        },
        "accuracy": {"region": 0.9, "holdout": 0.7},
    }
    if frontier:
        entry["frontier"] = [
            {
                "keep_ratio": ratio,
                "filters_kept": round(100 * (1 - removed)),
                "filters_removed_fraction": removed,
                "verified": True,
                "region": fidelity(1.0, 1.0, 0.5),
                "holdout": fidelity(value - 0.1, value, CHANCE[trial]),
            }
            for ratio, removed, value in zip(RATIOS, REMOVED[method], agreement, strict=True)
        ]
    return entry


def records(frontier: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "trial": trial,
            "layers": ["a", "b", "c"],
            "original_accuracy": {"region": 0.9, "holdout": 0.8},
            "methods": {m: method_entry(m, trial, frontier) for m in CLASS_AGREEMENT},
            "wall_s": 10.0 + trial,
        }
        for trial in range(4)
    ]


def ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval, computed here from the formula with a table's t."""
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = T_975_3 * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def assert_ci(cell: dict[str, Any], values: list[float]) -> None:
    mean, low, high = ci(values)
    assert cell["n"] == len(values)
    assert cell["mean"] == pytest.approx(mean)
    assert cell["low"] == pytest.approx(low, rel=1e-5)
    assert cell["high"] == pytest.approx(high, rel=1e-5)


def test_the_frontier_table_has_a_mean_and_ci_per_method_budget_and_column() -> None:
    frontier = summarise(records())["frontier"]
    assert frontier["budgets"] == RATIOS
    rows = frontier["methods"][CHAIN]
    assert [row["keep_ratio"] for row in rows] == RATIOS
    assert all(row["trials"] == 4 for row in rows)
    first = rows[0]
    assert_ci(first["holdout class agreement %"], [90, 80, 90, 80])  # 85 ± 9.19
    assert first["holdout class agreement %"]["low"] == pytest.approx(75.813, abs=1e-3)
    assert_ci(first["holdout agreement %"], [80, 70, 80, 70])
    assert_ci(first["holdout margin retention"], [0.4, 0.3, 0.4, 0.3])
    assert_ci(first["holdout mean KL"], [0.2, 0.4, 0.2, 0.4])
    assert first["filters removed %"] == {"mean": 80.0, "low": 80.0, "high": 80.0, "n": 4}
    assert first["region agreement %"]["mean"] == 100.0
    assert first["holdout confident class agreement %"]["mean"] == 100.0
    assert_ci(frontier["methods"]["random"][1]["holdout class agreement %"], [50, 60, 50, 40])


def test_the_chance_floor_is_the_mean_of_the_trials_floors() -> None:
    assert_ci(summarise(records())["frontier"]["chance_floor"], [50, 55, 60, 50])


def piecewise_mean(xs: list[float], ys: list[float], low: float, high: float) -> float:
    """The mean of the linear interpolation over [low, high], on a fine grid."""
    grid = np.linspace(low, high, 200_001)
    values = np.interp(grid, xs, ys)
    return float((values[:-1] + values[1:]).mean() / 2)  # the trapezoid rule


def test_the_auc_spans_the_range_every_method_covers_in_the_trial() -> None:
    frontier = summarise(records())["frontier"]
    # Every method spans fractions removed from max(0.80, 0.82) to min(0.95, 0.97).
    assert frontier["auc_ranges"] == [{"trial": t, "low": 0.82, "high": 0.95} for t in range(4)]
    aucs = {
        method: [
            piecewise_mean(REMOVED[method], [100 * v for v in row], 0.82, 0.95) for row in rows
        ]
        for method, rows in CLASS_AGREEMENT.items()
    }
    # Trial 0, NeuroChains: 88 at 0.82, 80 at 0.9, 60 at 0.95: (0.08 · 84 + 0.05 · 70) / 0.13.
    assert aucs[CHAIN][0] == pytest.approx(10.22 / 0.13, rel=1e-6)
    for method, values in aucs.items():
        cell = frontier["auc"][method]
        mean, low, high = ci(values)
        assert cell["mean"] == pytest.approx(mean, rel=1e-6)
        assert (cell["low"], cell["high"]) == pytest.approx((low, high), rel=1e-5)


def test_neurochains_is_tested_against_each_method_paired_by_trial() -> None:
    paired = summarise(records())["frontier"]["paired"]
    assert list(paired) == ["random"]
    budgets = paired["random"]["budgets"]
    assert [b["keep_ratio"] for b in budgets] == RATIOS
    # At 0.2: differences 20, 0, 30, −10 points. The zero is dropped; ranks of |20, 30, −10|
    # are 2, 3, 1, so W− = 1: 2 of the 8 sign patterns give W− ≤ 1, two-sided p = 4 / 8.
    first = budgets[0]["test"]
    assert (first["wins"], first["losses"], first["ties"]) == (2, 1, 1)
    assert_ci(first["difference"], [20, 0, 30, -10])
    assert first["wilcoxon_p"] == pytest.approx(0.5)
    # At 0.1: differences 30, 10, 40, 20, all wins: p = 2 / 16.
    second = budgets[1]["test"]
    assert (second["wins"], second["losses"], second["ties"]) == (4, 0, 0)
    assert_ci(second["difference"], [30, 10, 40, 20])
    assert second["wilcoxon_p"] == pytest.approx(0.125)
    auc = paired["random"]["auc"]
    assert auc["difference"]["n"] == 4 and auc["wins"] == 4
    assert auc["wilcoxon_p"] == pytest.approx(0.125)


def test_the_markdown_names_the_test_and_shows_the_frontier() -> None:
    markdown = summary_markdown(summarise(records()))
    assert "Wilcoxon signed-rank" in markdown and "scipy.stats.wilcoxon" in markdown
    assert "## Fidelity–sparsity frontier" in markdown and "### random" in markdown
    assert "| 0.2 | 4 | 80.0 [80.0, 80.0] | 100.0 [100.0, 100.0] |" in markdown
    assert "85.0 [75.8, 94.2]" in markdown  # NeuroChains' class agreement at 0.2
    assert "| random | keep 0.1 | +25.0 [+4.5, +45.5] | 4 / 0 / 0 | 0.125 |" in markdown
    assert "| chance floor | 53.8 [46.1, 61.4] |" in markdown
    assert "widest range of fractions removed" in markdown
    assert "## Stability" not in markdown


def test_stability_is_reported_with_its_ci_when_trials_measured_it() -> None:
    stable = records()
    seeds = [[0.5, 0.7], [0.6, 0.6], [0.8, 0.6], [0.4, 0.4]]
    for record, seed, region in zip(stable, seeds, [0.3, 0.2, 0.4, 0.3], strict=True):
        record["stability"] = {"keep_ratio": 0.1, "seed_jaccard": seed, "region_jaccard": region}
    del stable[3]["stability"]  # a trial that did not measure it
    summary = summarise(stable)
    assert summary["stability"]["keep_ratios"] == [0.1]
    mean, low, _ = ci([0.6, 0.6, 0.7])
    assert summary["stability"]["seed_jaccard"]["n"] == 3
    assert summary["stability"]["seed_jaccard"]["mean"] == pytest.approx(mean)
    assert summary["stability"]["region_jaccard"]["mean"] == pytest.approx(0.3)
    markdown = summary_markdown(summary)
    assert "## Stability" in markdown and "- region Jaccard: 0.300" in markdown


def test_write_summary_draws_the_frontier_plot(tmp_path: Path) -> None:
    summary = write_summary(records(), tmp_path)
    assert "frontier.png" in SUMMARY_FILES
    for name in SUMMARY_FILES:
        assert (tmp_path / name).exists(), name
    with Image.open(tmp_path / "frontier.png") as image:
        assert image.format == "PNG" and image.width > 400
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_old_records_without_frontiers_summarise_as_before(tmp_path: Path) -> None:
    old = records(frontier=False)
    summary = write_summary(old, tmp_path)
    assert summary["frontier"] is None and summary["stability"] is None
    assert summary["trials"] == 4 and summary["unverified"] == 0
    cell = summary["table"][CHAIN]["holdout class agreement %"]
    agreement = [80, 70, 90, 60]
    assert cell["mean"] == pytest.approx(np.mean(agreement))
    assert cell["std"] == pytest.approx(np.std(agreement))
    assert summary["holdout_comparison"]["random"] == {"higher": 4, "equal": 0, "lower": 0}
    markdown = (tmp_path / "summary.md").read_text()
    assert "frontier" not in markdown.lower() and "Wilcoxon" not in markdown
    assert not (tmp_path / "frontier.png").exists()
    assert (tmp_path / "sparsity_vs_holdout.png").exists()


def test_frontiers_leave_the_old_per_method_summary_unchanged() -> None:
    stripped = copy.deepcopy(records())
    for record in stripped:
        for entry in record["methods"].values():
            del entry["frontier"]
    with_frontier, without = summarise(records()), summarise(stripped)
    for key in ("table", "holdout_comparison", "scores_finetuned", "wall_s", "unverified"):
        assert with_frontier[key] == without[key]
    old_markdown = summary_markdown(without).rstrip("\n")
    assert summary_markdown(with_frontier).startswith(old_markdown)


def test_an_unverified_frontier_chain_is_counted_and_flagged() -> None:
    flawed = records()
    flawed[2]["methods"]["random"]["frontier"][1]["verified"] = False
    summary = summarise(flawed)
    assert summary["frontier"]["unverified"] == 1 and summary["unverified"] == 0
    assert "**1 frontier chains failed verification.**" in summary_markdown(summary)
