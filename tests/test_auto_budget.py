"""The default budget: the sparsest chain that keeps --min-agreement of the region, found from
one optimisation; --keep-ratio and --tau override it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION
from typer.testing import CliRunner

from chainx.cli import app
from chainx.errors import ChainxError
from chainx.extraction import budget_line, budget_record
from chainx.images import load_images, make_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.auto_budget import GRID
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import optimise
from chainx.settings import ExtractSettings

MODEL = normalise(load_model(SAMPLE_MODEL))
IMAGES = load_images(SAMPLE_REGION, make_preprocessing([None, 1, 28, 28], None, 28, None, None))


def test_the_default_is_the_search_and_a_budget_or_threshold_overrides_it() -> None:
    assert ExtractSettings.from_options().optimise.min_agreement == 0.95
    assert ExtractSettings.from_options(min_agreement=0.9).optimise.min_agreement == 0.9
    assert ExtractSettings.from_options(keep_ratio=0.1).optimise.min_agreement is None
    tau = ExtractSettings.from_options(tau=0.05).optimise
    assert tau.min_agreement is None and tau.tau == 0.05
    with pytest.raises(ChainxError, match="--min-agreement"):
        ExtractSettings.from_options(keep_ratio=0.1, min_agreement=0.8)


def test_the_chain_is_the_sparsest_budget_tried_that_keeps_the_region() -> None:
    settings = ExtractSettings.from_options(seed=0).optimise
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    result = optimise(scoring, IMAGES.array, "logits", settings)
    trials = result.budgets
    chosen = trials[result.chosen]
    assert chosen.agreement >= 0.95
    passing = [t for t in trials if t.agreement >= 0.95]
    assert chosen.filters == min(t.filters for t in passing)
    # The search went past the boundary: a sparser budget failed.
    assert any(t.keep_ratio < chosen.keep_ratio and t.agreement < 0.95 for t in trials)
    # A budget off the grid came from bisecting between the grid's two sides.
    assert any(t.keep_ratio not in GRID for t in trials)
    # The chain is that trial: its filters, and the region agreement the masked model gives.
    kept = sum(int((m != 0).sum()) for m in result.multipliers.values())
    assert kept == chosen.filters
    original = scoring.masked(IMAGES.array, {p.layer: np.ones(p.channels) for p in scoring.points})
    masked = scoring.masked(IMAGES.array, result.multipliers)
    agreement = float((masked.argmax(1) == original.argmax(1)).mean())
    assert agreement == pytest.approx(chosen.agreement)


def extract(tmp_path: Path, *options: str) -> dict:
    out = tmp_path / "chain"
    outcome = CliRunner().invoke(
        app,
        ["extract", str(SAMPLE_MODEL), str(SAMPLE_REGION), "--holdout", str(SAMPLE_HOLDOUT)]
        + ["--resize", "28", "--filter-images", "0", "--out", str(out), *options],
    )
    assert outcome.exit_code == 0, outcome.output
    return json.loads((out / "chain.json").read_text()) | {"output": outcome.output}


def test_the_terminal_chain_json_and_report_say_what_was_tried_and_chosen(tmp_path) -> None:
    record = extract(tmp_path)
    budget = record["budget"]
    assert budget["mode"] == "auto" and budget["holds"] and budget["min_agreement"] == 0.95
    assert budget["chosen"] in budget["tried"] and "sparsest" in budget["reason"]
    assert record["summary"]["filters_kept"] == budget["chosen"]["filters"]
    assert record["metrics"]["region"]["agreement"] >= 0.95
    # The first budget was fine-tuned at --finetune-lr and a fifth of it; the better one
    # (more of the region, then the lower KL) fine-tuned the rest.
    tried = budget["finetune_lr_tried"]
    assert [t["finetune_lr"] for t in tried] == pytest.approx([0.05, 0.01])
    best = max(tried, key=lambda t: (t["agreement"], -t["kl"]))
    assert budget["finetune_lr"] == best["finetune_lr"]
    assert f"step size {best['finetune_lr']:g}" in budget["reason"]
    assert "budget tried" in record["output"] and "chose" in record["output"]
    report = (tmp_path / "chain" / "report.html").read_text()
    assert "Budgets tried" in report and "chosen" in report


def test_keep_ratio_overrides_the_search(tmp_path) -> None:
    record = extract(tmp_path, "--keep-ratio", "0.2", "--steps", "150", "--finetune-steps", "20")
    assert record["budget"] == {"mode": "keep-ratio", "keep_ratio": 0.2}
    assert record["summary"]["filters_kept"] <= 34  # a fifth of 168


def test_where_no_budget_holds_the_chain_keeping_most_of_the_region_is_marked() -> None:
    # No chain can agree on more than all of the region: every budget fails, the filters
    # above τ are the last candidate, and the one that keeps the most is the chain.
    settings = replace(
        ExtractSettings.from_options(seed=0, steps=100, finetune_steps=20).optimise,
        min_agreement=1.01,
    )
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    result = optimise(scoring, IMAGES.array, "logits", settings)
    trials = result.budgets
    assert trials[-1].source == "τ"  # the search ran down to half the filters and past it
    assert [t.keep_ratio for t in trials[:-1]] == sorted(t.keep_ratio for t in trials[:-1])
    chosen = trials[result.chosen]
    best = max(t.agreement for t in trials)
    assert chosen.agreement == best
    assert chosen.filters == min(t.filters for t in trials if t.agreement == best)
    assert result.budget_reason.startswith("no budget tried kept")
    record = budget_record(settings, result)
    assert record["holds"] is False
    assert budget_line(record).startswith("budget: WARNING,")
