"""The frontier plot of report.html: region and holdout agreement against filters kept."""

from __future__ import annotations

import io
from typing import Any


def frontier_plot(entries: list[dict[str, Any]]) -> bytes:
    """A PNG: top-1 and within-class agreement on the region and the holdout, one point per
    frontier chain, against the percentage of filters it keeps (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = [100 * (1 - entry["filters_removed_fraction"]) for entry in entries]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    lines = [
        ("region", "agreement", "region top-1", "#3b528b", "-"),
        ("holdout", "agreement", "holdout top-1", "#21908d", "-"),
        ("holdout", "class_agreement", "holdout, within the region's classes", "#5cc863", "--"),
        ("holdout", "chance", "holdout chance floor (within classes)", "#9e9e9e", ":"),
    ]
    for side, key, label, colour, style in lines:
        if any(entry[side] is None for entry in entries):
            continue
        values = [
            entry[side]["chance"]["class_agreement"] if key == "chance" else entry[side][key]
            for entry in entries
        ]
        marker = "" if key == "chance" else "o"
        axes.plot(kept, [100 * v for v in values], style, marker=marker, color=colour, label=label)
    axes.set_xscale("log")
    axes.set_xticks(kept, [f"{k:.3g}" for k in kept])
    axes.minorticks_off()
    axes.invert_xaxis()  # sparser to the right, as the frontier is read
    axes.set_xlabel("filters kept (%)")
    axes.set_ylabel("agreement with the original (%)")
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="lower left")
    axes.set_title("Fidelity against sparsity: where the chain stops explaining the region")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
