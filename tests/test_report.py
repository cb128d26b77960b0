"""report.html: self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import (
    CHROMIUM,
    SAMPLE_HOLDOUT,
    SAMPLE_MODEL,
    SAMPLE_REGION,
    assert_report_images_ok,
    assert_report_renders,
)

import chainx


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sample.chain"
    chainx.extract(
        SAMPLE_MODEL, SAMPLE_REGION, SAMPLE_HOLDOUT, out=out, resize=28, steps=80, finetune_steps=10
    )
    return out / "report.html"


def test_the_report_is_self_contained_and_complete(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", page)  # nothing external
    data = json.loads((report.parent / "chain.json").read_text())
    sections = ("Summary", "Chain", "Strongest inference paths", "Featuremaps", "Top units")
    for section in (*sections, "Cost"):
        assert f"<h2>{section}" in page
    assert "<svg" in page and data["paths"][0]["text"].split(" → ")[0] in page
    assert page.count("<tr class='agree'>") + page.count("<tr class='disagree'>") == 20 + 80
    assert data["filters"] and set(data["filters"]) == set(data["featuremaps"])
    count = assert_report_images_ok(report)
    assert count >= 100 + len(data["featuremaps"]) + len(data["filters"])


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (tools/setup.sh installs it)"
)
def test_headless_chromium_renders_the_report(report: Path, tmp_path: Path) -> None:
    assert_report_renders(report, tmp_path / "shot.png")
