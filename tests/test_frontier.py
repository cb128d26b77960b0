"""--frontier: chains at several budgets from one optimisation, each exact and measured, and
the chain itself unchanged by asking for them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
from conftest import (
    CHROMIUM,
    SAMPLE_HOLDOUT,
    SAMPLE_MODEL,
    SAMPLE_REGION,
    assert_report_images_ok,
    assert_report_renders,
)

import chainx
from chainx.settings import DEFAULT_FRONTIER, frontier_budgets

# 300 steps, the default: at 120 the path stops at a fifth of the filters and the 4 % cut
# from there computes nothing.
FAST = {"resize": 28, "steps": 300, "finetune_steps": 30, "filter_images": 0}
BUDGETS = (0.5, 0.2, 0.1, 0.04)


@pytest.fixture(scope="module")
def with_frontier(tmp_path_factory: pytest.TempPathFactory) -> chainx.ExtractResult:
    out = tmp_path_factory.mktemp("frontier") / "chain"
    return chainx.extract(
        SAMPLE_MODEL, SAMPLE_REGION, SAMPLE_HOLDOUT, out=out, frontier=BUDGETS, **FAST
    )


def test_budgets_are_parsed_and_checked() -> None:
    assert frontier_budgets("default") == DEFAULT_FRONTIER
    assert frontier_budgets("none") == frontier_budgets(None) == ()
    assert frontier_budgets("0.1,0.5,0.1") == (0.5, 0.1)
    for bad in ("0", "1.5", "half", ""):
        with pytest.raises(chainx.ChainxError, match="--frontier"):
            frontier_budgets(bad)


def test_every_budget_is_a_verified_chain_of_its_size(
    with_frontier: chainx.ExtractResult,
) -> None:
    entries = with_frontier.frontier
    assert [entry["keep_ratio"] for entry in entries] == list(BUDGETS)
    total = with_frontier.to_json()["summary"]["filters_total"]
    for entry in entries:
        assert entry["verified"] and entry["max_abs_diff"] >= 0
        # Cut to the budget exactly; constant filters folded away can make it smaller.
        assert 0 < entry["filters_kept"] <= math.ceil(entry["keep_ratio"] * total)
        for side in ("region", "holdout"):
            assert 0 <= entry[side]["class_agreement"] <= 1
            assert 0 < entry[side]["chance"]["class_agreement"] <= 1
        assert entry["source"] in {"path", "final"}
    kept = [entry["filters_kept"] for entry in entries]
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]


def test_the_frontier_does_not_change_the_chain(with_frontier: chainx.ExtractResult) -> None:
    alone = chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, SAMPLE_HOLDOUT, **FAST)
    assert alone.frontier == []
    assert "frontier" not in alone.to_json()
    chain_bytes = with_frontier.chain.SerializeToString()
    assert alone.chain.SerializeToString() == chain_bytes


def test_the_output_folder_holds_the_frontier(with_frontier: chainx.ExtractResult) -> None:
    out = with_frontier.out
    entries = json.loads((out / "frontier.json").read_text())
    assert entries == json.loads(json.dumps(with_frontier.frontier))
    for entry in entries:
        chain = onnx.load(str(out / entry["chain"]))
        onnx.checker.check_model(chain, full_check=True)
    data = json.loads((out / "chain.json").read_text())
    assert data["files"]["frontier.json"] == str(out / "frontier.json")
    assert [e["keep_ratio"] for e in data["frontier"]] == list(BUDGETS)


def test_the_report_plots_the_frontier(with_frontier: chainx.ExtractResult, tmp_path: Path) -> None:
    report = with_frontier.out / "report.html"
    page = report.read_text(encoding="utf-8")
    assert "<h2>Frontier" in page and "fidelity against filters kept" in page
    assert page.count("<td>passed</td>") >= len(BUDGETS)
    assert assert_report_images_ok(report) > 0
    if CHROMIUM is not None:
        assert_report_renders(report, tmp_path / "shot.png")
