"""Compare recipes across sweeps, paired by trial: the lever study of docs/method.md.

Each sweep folder ran the same trials (the same DATA, --seed and class draws) with another
recipe; its NeuroChains frontier is one variant. The first folder is the reference; every
other is compared with it on the trials both hold, region for region (with --by-classes,
class pair for class pair: sweeps of another --per-class):

    .venv/bin/python tools/compare_sweeps.py build/sweep_r20_frontier build/lever_views \\
        --names defaults,views --trials 20

prints, per variant and budget, the within-class holdout agreement, the region agreement
and the filters removed (mean [95 % CI]); the area under the frontier over the range every
variant spans in the trial; the difference from the reference on both, paired by trial
with the two-sided Wilcoxon signed-rank test; and the optimisation seconds per trial.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from chainx.chain.metrics import mean_ci
from chainx.sweep.frontier_summary import (
    CLASS_AGREEMENT_KEYS,
    ci_cell,
    entry_value,
    paired_or_none,
    trial_aucs,
)
from chainx.sweep.plan import CHAIN

REGION_AGREEMENT = ("region", "agreement")


def read_trials(folder: Path) -> dict[int, dict[str, Any]]:
    """A sweep's trials with a NeuroChains frontier, by trial index."""
    records = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]
    return {r["trial"]: r for r in records if r.get("methods", {}).get(CHAIN, {}).get("frontier")}


def frontier(record: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {entry["keep_ratio"]: entry for entry in record["methods"][CHAIN]["frontier"]}


def percent(entry: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    return entry_value(entry, keys, 100)


def cell(values: list[float], decimals: int = 1) -> str:
    return ci_cell(mean_ci(values) if values else None, decimals)


def difference(test: dict[str, Any] | None) -> str:
    if test is None:
        return "–"
    if test["wilcoxon_p"] is None:  # every trial the same: no interval or test to show
        return f"{test['difference']['mean']:+.1f}"
    compared = test["wins"] + test["losses"] + test["ties"]
    shown = ci_cell(test["difference"], 1, signed=True)
    return f"{shown}, {test['wins']}/{compared} better, p = {test['wilcoxon_p']:.2g}"


def variant_aucs(
    index: int, runs: list[dict[int, dict[str, Any]]], names: list[str], budgets: list[float]
) -> dict[str, float | None]:
    """Each variant's area under the frontier in one trial, as the sweep summary computes it
    for methods: the variants as the methods of one record, at the budgets they all have."""
    record = {
        "trial": index,
        "methods": {
            name: {"frontier": [frontier(run[index])[budget] for budget in budgets]}
            for name, run in zip(names, runs, strict=True)
        },
    }
    aucs = trial_aucs(record, names)
    return {name: (aucs or {}).get("auc", {}).get(name) for name in names}


def compare(
    folders: list[Path], names: list[str], trials: int | None, by_classes: bool = False
) -> str:
    runs = [read_trials(folder) for folder in folders]
    common = sorted(set.intersection(*(set(run) for run in runs)))[:trials]
    if not common:
        raise SystemExit(
            "no trial with a NeuroChains frontier is in every sweep; compare sweeps run with "
            "--frontier (not 'none') on the same DATA and --seed"
        )
    key = "classes" if by_classes else "region"
    for index in common:
        if len({tuple(run[index][key]) for run in runs}) != 1:
            raise SystemExit(f"trial {index}: the sweeps' {key} differ; not paired")
    budgets = sorted(set.intersection(*(set(frontier(run[common[0]])) for run in runs)))[::-1]
    lines = [f"{len(common)} trials paired: {', '.join(map(str, common))}", ""]
    header = "| variant | " + " | ".join(f"keep {b:g}" for b in budgets)
    lines += [header + " | area under the frontier | optimisation s per trial |"]
    lines += ["| --- " * (len(budgets) + 3) + "|"]
    aucs = [variant_aucs(i, runs, names, budgets) for i in common]
    for name, run in zip(names, runs, strict=True):
        cells = []
        for budget in budgets:
            entries = [frontier(run[i])[budget] for i in common]
            removed = cell([100 * e["filters_removed_fraction"] for e in entries])
            holdout = cell(
                [v for e in entries if (v := percent(e, CLASS_AGREEMENT_KEYS)) is not None]
            )
            region = cell([v for e in entries if (v := percent(e, REGION_AGREEMENT)) is not None])
            cells.append(f"{holdout}<br>region {region}<br>removed {removed}")
        area = cell([a[name] for a in aucs if a[name] is not None])
        seconds = cell([run[i]["optimise_s"] for i in common], 0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {area} | {seconds} |")
    lines += ["", "Paired against the reference (within-class holdout agreement, points):", ""]
    for name, run in zip(names[1:], runs[1:], strict=True):
        parts = []
        for budget in budgets:
            pairs = [
                (
                    percent(frontier(run[i])[budget], CLASS_AGREEMENT_KEYS),
                    percent(frontier(runs[0][i])[budget], CLASS_AGREEMENT_KEYS),
                )
                for i in common
            ]
            parts.append(f"keep {budget:g}: {difference(paired_or_none(pairs))}")
        area = paired_or_none([(a[name], a[names[0]]) for a in aucs])
        parts.append(f"area: {difference(area)}")
        lines.append(f"- **{name}** − {names[0]}: " + "; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders", nargs="+", type=Path, help="sweep folders; the first is the reference"
    )
    parser.add_argument("--names", help="comma-separated variant names [default: folder names]")
    parser.add_argument("--trials", type=int, help="only the first this many common trials")
    parser.add_argument(
        "--by-classes",
        action="store_true",
        help="pair trials of the same class pair whose regions differ (other --per-class)",
    )
    args = parser.parse_args()
    names = args.names.split(",") if args.names else [folder.name for folder in args.folders]
    if len(names) != len(args.folders) or len(set(names)) != len(names):
        raise SystemExit("--names needs one distinct name per folder")
    print(compare(args.folders, names, args.trials, args.by_classes))


if __name__ == "__main__":
    main()
