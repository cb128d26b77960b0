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

from chainx.chain.metrics import frontier_auc, mean_ci, paired_test
from chainx.sweep.plan import CHAIN

CLASS_AGREEMENT = ("holdout", "class_agreement")
REGION_AGREEMENT = ("region", "agreement")


def read_trials(folder: Path) -> dict[int, dict[str, Any]]:
    records = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]
    return {record["trial"]: record for record in records if line_ok(record)}


def line_ok(record: dict[str, Any]) -> bool:
    return bool(record.get("methods", {}).get(CHAIN, {}).get("frontier"))


def value(entry: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    found: Any = entry
    for key in keys:
        found = found.get(key) if isinstance(found, dict) else None
    return None if found is None else 100 * float(found)


def frontier(record: dict[str, Any]) -> dict[float, dict[str, Any]]:
    return {entry["keep_ratio"]: entry for entry in record["methods"][CHAIN]["frontier"]}


def cell(values: list[float], decimals: int = 1) -> str:
    if not values:
        return "–"
    ci = mean_ci(values)
    return f"{ci['mean']:.{decimals}f} [{ci['low']:.{decimals}f}, {ci['high']:.{decimals}f}]"


def difference(test: dict[str, Any]) -> str:
    ci = test["difference"]
    p = test["wilcoxon_p"]
    return (
        f"{ci['mean']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}], "
        f"{test['wins']}/{test['wins'] + test['losses'] + test['ties']} better, "
        f"p = {p:.2g}"
        if p is not None
        else f"{ci['mean']:+.1f}"
    )


def trial_aucs(records: list[dict[str, Any]], budgets: list[float]) -> list[float | None]:
    """Each variant's mean within-class holdout agreement over the range of fractions
    removed that every variant spans in this trial, at the budgets they all have."""
    curves = [
        [
            (entry["filters_removed_fraction"], v)
            for budget, entry in frontier(record).items()
            if budget in budgets and (v := value(entry, CLASS_AGREEMENT)) is not None
        ]
        for record in records
    ]
    if not all(curves):
        return [None] * len(records)
    low = max(min(x for x, _ in points) for points in curves)
    high = min(max(x for x, _ in points) for points in curves)
    return [frontier_auc(points, low, high) for points in curves]


def compare(
    folders: list[Path], names: list[str], trials: int | None, by_classes: bool = False
) -> str:
    runs = [read_trials(folder) for folder in folders]
    common = sorted(set.intersection(*(set(run) for run in runs)))[:trials]
    key = "classes" if by_classes else "region"
    for index in common:
        if len({tuple(run[index][key]) for run in runs}) != 1:
            raise SystemExit(f"trial {index}: the sweeps' {key} differ; not paired")
    budgets = sorted(set.intersection(*(set(frontier(run[common[0]])) for run in runs)))[::-1]
    lines = [f"{len(common)} trials paired: {', '.join(map(str, common))}", ""]
    header = "| variant | " + " | ".join(f"keep {b:g}" for b in budgets)
    lines += [header + " | area under the frontier | optimisation s per trial |"]
    lines += ["| --- " * (len(budgets) + 3) + "|"]
    aucs = [trial_aucs([run[i] for run in runs], budgets) for i in common]
    for column, (name, run) in enumerate(zip(names, runs, strict=True)):
        cells = []
        for budget in budgets:
            entries = [frontier(run[i])[budget] for i in common]
            removed = cell([100 * e["filters_removed_fraction"] for e in entries])
            holdout = cell([v for e in entries if (v := value(e, CLASS_AGREEMENT)) is not None])
            region = cell([v for e in entries if (v := value(e, REGION_AGREEMENT)) is not None])
            cells.append(f"{holdout}<br>region {region}<br>removed {removed}")
        area = cell([a[column] for a in aucs if a[column] is not None])
        seconds = cell([run[i]["optimise_s"] for i in common], 0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {area} | {seconds} |")
    lines += ["", "Paired against the reference (within-class holdout agreement, points):", ""]
    for column, (name, run) in enumerate(zip(names[1:], runs[1:], strict=True), start=1):
        parts = []
        for budget in budgets:
            pairs = [
                (
                    value(frontier(run[i])[budget], CLASS_AGREEMENT),
                    value(frontier(runs[0][i])[budget], CLASS_AGREEMENT),
                )
                for i in common
            ]
            known = [(a, b) for a, b in pairs if a is not None and b is not None]
            if known:
                test = paired_test([a for a, _ in known], [b for _, b in known])
                parts.append(f"keep {budget:g}: {difference(test)}")
        known = [(a[column], a[0]) for a in aucs if a[column] is not None and a[0] is not None]
        if known:
            test = paired_test([a for a, _ in known], [b for _, b in known])
            parts.append(f"area: {difference(test)}")
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
    if len(names) != len(args.folders):
        raise SystemExit("--names needs one name per folder")
    print(compare(args.folders, names, args.trials, args.by_classes))


if __name__ == "__main__":
    main()
