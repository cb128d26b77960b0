"""What the drawings share: HTML escaping (report, diagram labels) and the viridis scale."""

from __future__ import annotations

import html

import numpy as np

# matplotlib's viridis sampled at 9 evenly spaced points: perceptually uniform, readable in
# greyscale and by most colour-blind readers, so close values look close.
VIRIDIS = np.array(
    [
        [int(c[i : i + 2], 16) for i in (1, 3, 5)]
        for c in (
            "#440154",
            "#472c7a",
            "#3b518b",
            "#2c718e",
            "#21908d",
            "#27ad81",
            "#5cc863",
            "#aadc32",
            "#fde725",
        )
    ],
    dtype=np.float64,
)


def escape(value: object) -> str:
    """Text for HTML and for Graphviz's HTML-like labels: & < > and quotes escaped."""
    return html.escape(str(value), quote=True)


def viridis(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) → RGB in [0, 255] (shape + (3,)), float, on the stops."""
    position = np.clip(values, 0.0, 1.0) * (len(VIRIDIS) - 1)
    low = np.floor(position).astype(int).clip(0, len(VIRIDIS) - 2)
    weight = (position - low)[..., None]
    return VIRIDIS[low] * (1 - weight) + VIRIDIS[low + 1] * weight


def viridis_hex(value: float) -> str:
    return "#" + "".join(f"{round(float(c)):02x}" for c in viridis(np.asarray(value)))
