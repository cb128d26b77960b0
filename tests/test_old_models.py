"""Files as the classic ONNX model zoo ships them: its real MNIST (a CNTK export, in
sample_models/onnx_zoo/) and the replica tools/make_zoo_style_model.py trains. IR version 3
with initializers as inputs, opset 8, auto_pad, a fixed batch of 1, 0–255 inputs, logits in
the thousands, and a last weight reshaped at run time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import REPO, SAMPLE_HOLDOUT, SAMPLE_REGION
from typer.testing import CliRunner

from chainx.chain.copies import check_exact_copies
from chainx.cli import app
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.scoring.objective import output_scale
from chainx.scoring.settings import REFERENCE_MARGIN

ZOO_STYLE = REPO / "sample_models" / "mnist_zoo_style.onnx"
ZOO_MNIST7 = REPO / "sample_models" / "onnx_zoo" / "mnist-7.onnx"
ZERO_TO_255 = ["--size", "28", "--resize", "28", "--mean", "0", "--std", str(1 / 255)]


@pytest.fixture(scope="module")
def zoo_mnist8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo's mnist-8.onnx: mnist-7 with opset 8 (sample_models/onnx_zoo/README.md)."""
    model = onnx.load(ZOO_MNIST7)
    model.opset_import[0].version = 8
    path = tmp_path_factory.mktemp("zoo") / "mnist-8.onnx"
    onnx.save(model, path)
    return path


def extract(model: Path, out: Path, *options: str) -> dict:
    outcome = CliRunner().invoke(
        app,
        ["extract", str(model), str(SAMPLE_REGION), "--out", str(out), *ZERO_TO_255]
        + ["--filter-images", "0", *options],
    )
    assert outcome.exit_code == 0, outcome.output
    return json.loads((out / "chain.json").read_text())


@pytest.mark.parametrize("path", [ZOO_STYLE, ZOO_MNIST7])
def test_the_files_have_the_zoo_files_features(path: Path) -> None:
    model = onnx.load(path)
    assert model.ir_version == 3
    assert {i.name for i in model.graph.initializer} <= {i.name for i in model.graph.input}
    assert all(
        any(a.name == "auto_pad" and a.s == b"SAME_UPPER" for a in node.attribute)
        for node in model.graph.node
        if node.op_type == "Conv"
    )
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    # The MatMul's weight is a Reshape of a 4-D initializer, run first; values typed.
    first = model.graph.node[0]
    assert first.op_type == "Reshape" and first.output[0] == "Parameter193_reshape1"
    assert all(not init.raw_data for init in model.graph.initializer)
    logits = run(session(path, cpu=True), _region_pixels())
    top = np.sort(logits, axis=1)[:, -2:]
    assert np.median(top[:, 1] - top[:, 0]) > 1000  # logits in the thousands


def _region_pixels() -> np.ndarray:
    from chainx.images import Preprocessing, load_images

    prep = Preprocessing(size=28, resize=28, mean=(0.0,), std=(1 / 255,), channels=1)
    return load_images(SAMPLE_REGION, prep).array


def test_the_objective_reads_logits_in_the_thousands_at_a_temperature() -> None:
    # Why the zoo file collapsed: at its margins (~3,600 nats) the KL is flat until a chain's
    # margins have shrunk a thousandfold.
    logits = torch.from_numpy(run(session(ZOO_MNIST7, cpu=True), _region_pixels()))
    log_p = torch.log_softmax(logits, dim=-1)
    scale = output_scale(log_p)
    top = torch.log_softmax(logits / scale, -1).topk(2).values
    assert float((top[:, 0] - top[:, 1]).median()) == pytest.approx(REFERENCE_MARGIN, rel=1e-4)
    ordinary = torch.log_softmax(torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 1.0]]), -1)
    assert output_scale(ordinary) == 1.0


def test_the_copy_check_reads_a_weight_reshaped_at_run_time(zoo_mnist8: Path) -> None:
    from chainx.channels.surgery import shrink
    from chainx.onnx.score_points import find_score_points, scored_model

    original = load_model(zoo_mnist8)
    normalised = normalise(original)
    points = find_score_points(normalised)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    multipliers[points[-1].layer][::2] = 0
    result = shrink(scored_model(normalised, points, multipliers))
    copies = check_exact_copies(result.model, original, result.slices, normalised)
    assert copies.passed, copies.mismatched
    assert copies.checked == 3  # both Convs and the MatMul of the reshaped weight
    # A one-ulp change of the reshaped weight is caught.
    matmul = next(n for n in result.model.graph.node if n.op_type == "MatMul")
    init = next(i for i in result.model.graph.initializer if i.name == matmul.input[1])
    value = onnx.numpy_helper.to_array(init).copy()
    value.flat[7] = np.nextafter(value.flat[7], np.float32(np.inf))
    init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
    copies = check_exact_copies(result.model, original, result.slices, normalised)
    assert copies.mismatched == ["Times212: weight differs from its source slice"]


@pytest.mark.parametrize("which", ["zoo", "replica"])
def test_the_defaults_extract_a_faithful_verified_chain(
    which: str, zoo_mnist8: Path, tmp_path: Path
) -> None:
    model = zoo_mnist8 if which == "zoo" else ZOO_STYLE
    record = extract(model, tmp_path / "chain", "--holdout", str(SAMPLE_HOLDOUT))
    region = record["metrics"]["region"]
    assert region["images"] == 20 and region["agree"] >= 19
    assert record["metrics"]["exactness"]["passed"]
    assert record["metrics"]["exact_copies"]["mismatched"] == []
    assert record["summary"]["filters_removed_fraction"] >= 0.4
    assert record["metrics"]["optimisation"]["output_scale"] > 100
    chain = onnx.load(tmp_path / "chain" / "chain.onnx")
    onnx.checker.check_model(chain, full_check=True)
    digits = np.random.default_rng(1).uniform(0, 255, (3, 1, 28, 28)).astype(np.float32)
    assert run(session(tmp_path / "chain" / "chain.onnx", cpu=True), digits).shape == (3, 10)


def _optimise(model: Path, **settings: object) -> tuple[dict[str, np.ndarray], float]:
    """The chain's multipliers and the masked model's region agreement, before any export."""
    from chainx.onnx.score_points import find_score_points
    from chainx.scoring.model import ScoringModel
    from chainx.scoring.optimise import optimise
    from chainx.scoring.settings import OptimiseSettings

    normalised = normalise(load_model(model))
    scoring = ScoringModel(normalised, find_score_points(normalised))
    images = _region_pixels()
    result = optimise(scoring, images, "logits", OptimiseSettings(**settings))
    masked = scoring.masked(images, result.multipliers)
    original = run(session(normalised, cpu=True), images)
    return result.multipliers, float((masked.argmax(1) == original.argmax(1)).mean())


def test_the_defaults_do_not_collapse_on_the_zoo_file(zoo_mnist8: Path) -> None:
    # Before the objective read the outputs at a temperature: 1 filter kept, 0/20.
    multipliers, agreement = _optimise(zoo_mnist8)
    assert agreement >= 0.95
    assert sum(int((m != 0).sum()) for m in multipliers.values()) >= 2


@pytest.mark.parametrize(
    ("keep_ratio", "gradual", "lam"), [(0.5, True, 30.0), (0.5, False, 30.0), (0.5, True, 1e5)]
)
def test_keep_ratio_binds_on_the_zoo_file(
    keep_ratio: float, gradual: bool, lam: float, zoo_mnist8: Path
) -> None:
    # Half the filters must be half the filters, whatever λ does: λ = 10⁵ takes every score
    # to zero within steps, and the cut then fills the budget from the filters that held
    # on longest.
    multipliers, _ = _optimise(zoo_mnist8, keep_ratio=keep_ratio, gradual=gradual, lam=lam)
    assert sum(int((m != 0).sum()) for m in multipliers.values()) == 12


def test_its_fixed_batch_is_freed_and_the_outputs_kept() -> None:
    original = load_model(ZOO_STYLE)
    normalised = normalise(original)
    assert normalised.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    pixels = np.random.default_rng(0).uniform(0, 255, (6, 1, 28, 28)).astype(np.float32)
    expected = run(session(original, cpu=True), pixels)  # one image at a time
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(
        run(session(normalised, cpu=True), pixels), expected, atol=1e-5 * scale
    )
