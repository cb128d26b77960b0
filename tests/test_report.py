"""report.html: self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION
from PIL import Image

from chainx.extract import ExtractOptions, extract
from chainx.optimise_settings import OptimiseSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sample.chain"
    extract(
        ExtractOptions(
            model=SAMPLE_MODEL,
            images=SAMPLE_REGION,
            holdout=SAMPLE_HOLDOUT,
            out=out,
            resize=28,
            optimise=OptimiseSettings(steps=80, finetune_steps=10),
        )
    )
    return out / "report.html"


def test_the_report_is_self_contained_and_complete(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", page)  # nothing external
    data = json.loads((report.parent / "chain.json").read_text())
    sections = ("Summary", "Chain", "Strongest inference paths", "Featuremaps", "Top filters")
    for section in (*sections, "Cost"):
        assert f"<h2>{section}" in page
    assert "<svg" in page and data["paths"][0]["text"].split(" → ")[0] in page
    assert page.count("<tr class='agree'>") + page.count("<tr class='disagree'>") == 20 + 80
    # Every inline image decodes, is finite and is not blank.
    images = re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", page)
    assert data["filters"] and set(data["filters"]) == set(data["featuremaps"])
    assert len(images) >= 100 + len(data["featuremaps"]) + len(data["filters"])
    for encoded in images:
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))), np.float64)
        assert np.isfinite(pixels).all() and pixels.std() > 0.5


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (tools/setup.sh installs it)"
)
def test_headless_chromium_renders_the_report(report: Path, tmp_path: Path) -> None:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    url = report.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--enable-logging=stderr", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'data-images="ok"' in dom.stdout  # every image decoded in the browser
    # Chromium logs every console message (errors too) as a CONSOLE line; the page has none.
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.std() > 10  # not a blank page
