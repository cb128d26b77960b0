"""report.html: one self-contained page (images and SVG inline, no external URL) per chain."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from chainx.chain.verify import log_softmax
from chainx.images import Preprocessing
from chainx.render.featuremaps import displayable
from chainx.render.html import escape as _e
from chainx.settings import class_of

THUMBNAIL = 64


@dataclass
class Prediction:
    path: Path
    label: str
    original: int
    original_p: float
    chain: int
    chain_p: float
    true_class: int | None = None  # the folder's class, when class names tell it

    @property
    def agrees(self) -> bool:
        return self.original == self.chain

    @property
    def misclassified(self) -> bool | None:
        """Whether the original model gets the image wrong (None: its class is unknown)."""
        return None if self.true_class is None else self.original != self.true_class


def predictions(
    paths: list[Path],
    labels: list[str],
    original: np.ndarray,
    chain: np.ndarray,
    kind: str,
    class_names: list[str] | None = None,
) -> list[Prediction]:
    p, q = np.exp(log_softmax(original, kind)), np.exp(log_softmax(chain, kind))
    return [
        Prediction(
            path,
            label,
            int(a.argmax()),
            float(a.max()),
            int(b.argmax()),
            float(b.max()),
            class_of(label, class_names) if class_names and label else None,
        )
        for path, label, a, b in zip(paths, labels, p, q, strict=True)
    ]


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _jpeg(image: Image.Image) -> str:
    """Photographic strips as JPEG: a fifth of the PNG's size, so large chains open fast."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='facts'>{body}</table>"


def _fidelity_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name in ("region", "holdout"):
        f = metrics.get(name)
        if not f:
            continue
        rows.append(
            (
                name,
                f"top-1 agreement {f['agree']}/{f['images']} ({100 * f['agreement']:.1f} %), "
                f"within the region's classes {f['class_agree']}/{f['images']}, "
                f"mean KL {f['mean_kl']:.4f}",
            )
        )
    return rows


def _prediction_rows(
    items: list[Prediction],
    images: np.ndarray,
    prep: Preprocessing,
    class_names: list[str] | None,
) -> str:
    def name(index: int) -> str:
        return f"{index} {class_names[index]}" if class_names else str(index)

    rows = []
    for item, image in zip(items, images, strict=True):
        thumb = Image.fromarray(displayable(image, prep)).resize((THUMBNAIL, THUMBNAIL))
        mark = "agree" if item.agrees else "disagree"
        wrong = {None: "", True: " misclassified", False: ""}[item.misclassified]
        notes = ("✓ agrees" if item.agrees else "✗ disagrees") + (
            " · original misclassifies" if item.misclassified else ""
        )
        rows.append(
            f"<tr class='{mark}{wrong}'><td><img src='{_png(thumb)}' width='{THUMBNAIL}' "
            f"height='{THUMBNAIL}' alt='{_e(item.path.name)}'></td>"
            f"<td>{_e(item.path.name)}</td><td>{_e(item.label or '—')}</td>"
            f"<td>{_e(name(item.original))} ({item.original_p:.2f})</td>"
            f"<td>{_e(name(item.chain))} ({item.chain_p:.2f})</td>"
            f"<td>{_e(notes)}</td></tr>"
        )
    head = (
        "<tr><th></th><th>image</th><th>folder</th><th>original top-1 (p)</th>"
        "<th>chain top-1 (p)</th><th></th></tr>"
    )
    return f"<table class='predictions'>{head}{''.join(rows)}</table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 3px 8px; text-align: left; vertical-align: middle; }
table.facts th { color: #555; font-weight: 600; }
tr.disagree { background: #fde8e8; }
tr.misclassified td:last-child { font-weight: 600; color: #92400e; }
.diagram svg { max-width: 100%; height: auto; }
.strip { overflow-x: auto; white-space: nowrap; }
.strip img { height: 112px; image-rendering: auto; }
.passed { color: #17803d; } .failed { color: #b91c1c; }
"""


# Marks the page once every inline image has decoded, so a headless browser can tell.
CHECK_IMAGES = """
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  document.body.dataset.images = broken.length ? 'broken:' + broken.length : 'ok';
  if (broken.length) console.error('chainx report: ' + broken.length + ' images failed');
});
"""


def report_html(
    data: dict[str, Any],
    files: dict[str, bytes],
    region: list[Prediction],
    region_images: np.ndarray,
    holdout: list[Prediction] | None,
    holdout_images: np.ndarray | None,
    prep: Preprocessing,
    class_names: list[str] | None = None,
    frontier_png: bytes | None = None,
) -> str:
    """report.html from chain.json's data and the files that go beside it (relative path →
    content: chain.svg, the featuremap strips, the filter sheets, frontier.json), with the
    frontier plot when there is a frontier."""
    summary, metrics = data["summary"], data["metrics"]
    passed = metrics["exactness"]["passed"] and not metrics["exact_copies"]["mismatched"]
    status = "passed" if passed else "failed"
    facts = [
        ("model", data["source"]["model"]),
        ("region", data["source"]["images"]),
        ("layers kept", f"{summary['layers_kept']}/{summary['layers_total']}"),
        (
            "filters kept",
            f"{summary['filters_kept']:,}/{summary['filters_total']:,} "
            f"({100 * summary['filters_removed_fraction']:.1f} % removed)",
        ),
        *_fidelity_rows(metrics),
        ("verification", f"{status}: max |Δ| {metrics['exactness']['max_abs_diff']:.3g}"),
        *_budget_rows(data.get("budget")),
    ]
    cost = metrics["cost"]
    forms = [form for form in ("original", "chain", "deploy") if form in cost]
    cost_rows = [
        (
            key.replace("_", " "),
            " · ".join(
                f"{form} {cost[form][key]:,}"
                if isinstance(cost[form][key], int)
                else f"{form} {cost[form][key]:.3g}"
                for form in forms
                if key in cost[form]
            ),
        )
        for key in ("parameters", "file_bytes", "macs", "latency_ms")
    ]
    svg = files["chain.svg"].decode("utf-8")
    svg = svg[svg.index("<svg") :]
    paths = "".join(
        f"<li>{_e(path['text'])} <small>(strength {path['strength']:.3g})</small></li>"
        for path in data.get("paths", [])
    )
    strips = "".join(
        f"<h3>{_e(layer['display'])}</h3><div class='strip'><img alt='{_e(layer['display'])}' "
        f"src='{_jpeg(_image(files[data['featuremaps'][layer['node']]]))}'></div>"
        for layer in data["layers"]
        if layer["node"] in data.get("featuremaps", {})
    )
    sheets = "".join(
        f"<h3>{_e(layer['display'])}</h3><img alt='top units of {_e(layer['display'])}' "
        f"src='{_jpeg(_image(files[data['filters'][layer['node']]]))}'>"
        for layer in data["layers"]
        if layer["node"] in data.get("filters", {})
    )
    sections = [
        f"<h1>chainx · {_e(Path(data['source']['model']).name)}</h1>",
        f"<p class='{status}'>verification {status}</p>",
        "<h2>Summary</h2>",
        _table(facts),
        "<h2>Chain</h2>",
        f"<div class='diagram'>{svg}</div>",
        *_budget_section(data.get("budget")),
        *_frontier_section(files, frontier_png),
        "<h2>Strongest inference paths</h2>",
        f"<ol>{paths}</ol>" if paths else "<p>none</p>",
        "<h2>Featuremaps (SMOE scale, from the chain)</h2>",
        strips,
        "<h2>Top units (activation maximisation; the region image that excites each most, and "
        "the crops where it peaks; a head by its output norm)</h2>",
        sheets or "<p>not computed</p>",
        "<h2>Predictions on the region</h2>",
        _prediction_rows(region, region_images, prep, class_names),
    ]
    if holdout is not None and holdout_images is not None:
        sections += ["<h2>Predictions on the holdout</h2>"]
        sections += [_prediction_rows(holdout, holdout_images, prep, class_names)]
    sections += ["<h2>Cost</h2>", _table(cost_rows)]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>chainx report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}<script>{CHECK_IMAGES}</script></body></html>"
    )


def _budget_rows(budget: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not budget:
        return []
    if budget["mode"] == "keep-ratio":
        return [("budget", f"--keep-ratio {budget['keep_ratio']:g}")]
    if budget["mode"] == "tau":
        return [("budget", f"--tau {budget['tau']:g}")]
    chosen = budget["chosen"]
    return [("budget", f"{chosen['keep_ratio']:.3g} of the filters: {budget['reason']}")]


def _budget_section(budget: dict[str, Any] | None) -> list[str]:
    """The default search's budgets, densest first, the chosen one marked."""
    if not budget or budget["mode"] != "auto":
        return []
    chosen = budget["chosen"]
    rows = "".join(
        f"<tr class='{'chosen' if trial == chosen else ''}'><td>{trial['keep_ratio']:.3g}</td>"
        f"<td>{trial['filters']:,}</td><td>{100 * trial['agreement']:.0f} %</td>"
        f"<td>{trial['kl']:.3g}</td><td>{_e(trial['source'])} (step {trial['step']})</td>"
        f"<td>{'chosen' if trial == chosen else ''}</td></tr>"
        for trial in sorted(budget["tried"], key=lambda t: -t["keep_ratio"])
    )
    return [
        f"<h2>Budgets tried (the sparsest keeping ≥ {100 * budget['min_agreement']:.0f} % of "
        "the region after fine-tuning)</h2>",
        "<table><tr><th>share of filters</th><th>filters</th><th>region agreement</th>"
        f"<th>KL</th><th>cut from</th><th></th></tr>{rows}</table>",
    ]


def _image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def _frontier_section(files: dict[str, bytes], png: bytes | None) -> list[str]:
    """The frontier plot and its table: what each budget keeps of the original's outputs."""
    if png is None or "frontier.json" not in files:
        return []

    def percent(side: dict[str, Any] | None, key: str) -> str:
        return "–" if side is None or side[key] is None else f"{100 * side[key]:.1f} %"

    rows = "".join(
        f"<tr><td>{100 * entry['keep_ratio']:g} %</td><td>{entry['filters_kept']:,}</td>"
        f"<td>{percent(entry['region'], 'agreement')}</td>"
        f"<td>{percent(entry['holdout'], 'agreement')}</td>"
        f"<td>{percent(entry['holdout'], 'class_agreement')}</td>"
        f"<td>{'passed' if entry['verified'] else 'FAILED'}</td></tr>"
        for entry in json.loads(files["frontier.json"])
    )
    source = "data:image/png;base64," + base64.b64encode(png).decode()
    return [
        "<h2>Frontier (one optimisation, cut at each budget and fine-tuned)</h2>",
        f"<img alt='fidelity against filters kept' src='{source}'>",
        "<table><tr><th>budget</th><th>filters kept</th><th>region top-1</th>"
        "<th>holdout top-1</th><th>holdout within classes</th><th>verification</th></tr>"
        f"{rows}</table>",
    ]
