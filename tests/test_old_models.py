"""A model as the classic ONNX model zoo ships it (tools/make_zoo_style_model.py): IR version
3 with initializers as inputs, opset 8, auto_pad, a fixed batch of 1 and 0–255 inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from conftest import REPO, SAMPLE_HOLDOUT, SAMPLE_REGION
from typer.testing import CliRunner

from chainx.cli import app
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session

ZOO_STYLE = REPO / "sample_models" / "mnist_zoo_style.onnx"
ZERO_TO_255 = ["--size", "28", "--resize", "28", "--mean", "0", "--std", str(1 / 255)]


def test_the_sample_has_the_zoo_files_conventions() -> None:
    model = onnx.load(ZOO_STYLE)
    assert model.ir_version == 3
    assert [o.version for o in model.opset_import] == [8]
    assert {i.name for i in model.graph.initializer} <= {i.name for i in model.graph.input}
    assert all(
        any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in node.attribute)
        for node in model.graph.node
        if node.op_type == "Conv"
    )
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_its_fixed_batch_is_freed_and_the_outputs_kept() -> None:
    original = load_model(ZOO_STYLE)
    normalised = normalise(original)
    assert normalised.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 1, 28, 28)).astype(np.float32)
    expected = run(session(original, cpu=True), pixels)  # one image at a time
    np.testing.assert_allclose(run(session(normalised, cpu=True), pixels), expected, rtol=1e-5)


def test_it_extracts_a_faithful_exact_chain(tmp_path: Path) -> None:
    out = tmp_path / "zoo.chain"
    outcome = CliRunner().invoke(
        app,
        [
            "extract",
            str(ZOO_STYLE),
            str(SAMPLE_REGION),
            "--holdout",
            str(SAMPLE_HOLDOUT),
            "--out",
            str(out),
            *ZERO_TO_255,
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((out / "chain.json").read_text())
    assert record["summary"]["filters_removed_fraction"] > 0.5
    region = record["metrics"]["region"]
    assert (region["agree"], region["images"]) == (20, 20)
    assert record["metrics"]["exactness"]["passed"]
    chain = onnx.load(out / "chain.onnx")
    onnx.checker.check_model(chain, full_check=True)
    digits = np.random.default_rng(1).uniform(0, 255, (3, 1, 28, 28)).astype(np.float32)
    assert run(session(out / "chain.onnx", cpu=True), digits).shape == (3, 10)
