"""The batch through normalisation: a dim that follows it stays a run-time value wherever it
sits, a fixed batch of any size is freed where only Reshapes hold it, and every stage runs a
model whose batch stays fixed. Also: an internal error names its stage and node."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import Plain, assert_report_images_ok, model_with_weights
from onnx import numpy_helper
from PIL import Image
from typer.testing import CliRunner

from chainx.cli import app
from chainx.errors import InternalError, NodeFault, stage
from chainx.onnx.graph import fixed_batch
from chainx.onnx.normalise import normalise
from chainx.onnx.passes.complete_shapes import CompleteShapes
from chainx.onnx.passes.free_batch import FreeFixedBatch
from chainx.onnx.passes.infer_shapes import InferShapes
from chainx.onnx.passes.reshape_shapes import ConstantReshapeShapes
from chainx.onnx.passes.shape_reads import FoldStaticShapeReads
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points
from chainx.scoring.model import ScoringModel
from tools.zoo import build_vit


def _images(count: int, size: int = 8, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size)).astype(np.float32)


def _torchscript(module: torch.nn.Module, size: int) -> onnx.ModelProto:
    """The export most tutorials show: TorchScript, a dynamic batch named "b"."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            torch.randn(1, 3, size, size),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["x"],
            dynamic_axes={"x": {0: "b"}},
        )
    return onnx.load_from_string(buffer.getvalue())


def _dynamo(module: torch.nn.Module, batch: int, size: int) -> onnx.ModelProto:
    """The dynamo exporter's default: the example's batch fixed in the graph."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), (torch.randn(batch, 3, size, size),), dynamo=True, verbose=False
        )
    return program.model_proto


SEQUENCE_FIRST = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 4, 4] input) => (float[N, 4, 16] out) {
        c = Conv (input, w)
        t = Reshape (c, flat)
        s = Transpose <perm = [1, 0, 2]> (t)
        n = Shape (s)
        batch = Slice (n, one, two)
        dim = Slice (n, two, three)
        rows = Concat <axis = 0> (batch, minus_one, dim)
        back = Transpose <perm = [1, 0, 2]> (s)
        out = Reshape (back, rows)
    }
"""


def _sequence_first() -> onnx.ModelProto:
    """Attention's layout: (positions, batch, channels), its shape read at run time."""
    model = model_with_weights(SEQUENCE_FIRST, {"w": (4, 3, 1, 1)})
    constants = {"flat": [0, 4, -1], "one": [1], "two": [2], "three": [3], "minus_one": [-1]}
    for name, value in constants.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return model  # no value_info: every inner shape is for CompleteShapes to find


def test_complete_shapes_keeps_a_dim_that_follows_the_batch_symbolic() -> None:
    result = CompleteShapes()(_sequence_first())
    assert result.modified
    infos = {i.name: i for i in result.model.graph.value_info}
    dims = infos["s"].type.tensor_type.shape.dim
    assert dims[1].dim_param == "batch" and dims[0].dim_value == 4 and dims[2].dim_value == 16


def test_static_dims_read_from_a_shape_fold_and_the_batch_stays_dynamic() -> None:
    model = CompleteShapes()(_sequence_first()).model
    result = FoldStaticShapeReads()(model)
    assert result.modified
    constants = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    np.testing.assert_array_equal(constants["dim"], [16])  # the static channel count
    assert "batch" not in constants  # the batch is read at run time
    x = _images(5, 4)
    np.testing.assert_array_equal(run(session(result.model), x), run(session(model), x))


def test_a_reshape_computed_at_run_time_gets_a_constant_shape_with_a_free_batch() -> None:
    model = FoldStaticShapeReads()(CompleteShapes()(_sequence_first()).model).model
    result = ConstantReshapeShapes()(model)
    assert result.modified
    reshape = next(n for n in result.model.graph.node if n.output[0] == "out")
    constants = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    np.testing.assert_array_equal(constants[reshape.input[1]], [-1, 4, 16])
    x = _images(3, 4)
    np.testing.assert_array_equal(run(session(result.model), x), run(session(model), x))


def test_torchvision_vit_through_torchscript_keeps_its_batch_free() -> None:
    # The export: `dynamic_axes={"x": {0: "b"}}`; the attention reshapes its
    # (tokens, batch × heads, head) views from Shape ops.
    original = _torchscript(build_vit("vit_small"), 64)
    normalised = normalise(original)
    assert fixed_batch(normalised) is None
    for count in (1, 10):
        x = _images(count, 64)
        expected = run(session(original, cpu=True), x)
        np.testing.assert_allclose(run(session(normalised), x), expected, atol=1e-5)
        # onnx2torch runs it at that batch too (it failed at a folded Reshape).
        scoring = ScoringModel(normalised, find_score_points(normalised))
        with torch.no_grad():
            converted = scoring.unscored(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(converted, expected, atol=1e-4)


def test_a_fixed_batch_of_two_is_freed() -> None:
    original = _dynamo(Plain(), batch=2, size=8)
    assert fixed_batch(original) == 2
    result = FreeFixedBatch()(InferShapes()(normalise(original)).model)
    assert fixed_batch(result.model) is None
    x = _images(5)
    np.testing.assert_allclose(
        run(session(result.model), x), run(session(original), x), rtol=1e-5, atol=1e-6
    )


def test_a_batch_that_cannot_be_freed_runs_in_padded_batches() -> None:
    # A class token expanded to the traced batch of 2: the batch stays; 5 images run as
    # 2 + 2 + 1 with the last batch padded, in onnxruntime and in torch.
    model = normalise(_dynamo(build_vit("vit_small"), batch=2, size=64))
    assert fixed_batch(model) == 2
    x = _images(5, 64)
    expected = np.concatenate([run(session(model), x[i : i + 2]) for i in range(0, 4, 2)])
    output = run(session(model), x)
    assert output.shape[0] == 5
    np.testing.assert_array_equal(output[:4], expected)
    scoring = ScoringModel(model, find_score_points(model))
    with torch.no_grad():
        converted = scoring.unscored(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(converted, output, atol=1e-4)


def _region(folder: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        label = folder / "ab"[index % 2]
        label.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(label / f"{index}.png")
    return folder


@pytest.mark.parametrize("which", ["freed", "fixed"])
def test_a_dynamo_export_with_a_fixed_batch_of_two_extracts_verifies_and_draws(
    which: str, tmp_path: Path
) -> None:
    # "freed": a CNN, whose batch normalisation frees; "fixed": a ViT, whose class token
    # keeps it, on an odd count of images, so that every stage pads its last batch.
    module, size = (Plain(), 8) if which == "freed" else (build_vit("vit_small"), 64)
    path = tmp_path / "model.onnx"
    onnx.save(_dynamo(module, batch=2, size=size), path)
    region = _region(tmp_path / "region", 5, size)
    out = tmp_path / "chain"
    outcome = CliRunner().invoke(
        app,
        ["extract", str(path), str(region), "--out", str(out), "--size", str(size)]
        + ["--resize", str(size), "--steps", "3", "--finetune-steps", "1"]
        # τ = 0 keeps every filter the 3 steps leave, so that every layer has some to draw:
        # on random images the default search finds a random network's region kept by
        # next to nothing.
        + ["--tau", "0", "--filter-images", "2"],
    )
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((out / "chain.json").read_text())
    assert record["metrics"]["exactness"]["passed"]
    assert record["metrics"]["region"]["images"] == 5
    assert (out / "chain.deploy.onnx").is_file()
    assert record["metrics"]["cost"]["original"]["latency_images"] == 2
    assert assert_report_images_ok(out / "report.html") > 0
    assert list((out / "featuremaps").iterdir()) and list((out / "filters").iterdir())


def test_a_failing_op_in_torch_is_named_with_its_stage() -> None:
    # A Reshape whose shape holds a batch of 1 (as the ViT's folded one did), run on 3.
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 4, 4] input) => (float[1, 32] out) {
            c = Conv (input, w)
            d = Conv (c, w2)
            out = Reshape (d, shape)
        }
        """,
        {"w": (2, 3, 1, 1), "w2": (2, 2, 1, 1)},
    )
    model.graph.node[2].name = "flatten"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 32]), "shape"))
    model = InferShapes()(model).model
    scoring = ScoringModel(model, find_score_points(model))
    with pytest.raises(InternalError) as raised, stage("optimise"):
        with pytest.raises(NodeFault) as fault:
            scoring.unscored(torch.from_numpy(_images(3, 4)))
        raise fault.value
    message = str(raised.value)
    assert "stage 'optimise'" in message and "node 'flatten' (Reshape)" in message
    assert "RuntimeError" in message


def test_an_onnxruntime_failure_is_named_with_its_stage() -> None:
    with pytest.raises(InternalError, match=r"stage 'verify', at node 'r' \(Reshape\)"):
        with stage("verify"):
            raise RuntimeError(
                "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running "
                "Reshape node. Name:'r' Status Message: cannot reshape"
            )
