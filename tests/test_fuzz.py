"""Mutated real model and image files: chainx ends in success or in a clear user error.

Hypothesis flips, deletes and inserts bytes in the bundled sample model and in a real
region image. Every run must end with exit code 0 or 2 (a ChainxError with its message):
never an internal error, a traceback, or a hang.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from conftest import SAMPLE_MODEL, SAMPLE_REGION
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from chainx.cli import app

QUICK = ["--resize", "28", "--steps", "3", "--finetune-steps", "1", "--filter-images", "0"]
MODEL_BYTES = SAMPLE_MODEL.read_bytes()
IMAGE = sorted(SAMPLE_REGION.rglob("*.png"))[0]
IMAGE_BYTES = IMAGE.read_bytes()

edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "delete", "insert", "truncate"]),
        # Positions as integers: torch's flush-denormal mode breaks hypothesis' floats.
        st.integers(0, 1_000_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, changes: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, value in changes:
        at = where * len(buffer) // 1_000_001
        if kind == "flip" and buffer:
            buffer[at] ^= value or 1
        elif kind == "delete" and buffer:
            del buffer[at : at + 1 + value % 16]
        elif kind == "insert":
            buffer[at:at] = bytes([value]) * (1 + value % 8)
        elif kind == "truncate":
            del buffer[at:]
    return bytes(buffer)


def run_extract(model: Path, images: Path, out: Path) -> None:
    result = CliRunner().invoke(
        app, ["extract", str(model), str(images), "--out", str(out), *QUICK]
    )
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error" in result.output.lower()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
@example([("flip", 999989, 32)])  # the opset version: once an internal ValueError
def test_a_mutated_model_is_handled(changes: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model.onnx"
        model.write_bytes(mutate(MODEL_BYTES, changes))
        run_extract(model, SAMPLE_REGION, Path(folder) / "out")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits)
def test_a_mutated_image_is_handled(changes: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "images"
        shutil.copytree(SAMPLE_REGION, images)
        target = images / IMAGE.relative_to(SAMPLE_REGION)
        target.write_bytes(mutate(IMAGE_BYTES, changes))
        run_extract(SAMPLE_MODEL, images, Path(folder) / "out")
