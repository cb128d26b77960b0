"""Files users have besides plain exports: saved by onnxruntime after its graph optimisation
(com.microsoft fused ops), and quantised by onnxruntime.quantization (three forms)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    quantize_dynamic,
    quantize_static,
)
from typer.testing import CliRunner

from chainx.cli import app

STEPS = ["--resize", "28", "--steps", "60", "--finetune-steps", "10", "--filter-images", "0"]


def extract(model: Path, out: Path) -> tuple[int, str]:
    outcome = CliRunner().invoke(
        app, ["extract", str(model), str(SAMPLE_REGION), "--out", str(out), *STEPS]
    )
    return outcome.exit_code, " ".join(outcome.output.split())


def test_a_file_onnxruntime_optimised_extracts_as_its_source(tmp_path: Path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(SAMPLE_MODEL), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(tmp_path / "optimised.onnx")
    assert "FusedConv" in {node.op_type for node in optimised.graph.node}
    records = []
    for model in (SAMPLE_MODEL, tmp_path / "optimised.onnx"):
        code, output = extract(model, tmp_path / f"{model.stem}.chain")
        assert code == 0, output
        records.append(json.loads((tmp_path / f"{model.stem}.chain" / "chain.json").read_text()))
    source, lowered = records
    assert lowered["metrics"]["exactness"]["passed"]
    assert lowered["summary"]["filters_kept"] == source["summary"]["filters_kept"]
    assert lowered["metrics"]["region"]["agree"] == source["metrics"]["region"]["agree"]


class _RandomInputs(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.batches = iter(
            [{"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)} for _ in range(4)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@pytest.mark.parametrize(
    ("form", "named"),
    [("qdq", "QDQ"), ("qoperator", "QOperator"), ("dynamic", "dynamic")],
)
def test_a_quantised_model_is_refused_naming_its_form(
    tmp_path: Path, form: str, named: str
) -> None:
    quantised = tmp_path / f"{form}.onnx"
    if form == "dynamic":
        quantize_dynamic(SAMPLE_MODEL, quantised)
    else:
        qformat = QuantFormat.QDQ if form == "qdq" else QuantFormat.QOperator
        quantize_static(SAMPLE_MODEL, quantised, _RandomInputs(), quant_format=qformat)
    code, output = extract(quantised, tmp_path / "out")
    assert code == 2, output
    assert f"quantised, in onnxruntime's {named} (" in output
    assert "float model it was quantised from" in output
    assert not (tmp_path / "out").exists()


def test_a_model_with_its_preprocessing_inside_gets_it_once(tmp_path: Path) -> None:
    # The sample reads (x - 0.5) / 0.5; the same model with that in front of its graph.
    model = onnx.load(SAMPLE_MODEL)
    image = model.graph.input[0].name
    for name, value in (("pixel_mean", 0.5), ("pixel_std", 0.5)):
        model.graph.initializer.append(
            onnx.numpy_helper.from_array(np.array(value, np.float32), name)
        )
    for node in model.graph.node:
        node.input[:] = ["normalised" if name == image else name for name in node.input]
    model.graph.node.insert(
        0, onnx.helper.make_node("Div", ["centred", "pixel_std"], ["normalised"])
    )
    model.graph.node.insert(0, onnx.helper.make_node("Sub", [image, "pixel_mean"], ["centred"]))
    inside = tmp_path / "inside.onnx"
    onnx.save(model, inside)
    records = []
    for path in (SAMPLE_MODEL, inside):
        code, output = extract(path, tmp_path / f"{path.stem}.chain")
        assert code == 0, output
        records.append(json.loads((tmp_path / f"{path.stem}.chain" / "chain.json").read_text()))
    assert "the model normalises its input itself (Sub, Div at the input)" in output
    plain, normalising = records
    assert normalising["settings"]["preprocessing"]["std"] == [1.0]
    assert normalising["summary"]["filters_kept"] == plain["summary"]["filters_kept"]
    region, expected = normalising["metrics"]["region"], plain["metrics"]["region"]
    assert (region["agree"], region["class_agree"]) == (expected["agree"], expected["class_agree"])
    assert region["mean_kl"] == pytest.approx(expected["mean_kl"], rel=1e-3)


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_a_float16_model_gives_a_float16_chain_of_its_own_weights(
    tmp_path: Path, keep_io_types: bool
) -> None:
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(onnx.load(SAMPLE_MODEL), keep_io_types=keep_io_types)
    source = tmp_path / "half.onnx"
    onnx.save(half, source)
    code, output = extract(source, tmp_path / "half.chain")
    assert code == 0, output
    record = json.loads((tmp_path / "half.chain" / "chain.json").read_text())
    exactness = record["metrics"]["exactness"]
    assert exactness["passed"]
    assert exactness["tolerance"] == pytest.approx(1e-2 * exactness["max_abs_output"])
    copies = record["metrics"]["exact_copies"]
    assert copies["checked"] > 0 and not copies["mismatched"]  # float16, bit for bit
    chain = onnx.load(tmp_path / "half.chain" / "chain.onnx")
    image_type = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    assert chain.graph.input[0].type.tensor_type.elem_type == image_type
    weights = {init.name: init for init in chain.graph.initializer}
    convs = [n for n in chain.graph.node if n.op_type == "Conv"]
    assert convs and all(weights[n.input[1]].data_type == onnx.TensorProto.FLOAT16 for n in convs)
    rechecked = CliRunner().invoke(app, ["verify", str(tmp_path / "half.chain")])
    assert rechecked.exit_code == 0, rechecked.output  # `chainx verify` at the same tolerance


def test_a_trained_keras_cnn_gives_a_faithful_channels_last_chain(tmp_path: Path) -> None:
    # tools/export_keras.py: Keras, tf2onnx, NHWC input, Rescaling(1/255) inside the graph.
    keras_model = SAMPLE_MODEL.parent / "mnist_keras.onnx"
    out = tmp_path / "keras.chain"
    outcome = CliRunner().invoke(
        app,
        ["extract", str(keras_model), str(SAMPLE_REGION), "--holdout", str(SAMPLE_HOLDOUT)]
        + ["--resize", "28", "--filter-images", "1", "--out", str(out)],
    )
    output = " ".join(outcome.output.split())
    assert outcome.exit_code == 0, output
    assert "pixels go in as [0, 255]" in output  # its Rescaling is not applied twice
    record = json.loads((out / "chain.json").read_text())
    assert record["summary"]["filters_removed_fraction"] > 0.5
    assert record["metrics"]["region"]["agree"] == 20
    assert record["metrics"]["holdout"]["class_agreement"] > 0.8
    assert record["metrics"]["exactness"]["passed"] and not record["frozen_ops"]
    chain = onnx.load(out / "chain.onnx")
    assert [d.dim_value for d in chain.graph.input[0].type.tensor_type.shape.dim][1:] == [28, 28, 1]
    digits = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype(np.float32)
    sess = ort.InferenceSession(chain.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {sess.get_inputs()[0].name: digits})[0].shape == (2, 10)
    rechecked = CliRunner().invoke(app, ["verify", str(out)])
    assert rechecked.exit_code == 0, rechecked.output  # fed NHWC, as the chain reads


def test_the_keras_tool_holds_out_the_sample_digits() -> None:
    from tools.export_keras import split_indices as keras_split
    from tools.make_sample_model import load_mnist_5k, split_indices

    _, labels = load_mnist_5k()
    for ours, theirs in zip(keras_split(labels), split_indices(labels), strict=True):
        np.testing.assert_array_equal(ours, theirs)
