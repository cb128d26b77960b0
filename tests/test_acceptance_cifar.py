"""Acceptance on a real pretrained network: CIFAR-10 ResNet-20 from ../shared.

Skipped when ../shared is absent (a user's fresh clone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, REPO, SHARED, assert_report_images_ok, assert_report_renders

import chainx

WEIGHTS = SHARED / "models" / "cifar10_resnet20.th"
CIFAR = SHARED / "data" / "cifar10" / "test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (WEIGHTS.exists() and CIFAR.exists()), reason="../shared (CIFAR-10, ResNet-20) absent"
    ),
]


def _tool(*args: object) -> None:
    subprocess.run([sys.executable, *map(str, args)], check=True, cwd=REPO)


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("cifar")
    model = work / "cifar10_resnet20.onnx"
    _tool("tools/export_cifar_resnet.py", "--depth", 20, "--weights", WEIGHTS, "--out", model)
    region = work / "airplane_ship"
    _tool(
        "tools/make_region.py",
        "--source",
        CIFAR,
        "--classes",
        "airplane,ship",
        "--count",
        10,
        "--holdout-count",
        100,
        "--out",
        region,
    )
    return model, region


def test_resnet20_chain_removes_90_percent_and_keeps_the_region(
    resnet20: tuple[Path, Path], tmp_path: Path
) -> None:
    model, region = resnet20
    data = chainx.extract(
        model,
        region / "region",
        region / "holdout",
        out=tmp_path / "chain",
        resize=32,
        class_names=REPO / "tools" / "class_names" / "cifar10.txt",
        keep_ratio=0.07,
        finetune_steps=200,
        frontier=(0.3, 0.15, 0.07, 0.03),
    ).to_json()
    assert data["summary"]["filters_removed_fraction"] >= 0.90
    assert data["metrics"]["region"]["agree"] == 20
    assert data["metrics"]["exactness"]["passed"]
    assert data["metrics"]["exact_copies"]["mismatched"] == []
    assert data["metrics"]["holdout"]["images"] == 200
    assert data["frozen_ops"] == []

    frontier = json.loads((tmp_path / "chain" / "frontier.json").read_text())
    assert [entry["keep_ratio"] for entry in frontier] == [0.3, 0.15, 0.07, 0.03]
    assert all(entry["verified"] for entry in frontier)
    assert frontier[0]["region"]["agreement"] >= 0.95  # 70 % removed keeps the region
    report = tmp_path / "chain" / "report.html"
    assert assert_report_images_ok(report) >= 220 + len(data["featuremaps"]) + len(data["filters"])
    # The CIFAR class names mark what the original gets wrong.
    assert "original misclassifies" in report.read_text(encoding="utf-8")
    assert "<h2>Frontier" in report.read_text(encoding="utf-8")
    if CHROMIUM is not None:
        assert_report_renders(report, tmp_path / "shot.png")
