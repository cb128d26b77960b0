"""A sweep's fidelity–sparsity frontiers: per method and budget the mean [95 % CI] over
trials, the area under each frontier, NeuroChains against each method paired by trial,
the chance floor, the chains' stability, and the frontier plot."""

from __future__ import annotations

from typing import Any

from chainx.chain.metrics import frontier_auc, mean_ci, paired_test
from chainx.sweep.plan import CHAIN

# (column, keys into a frontier entry, scale, decimals)
COLUMNS: list[tuple[str, tuple[str, ...], float, int]] = [
    ("filters removed %", ("filters_removed_fraction",), 100, 1),
    ("region agreement %", ("region", "agreement"), 100, 1),
    ("holdout agreement %", ("holdout", "agreement"), 100, 1),
    ("holdout class agreement %", ("holdout", "class_agreement"), 100, 1),
    ("holdout confident class agreement %", ("holdout", "confident", "class_agreement"), 100, 1),
    ("holdout margin retention", ("holdout", "margin_retention"), 1, 2),
    ("holdout mean KL", ("holdout", "mean_kl"), 1, 3),
]
CLASS_AGREEMENT = "holdout class agreement %"
CLASS_AGREEMENT_KEYS = ("holdout", "class_agreement")
CHANCE_KEYS = ("holdout", "chance", "class_agreement")


def entry_value(entry: dict[str, Any], keys: tuple[str, ...], scale: float) -> float | None:
    value: Any = entry
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is None else scale * float(value)


def _frontier(record: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """A method's frontier in a trial; empty in records from before frontiers."""
    return record["methods"].get(method, {}).get("frontier") or []


def _frontier_methods(records: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for record in records:
        names += [m for m in record["methods"] if m not in names and _frontier(record, m)]
    return names


def at_budget(record: dict[str, Any], method: str, keep_ratio: float) -> dict[str, Any] | None:
    return next((e for e in _frontier(record, method) if e["keep_ratio"] == keep_ratio), None)


def _budget_rows(records: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """One row per budget: each column's mean [95 % CI] over the trials that measured it."""
    ratios = sorted({e["keep_ratio"] for r in records for e in _frontier(r, method)}, reverse=True)
    rows = []
    for ratio in ratios:
        entries = [e for r in records if (e := at_budget(r, method, ratio)) is not None]
        row: dict[str, Any] = {"keep_ratio": ratio, "trials": len(entries)}
        for column, keys, scale, _ in COLUMNS:
            values = [v for e in entries if (v := entry_value(e, keys, scale)) is not None]
            row[column] = mean_ci(values) if values else None
        rows.append(row)
    return rows


def trial_aucs(record: dict[str, Any], methods: list[str]) -> dict[str, Any] | None:
    """Each method's mean holdout class agreement (%) over the widest range of fractions
    removed that every method's budgets span in this trial."""
    curves = {
        method: [
            (e["filters_removed_fraction"], value)
            for e in _frontier(record, method)
            if (value := entry_value(e, CLASS_AGREEMENT_KEYS, 100)) is not None
        ]
        for method in methods
    }
    curves = {method: points for method, points in curves.items() if points}
    if not curves:
        return None
    low = max(min(x for x, _ in points) for points in curves.values())
    high = min(max(x for x, _ in points) for points in curves.values())
    aucs = {method: frontier_auc(points, low, high) for method, points in curves.items()}
    return {"trial": record["trial"], "low": low, "high": high, "auc": aucs}


def paired_or_none(
    pairs: list[tuple[float | None, float | None]],
) -> dict[str, Any] | None:
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not known:
        return None
    return paired_test([a for a, _ in known], [b for _, b in known])


def chance_floor(record: dict[str, Any], methods: list[str]) -> float | None:
    """The trial's chance floor of the model the first of `methods` was cut from: the
    original's for NeuroChains and the baselines, the random network's for random-weights."""
    for method in methods:
        for entry in _frontier(record, method):
            if (value := entry_value(entry, CHANCE_KEYS, 100)) is not None:
                return value
    return None


def summarise_frontier(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """None when no record has a frontier."""
    methods = _frontier_methods(records)
    if not methods:
        return None
    trials = [t for r in records if (t := trial_aucs(r, methods)) is not None]
    aucs = {method: [t["auc"].get(method) for t in trials] for method in methods}
    chances = [c for r in records if (c := chance_floor(r, methods)) is not None]
    ratios = sorted(
        {e["keep_ratio"] for r in records for m in methods for e in _frontier(r, m)}, reverse=True
    )
    paired: dict[str, Any] = {}
    others = [m for m in methods if m != CHAIN] if CHAIN in methods else []
    for method in others:
        budgets = []
        for ratio in ratios:
            pairs = [
                (
                    entry_value(at_budget(r, CHAIN, ratio) or {}, CLASS_AGREEMENT_KEYS, 100),
                    entry_value(at_budget(r, method, ratio) or {}, CLASS_AGREEMENT_KEYS, 100),
                )
                for r in records
            ]
            budgets.append({"keep_ratio": ratio, "test": paired_or_none(pairs)})
        auc_pairs = list(zip(aucs[CHAIN], aucs[method], strict=True))
        paired[method] = {"budgets": budgets, "auc": paired_or_none(auc_pairs)}
    return {
        "budgets": ratios,
        "methods": {method: _budget_rows(records, method) for method in methods},
        "auc": {
            method: mean_ci(known) if (known := [a for a in values if a is not None]) else None
            for method, values in aucs.items()
        },
        "auc_ranges": [{key: t[key] for key in ("trial", "low", "high")} for t in trials],
        "chance_floor": mean_ci(chances) if chances else None,
        "paired": paired,
        "unverified": sum(
            not e["verified"] for r in records for m in methods for e in _frontier(r, m)
        ),
    }


def summarise_stability(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean [95 % CI] over the trials that measured it; None when none did."""
    measured = [r["stability"] for r in records if r.get("stability")]
    if not measured:
        return None
    return {
        "keep_ratios": sorted({s["keep_ratio"] for s in measured}, reverse=True),
        # A trial's seed values are not independent of each other: one mean per trial.
        "seed_jaccard": mean_ci(
            [sum(s["seed_jaccard"]) / len(s["seed_jaccard"]) for s in measured]
        ),
        "region_jaccard": mean_ci([s["region_jaccard"] for s in measured]),
    }


def ci_cell(ci: dict[str, Any] | None, decimals: int, signed: bool = False) -> str:
    if ci is None:
        return "–"
    sign = "+" if signed else ""
    return (
        f"{ci['mean']:{sign}.{decimals}f} [{ci['low']:{sign}.{decimals}f}, "
        f"{ci['high']:{sign}.{decimals}f}]"
    )


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{ratio:g}" for ratio in values)


def _test_row(method: str, at: str, test: dict[str, Any] | None) -> str:
    if test is None:
        return f"| {method} | {at} | – | – | – |"
    p = "–" if test["wilcoxon_p"] is None else f"{test['wilcoxon_p']:.3g}"
    record = f"{test['wins']} / {test['losses']} / {test['ties']}"
    return f"| {method} | {at} | {ci_cell(test['difference'], 1, signed=True)} | {record} | {p} |"


def frontier_markdown(frontier: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Fidelity–sparsity frontier",
        "",
        f"Every method is measured at each budget (keep ratios {_ratios(frontier['budgets'])}). "
        "Cells are the mean [95 % confidence interval] over the trials that measured them "
        "(Student's t). Class agreement is top-1 agreement within the region's classes; "
        "*confident* is the half of the holdout on which the original's top-2 margin is above "
        "its median; margin retention is the median over holdout images of the chain's "
        "top-1 margin over the original's, in log-probabilities at the original's top-1 "
        "class (negative where the chain disagrees).",
    ]
    header = ["keep ratio", "trials", *(column for column, _, _, _ in COLUMNS)]
    for method, rows in frontier["methods"].items():
        lines += ["", f"### {method}", "", "| " + " | ".join(header) + " |"]
        lines.append("| --- " * len(header) + "|")
        for row in rows:
            cells = [ci_cell(row[column], decimals) for column, _, _, decimals in COLUMNS]
            lines.append(f"| {row['keep_ratio']:g} | {row['trials']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Area under the frontier",
        "",
        "In each trial, a method's holdout class agreement is interpolated linearly between "
        "its budgets against the fraction of filters removed, and averaged over the widest "
        "range of fractions removed that every method's budgets span in that trial: from the "
        "largest of the methods' lowest fractions removed to the smallest of their highest "
        "(`auc_ranges` in summary.json). A trial where those ranges do not overlap has no AUC. "
        "The chance floor is the holdout class agreement of always answering the original's "
        "most frequent within-class prediction.",
        "",
        "| method | AUC (mean holdout class agreement %) |",
        "| --- | --- |",
    ]
    lines += [f"| {method} | {ci_cell(ci, 1)} |" for method, ci in frontier["auc"].items()]
    lines.append(f"| chance floor | {ci_cell(frontier['chance_floor'], 1)} |")
    if frontier["paired"]:
        lines += [
            "",
            "### NeuroChains against each method, paired by trial",
            "",
            "Difference: NeuroChains minus the method, in points of holdout class agreement "
            "%, mean [95 % t-interval] over trials; the trials NeuroChains wins / loses / "
            "ties; p: the two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, "
            "zero differences dropped; – with fewer than two non-zero differences).",
            "",
            "| method | at | difference | wins / losses / ties | Wilcoxon p |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method, tests in frontier["paired"].items():
            lines += [
                _test_row(method, f"keep {budget['keep_ratio']:g}", budget["test"])
                for budget in tests["budgets"]
            ]
            lines.append(_test_row(method, "AUC", tests["auc"]))
    if frontier["unverified"]:
        lines += ["", f"**{frontier['unverified']} frontier chains failed verification.**"]
    return lines


def stability_markdown(stability: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Stability",
        "",
        "Jaccard overlap of the kept filters, at each chain's own budget (from "
        f"{100 * min(stability['keep_ratios']):.1f} to {100 * max(stability['keep_ratios']):.1f}"
        " % of the filters), mean [95 % CI] over trials: seed, between the trial's chain and "
        "its chains from two other seeds (a trial's two values averaged first); region, "
        "between the trial's chain and the chain of a re-drawn region of the same classes "
        "(as many other images per class).",
        "",
        f"- seed Jaccard: {ci_cell(stability['seed_jaccard'], 3)} "
        f"({stability['seed_jaccard']['n']} trials)",
        f"- region Jaccard: {ci_cell(stability['region_jaccard'], 3)} "
        f"({stability['region_jaccard']['n']} trials)",
    ]


def frontier_figure(frontier: dict[str, Any]) -> Any:
    """Holdout class agreement against % filters removed: a line and 95 % CI band per
    method, the chance floor dashed. Needs matplotlib's backend chosen already."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for method, rows in frontier["methods"].items():
        points = sorted(
            (row["filters removed %"]["mean"], row[CLASS_AGREEMENT])
            for row in rows
            if row[CLASS_AGREEMENT] is not None and row["filters removed %"] is not None
        )
        if not points:
            continue
        x = [removed for removed, _ in points]
        line = axes.plot(
            x,
            [ci["mean"] for _, ci in points],
            marker="*" if method == CHAIN else "o",
            label=method,
        )[0]
        low, high = [ci["low"] for _, ci in points], [ci["high"] for _, ci in points]
        axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    if frontier["chance_floor"] is not None:
        axes.axhline(
            frontier["chance_floor"]["mean"], color="grey", linestyle="--", label="chance floor"
        )
    finish_plot(
        figure,
        "holdout class agreement with the original (%)",
        "Fidelity–sparsity frontier, mean and 95 % CI over trials",
    )
    return figure


def finish_plot(figure: Any, ylabel: str, title: str) -> None:  # noqa: ANN401
    """Labels, grid and legend of a sweep plot against the filters removed."""
    axes = figure.axes[0]
    axes.set_xlabel("filters removed (%)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
