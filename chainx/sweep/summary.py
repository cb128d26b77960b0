"""What a sweep's trials add up to: mean ± std per method and metric, the fidelity–sparsity
frontiers where the trials measured them, and the PNG plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chainx.outputs import write_atomic
from chainx.sweep.frontier_summary import (
    finish_plot,
    frontier_figure,
    frontier_markdown,
    stability_markdown,
    summarise_frontier,
    summarise_stability,
)
from chainx.sweep.plan import CHAIN

Metric = Callable[[dict[str, Any]], float | None]


def _percent(*keys: str) -> Metric:
    def value(entry: dict[str, Any]) -> float | None:
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        return None if entry is None else 100 * float(entry)

    return value


def _plain(*keys: str) -> Metric:
    def value(entry: dict[str, Any]) -> float | None:
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        return None if entry is None else float(entry)

    return value


# (column, how to read it from a method's entry, decimals)
METRICS: list[tuple[str, Metric, int]] = [
    ("filters removed %", _percent("filters_removed_fraction"), 1),
    ("filters kept", _plain("filters_kept"), 0),
    ("layers kept", _plain("layers_kept"), 1),
    ("region agreement %", _percent("region", "agreement"), 1),
    ("region class agreement %", _percent("region", "class_agreement"), 1),
    ("region mean KL", _plain("region", "mean_kl"), 3),
    ("holdout agreement %", _percent("holdout", "agreement"), 1),
    ("holdout class agreement %", _percent("holdout", "class_agreement"), 1),
    ("holdout mean KL", _plain("holdout", "mean_kl"), 3),
    ("region accuracy %", _percent("accuracy", "region"), 1),
    ("holdout accuracy %", _percent("accuracy", "holdout"), 1),
]
ORIGINAL = "original"


def _methods(records: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for record in records:
        names += [name for name in record["methods"] if name not in names]
    return names


def _entries(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's entry, plus the original model's accuracy as a row of its own."""
    original = {
        "filters_removed_fraction": 0.0,
        "accuracy": record["original_accuracy"],
        "region": {"agreement": 1.0, "class_agreement": 1.0, "mean_kl": 0.0},
        "holdout": {"agreement": 1.0, "class_agreement": 1.0, "mean_kl": 0.0},
    }
    return {**record["methods"], ORIGINAL: original}


def _holdout_comparison(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per baseline: in how many trials NeuroChains' holdout agreement is higher, equal, lower."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        chain = record["methods"].get(CHAIN, {}).get("holdout")
        for method, entry in record["methods"].items():
            if method == CHAIN or chain is None or entry.get("holdout") is None:
                continue
            difference = chain["agreement"] - entry["holdout"]["agreement"]
            outcome = "higher" if difference > 0 else "lower" if difference < 0 else "equal"
            row = counts.setdefault(method, {"higher": 0, "equal": 0, "lower": 0})
            row[outcome] += 1
    return counts


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, dict[str, dict[str, float] | None]] = {}
    for method in [*_methods(records), ORIGINAL]:
        row = {}
        for column, read, _ in METRICS:
            values = [
                read(entry)
                for record in records
                if (entry := _entries(record).get(method)) is not None
            ]
            known = [v for v in values if v is not None]
            row[column] = (
                {"mean": float(np.mean(known)), "std": float(np.std(known)), "n": len(known)}
                if known and len(known) == len(values)
                else None
            )
        table[method] = row
    walls = [record["wall_s"] for record in records]
    return {
        "frontier": summarise_frontier(records),
        "holdout_comparison": _holdout_comparison(records),
        "trials": len(records),
        "scores_finetuned": sorted(
            {
                method
                for record in records
                for method, entry in record["methods"].items()
                if entry.get("scores_finetuned")
            }
        ),
        "stability": summarise_stability(records),
        "table": table,
        "wall_s": {"mean": float(np.mean(walls)), "std": float(np.std(walls))} if walls else None,
        "unverified": sum(
            not entry["verified"] for record in records for entry in record["methods"].values()
        ),
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    finetuned = [m for m in summary["scores_finetuned"] if m != CHAIN]
    unscaled = [m for m in summary["table"] if m not in {CHAIN, ORIGINAL, *finetuned}]
    scores = []
    if finetuned:
        scores.append(
            f"The kept filters' scores were fine-tuned for {', '.join(finetuned)} as for "
            "NeuroChains."
        )
    if unscaled:
        scores.append(f"{', '.join(unscaled)} keep multipliers of 1 (no fine-tuning).")
    lines = [
        f"{summary['trials']} trials; mean ± std over trials. Every method keeps the same "
        "number of filters per layer as NeuroChains; `original` is the unpruned model. "
        + " ".join(scores),
        "",
        "| method | " + " | ".join(column for column, _, _ in METRICS) + " |",
        "| --- " * (len(METRICS) + 1) + "|",
    ]
    for method, row in summary["table"].items():
        cells = []
        for column, _, decimals in METRICS:
            cell = row[column]
            cells.append(
                "–" if cell is None else f"{cell['mean']:.{decimals}f} ± {cell['std']:.{decimals}f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if summary["holdout_comparison"]:
        lines += ["", "Trials in which NeuroChains' holdout agreement is higher / equal / lower:"]
        lines += [
            f"- vs {method}: {row['higher']} / {row['equal']} / {row['lower']}"
            for method, row in summary["holdout_comparison"].items()
        ]
    if summary["wall_s"]:
        wall = summary["wall_s"]
        lines += ["", f"Wall time per trial: {wall['mean']:.0f} ± {wall['std']:.0f} s."]
    if summary["unverified"]:
        lines += ["", f"**{summary['unverified']} exported chains failed verification.**"]
    if summary["frontier"]:
        lines += frontier_markdown(summary["frontier"])
    if summary["stability"]:
        lines += stability_markdown(summary["stability"])
    return "\n".join(lines) + "\n"


def _plot_sparsity(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5), dpi=120)
    for method in _methods(records):
        points = [
            (100 * entry["filters_removed_fraction"], 100 * entry["holdout"]["agreement"])
            for record in records
            if (entry := record["methods"].get(method)) and entry.get("holdout")
        ]
        if points:
            x, y = zip(*points, strict=True)
            axes.scatter(
                x, y, label=method, alpha=0.75, s=24, marker="*" if method == CHAIN else "o"
            )
    finish_plot(
        figure,
        "holdout top-1 agreement with the original (%)",
        "Sparsity against holdout fidelity, one point per trial",
    )
    _save(figure, path)


def _plot_layers(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    layers = records[0]["layers"]
    kept = np.array([[n > 0 for n in r["methods"][CHAIN]["layer_filters"]] for r in records])
    figure, axes = plt.subplots(figsize=(max(6, 0.22 * len(layers) + 2), 4), dpi=120)
    axes.bar(range(len(layers)), 100 * kept.mean(0), color="#3b528b")
    axes.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
    axes.set_ylabel("trials that keep the layer (%)")
    axes.set_ylim(0, 100)
    axes.set_title(f"How often NeuroChains keeps each layer ({len(records)} trials)")
    figure.tight_layout()
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomic(path, buffer.getvalue())


SUMMARY_FILES = (
    "summary.md",
    "summary.json",
    "sparsity_vs_holdout.png",
    "layers_kept.png",
    "frontier.png",
)


def write_summary(records: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    summary = summarise(records)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    write_atomic(out / "summary.md", summary_markdown(summary).encode())
    if records:
        _plot_sparsity(records, out / "sparsity_vs_holdout.png")
        _plot_layers(records, out / "layers_kept.png")
    if summary["frontier"]:
        _save(frontier_figure(summary["frontier"]), out / "frontier.png")
    return summary
