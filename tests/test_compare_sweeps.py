"""tools/compare_sweeps.py: recipes compared across sweeps, paired by trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.compare_sweeps import compare


def _sweep(folder: Path, shift: float, regions: str = "r") -> Path:
    """Six trials whose frontiers hold agreement rising with the trial, plus `shift`."""
    folder.mkdir()
    lines = []
    for trial in range(6):
        frontier = [
            {
                "keep_ratio": keep,
                "filters_removed_fraction": 1 - keep,
                "region": {"agreement": 1.0},
                "holdout": {"class_agreement": 0.5 + 0.05 * trial + shift - keep / 10},
            }
            for keep in (0.3, 0.07)
        ]
        record = {
            "trial": trial,
            "classes": ["a", "b"],
            "region": [f"{regions}{trial}.jpg"],
            "optimise_s": 10.0,
            "methods": {"neurochains": {"frontier": frontier}},
        }
        lines.append(json.dumps(record))
    (folder / "trials.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_uniform_shift_is_found_in_every_trial(tmp_path: Path) -> None:
    reference = _sweep(tmp_path / "a", 0.0)
    better = _sweep(tmp_path / "b", 0.1)
    text = compare([reference, better], ["defaults", "lever"], None)
    assert text.startswith("6 trials paired")
    line = next(line for line in text.splitlines() if line.startswith("- **lever**"))
    assert line.count("+10.0 [+10.0, +10.0], 6/6 better") == 3  # both budgets and the area
    assert "| defaults | 59.5 [" in text  # keep 0.3: 50 + 5 × mean(0..5) − 3


def test_sweeps_of_other_regions_are_not_paired(tmp_path: Path) -> None:
    reference = _sweep(tmp_path / "a", 0.0)
    other = _sweep(tmp_path / "b", 0.0, regions="s")
    with pytest.raises(SystemExit, match="region differ"):
        compare([reference, other], ["a", "b"], None)


def test_by_classes_pairs_sweeps_of_other_region_sizes(tmp_path: Path) -> None:
    reference = _sweep(tmp_path / "a", 0.0)
    larger = _sweep(tmp_path / "b", 0.05, regions="s")
    text = compare([reference, larger], ["10", "50"], None, by_classes=True)
    assert "+5.0 [+5.0, +5.0], 6/6 better" in text
