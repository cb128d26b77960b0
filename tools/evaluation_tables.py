"""The tables of docs/evaluation.md, from a sweep's trials.jsonl.

summary.md holds every number a sweep measured, one table per method; docs/evaluation.md
reads across methods instead. This prints, as markdown:

- holdout agreement within the region's classes, one column per method, one row per
  budget (the fraction NeuroChains' cut removed) and one for the area under the frontier;
- NeuroChains' own frontier on the region and the holdout;
- region fit (top-1 agreement on the region's 20 images) per method, and NeuroChains
  against each method on it, paired by trial: a method can fit its region and not the
  holdout, or the other way round;
- NeuroChains against each method, paired by trial (two-sided Wilcoxon signed-rank);
- each control's chains against the chance floor of the model they were cut from (the
  random-weights control's floor is the random network's, not the trained one's), and
  NeuroChains' height above its floor against the control's above its own, paired;
- verification, wall time and optimisation time per trial.

    .venv/bin/python tools/evaluation_tables.py docs/data/sweep_effnet_frontier/trials.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from chainx.chain.metrics import mean_ci
from chainx.sweep.frontier_summary import (
    CLASS_AGREEMENT_KEYS,
    at_budget,
    chance_floor,
    ci_cell,
    entry_value,
    paired_or_none,
    summarise_frontier,
)
from chainx.sweep.plan import CHAIN

CONTROLS = ("random-weights",)
CLASS_AGREEMENT = "holdout class agreement %"


def _cell(row: dict[str, Any] | None, column: str, decimals: int = 1) -> str:
    return ci_cell(row.get(column) if row else None, decimals)


def _method_table(frontier: dict[str, Any], methods: list[str]) -> list[str]:
    rows = {m: {r["keep_ratio"]: r for r in frontier["methods"][m]} for m in methods}
    lines = [
        "| filters removed | " + " | ".join(methods) + " |",
        "| --- |" + " --- |" * len(methods),
    ]
    for ratio in frontier["budgets"]:
        removed = rows[CHAIN][ratio]["filters removed %"]["mean"]
        cells = [_cell(rows[m].get(ratio), CLASS_AGREEMENT) for m in methods]
        lines.append(f"| {removed:.1f} % (keep {ratio:g}) | " + " | ".join(cells) + " |")
    cells = [ci_cell(frontier["auc"].get(m), 1) for m in methods]
    lines.append("| area under the frontier | " + " | ".join(cells) + " |")
    lines.append(f"\nchance floor: {ci_cell(frontier['chance_floor'], 1)}")
    return lines


def _chain_table(frontier: dict[str, Any]) -> list[str]:
    columns = [
        ("region top-1", "region agreement %", 1),
        ("holdout top-1", "holdout agreement %", 1),
        ("holdout within classes", CLASS_AGREEMENT, 1),
        ("holdout, confident half", "holdout confident class agreement %", 1),
        ("margin retention (holdout, median)", "holdout margin retention", 2),
    ]
    lines = [
        "| filters removed | " + " | ".join(name for name, _, _ in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for row in frontier["methods"][CHAIN]:
        cells = [_cell(row, column, decimals) for _, column, decimals in columns]
        lines.append(f"| {row['filters removed %']['mean']:.1f} % | " + " | ".join(cells) + " |")
    return lines


REGION_AGREEMENT = ("region", "agreement")


def _region_fit_lines(records: list[dict[str, Any]], frontier: dict[str, Any]) -> list[str]:
    methods = [m for m in frontier["methods"] if m not in CONTROLS]
    lines = [
        "| region top-1, filters removed | " + " | ".join(methods) + " |",
        "| --- |" + " --- |" * len(methods),
    ]
    rows = {m: {r["keep_ratio"]: r for r in frontier["methods"][m]} for m in methods}
    tests = []
    for ratio in frontier["budgets"]:
        cells = [_cell(rows[m].get(ratio), "region agreement %") for m in methods]
        removed = rows[CHAIN][ratio]["filters removed %"]["mean"]
        lines.append(f"| {removed:.1f} % | " + " | ".join(cells) + " |")
        values = {
            m: [entry_value(at_budget(r, m, ratio) or {}, REGION_AGREEMENT, 100) for r in records]
            for m in methods
        }
        tests += [
            f"- region fit vs {m} at keep {ratio:g}: "
            + _test_text(paired_or_none(list(zip(values[CHAIN], values[m], strict=True))))
            for m in methods
            if m != CHAIN
        ]
    return [*lines, "", *tests]


def _test_text(test: dict[str, Any] | None) -> str:
    if test is None:
        return "–"
    n = test["wins"] + test["losses"] + test["ties"]
    return (
        f"{ci_cell(test['difference'], 1, signed=True)}, {test['wins']}/{n} higher, "
        f"p = {test['wilcoxon_p']:.2g}"
    )


def _paired_lines(frontier: dict[str, Any]) -> list[str]:
    lines = []
    for method, tests in frontier["paired"].items():
        if method in CONTROLS:
            continue  # another model's agreement: compared above its own floor instead
        at = [f"keep {b['keep_ratio']:g} {_test_text(b['test'])}" for b in tests["budgets"]]
        lines.append(f"- vs {method}: " + "; ".join(at) + f"; area {_test_text(tests['auc'])}")
    return lines


def _above_floor(record: dict[str, Any], method: str, ratio: float) -> float | None:
    value = entry_value(at_budget(record, method, ratio) or {}, CLASS_AGREEMENT_KEYS, 100)
    floor = chance_floor(record, [method])
    return None if value is None or floor is None else value - floor


def _control_lines(records: list[dict[str, Any]], frontier: dict[str, Any]) -> list[str]:
    lines = []
    for control in (c for c in CONTROLS if c in frontier["methods"]):
        floors = [f for r in records if (f := chance_floor(r, [control])) is not None]
        cells = [
            f"keep {r['keep_ratio']:g} {_cell(r, CLASS_AGREEMENT)}"
            for r in frontier["methods"][control]
        ]
        lines.append(
            f"- {control}: "
            + "; ".join(cells)
            + f"; its own chance floor {ci_cell(mean_ci(floors), 1) if floors else '–'}"
        )
        tests = [
            f"keep {ratio:g} "
            + _test_text(
                paired_or_none(
                    [
                        (_above_floor(r, CHAIN, ratio), _above_floor(r, control, ratio))
                        for r in records
                    ]
                )
            )
            for ratio in frontier["budgets"]
        ]
        lines.append(
            f"- neurochains above its floor minus {control} above its own: " + "; ".join(tests)
        )
    return lines


def _run_lines(records: list[dict[str, Any]], frontier: dict[str, Any]) -> list[str]:
    entries = [e for r in records for m in r["methods"].values() for e in m.get("frontier", [])]
    walls = [r["wall_s"] for r in records if "wall_s" in r]
    optimise = [r["optimise_s"] for r in records if "optimise_s" in r]
    return [
        f"- {len(records)} trials; {len(entries) - frontier['unverified']} of {len(entries)} "
        "frontier chains verified",
        f"- wall s per trial: {ci_cell(mean_ci(walls), 0) if walls else '–'}; "
        f"optimisation s: {ci_cell(mean_ci(optimise), 0) if optimise else '–'}",
    ]


def tables(records: list[dict[str, Any]]) -> str:
    frontier = summarise_frontier(records)
    if frontier is None or CHAIN not in frontier["methods"]:
        raise SystemExit("no NeuroChains frontier in these trials: run the sweep with --frontier")
    others = [m for m in frontier["methods"] if m != CHAIN and m not in CONTROLS]
    others.sort(key=lambda m: -(frontier["auc"].get(m) or {"mean": -1.0})["mean"])
    sections = [
        _method_table(frontier, [CHAIN, *others]),
        _chain_table(frontier),
        _region_fit_lines(records, frontier),
        _paired_lines(frontier),
        _control_lines(records, frontier),
        _run_lines(records, frontier),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", type=Path, help="a sweep's trials.jsonl")
    args = parser.parse_args()
    if not args.trials.is_file():
        raise SystemExit(f"{args.trials}: no such file; give a sweep folder's trials.jsonl")
    records = [json.loads(line) for line in args.trials.read_text().splitlines() if line]
    print(tables(records), end="")


if __name__ == "__main__":
    main()
