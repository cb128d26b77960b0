"""tools/evaluation_tables.py: the cross-method tables of docs/evaluation.md."""

from __future__ import annotations

from typing import Any

import pytest

from tools.evaluation_tables import tables


def _entry(keep: float, agreement: float, floor: float, region: float) -> dict[str, Any]:
    return {
        "keep_ratio": keep,
        "filters_removed_fraction": 1 - keep,
        "verified": True,
        "region": {"agreement": region},
        "holdout": {
            "agreement": agreement,
            "class_agreement": agreement,
            "confident": {"class_agreement": agreement},
            "margin_retention": 0.1,
            "mean_kl": 1.0,
            "chance": {"class_agreement": floor},
        },
    }


def _records() -> list[dict[str, Any]]:
    """Five trials: the chain 10 points above a 0.5 floor, random 20 under it, and a
    random-weights control at 0.9, exactly its own floor; on the region the chain keeps
    every image and random 80 %."""
    records = []
    for trial in range(5):
        step = 0.01 * trial
        methods = {
            name: {"frontier": [_entry(k, value, floor, region) for k in (0.3, 0.05)]}
            for name, value, floor, region in (
                ("neurochains", 0.6 + step, 0.5, 1.0),
                ("random", 0.3 + step, 0.5, 0.8),
                ("random-weights", 0.9, 0.9, 1.0),
            )
        }
        records.append({"trial": trial, "methods": methods, "wall_s": 100.0, "optimise_s": 50.0})
    return records


def test_methods_are_columns_and_controls_are_read_against_their_own_floor() -> None:
    text = tables(_records())
    assert "| filters removed | neurochains | random |" in text
    assert "| 70.0 % (keep 0.3) | 62.0 [" in text  # 60 + mean(0..4)
    assert "chance floor: 50.0 [50.0, 50.0]" in text
    assert "- vs random: keep 0.3 +30.0 [+30.0, +30.0], 5/5 higher" in text
    # Raw, the control's 90 % would beat the chain; above their floors the chain is higher.
    assert "vs random-weights" not in text
    assert "its own chance floor 90.0 [90.0, 90.0]" in text
    assert "above its own: keep 0.3 +12.0 [" in text
    assert "30 of 30 frontier chains verified" in text
    # Region fit beside the holdout, paired the same way; the control is not a column.
    assert "| region top-1, filters removed | neurochains | random |" in text
    assert "| 70.0 % | 100.0 [100.0, 100.0] | 80.0 [80.0, 80.0] |" in text
    assert "- region fit vs random at keep 0.05: +20.0 [+20.0, +20.0], 5/5 higher" in text


def test_trials_without_a_frontier_are_refused() -> None:
    records = [{"trial": 0, "methods": {"neurochains": {}}}]
    with pytest.raises(SystemExit, match="--frontier"):
        tables(records)
