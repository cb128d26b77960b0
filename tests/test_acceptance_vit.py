"""Acceptance on the trained ViT (sample_models/cifar_vit.onnx, tools/train_vit.py): a chain
of heads and MLP neurons for 10 automobiles and 10 trucks it did not train on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CHROMIUM, REPO, SHARED, assert_report_images_ok, assert_report_renders

import chainx

MODEL = REPO / "sample_models" / "cifar_vit.onnx"
CIFAR = SHARED / "data" / "cifar10" / "test"
TRAINED_ON = 800  # the first 800 images of each class (tools/train_vit.py)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CIFAR.exists(), reason="../shared (CIFAR-10) absent"),
]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "automobile_truck"
    arguments = ["--source", CIFAR, "--classes", "automobile,truck", "--count", 10]
    arguments += ["--holdout-count", 190, "--skip", TRAINED_ON, "--out", out]
    subprocess.run(
        [sys.executable, "tools/make_region.py", *map(str, arguments)], check=True, cwd=REPO
    )
    return out


def test_trained_vit_chain_removes_90_percent_of_heads_and_neurons(
    region: Path, tmp_path: Path
) -> None:
    data = chainx.extract(
        MODEL,
        region / "region",
        region / "holdout",
        out=tmp_path / "chain",
        resize=32,
        class_names=REPO / "tools" / "class_names" / "cifar10.txt",
    ).to_json()
    units = data["summary"]["units"]
    kept = units["head"]["kept"] + units["neuron"]["kept"]
    total = units["head"]["total"] + units["neuron"]["total"]
    assert (units["head"]["total"], units["neuron"]["total"]) == (16, 512)
    assert 1 - kept / total >= 0.90
    assert data["metrics"]["region"]["agree"] >= 19
    assert data["metrics"]["exactness"]["passed"]
    assert data["metrics"]["exact_copies"]["mismatched"] == []
    report = tmp_path / "chain" / "report.html"
    assert assert_report_images_ok(report) >= len(data["featuremaps"])
    if CHROMIUM is not None:
        assert_report_renders(report, tmp_path / "shot.png")
