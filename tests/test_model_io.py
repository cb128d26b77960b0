"""Loading and normalising models from other exporters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import (
    SAMPLE_MODEL,
    inputs_for,
    model_with_weights,
    random_multipliers,
    shrink_and_compare,
    tiny_model,
)
from onnx import numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points


def test_auto_pad_same_upper_becomes_explicit_pads() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 7, 7] input) => (float[N, 4, 4, 4] out) {
            out = Conv <auto_pad = "SAME_UPPER", strides = [2, 2]> (input, w)
        }
        """,
        {"w": (4, 3, 4, 4)},
    )
    normalised = normalise(model)
    conv = next(n for n in normalised.graph.node if n.op_type == "Conv")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs.get("auto_pad", b"NOTSET") == b"NOTSET"
    assert attrs["pads"] == [1, 1, 2, 2]
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(run(session(normalised), x), run(session(model), x), atol=1e-5)


def test_initializer_behind_identity_and_batchnorm_kept_unfused() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 5, 5] input) => (float[N, 4, 5, 5] out) {
            w_id = Identity (w)
            c = Conv <pads = [1, 1, 1, 1]> (input, w_id)
            out = BatchNormalization (c, scale, bias, mean, var)
        }
        """,
        {"w": (4, 3, 3, 3), "scale": (4,), "bias": (4,), "mean": (4,), "var": (4,)},
    )
    normalised = normalise(model)
    ops = [n.op_type for n in normalised.graph.node]
    assert ops == ["Conv", "BatchNormalization"]
    conv = normalised.graph.node[0]
    weight = next(i for i in normalised.graph.initializer if i.name == conv.input[1])
    original = next(i for i in model.graph.initializer if i.name == "w")
    assert numpy_helper.to_array(weight).tobytes() == numpy_helper.to_array(original).tobytes()


def test_every_node_gets_a_name_and_every_activation_a_shape() -> None:
    normalised = normalise(load_model(SAMPLE_MODEL))
    assert all(node.name for node in normalised.graph.node)
    shapes = {v.name for v in normalised.graph.value_info}
    for node in normalised.graph.node:
        for name in node.output:
            assert name in shapes or name in {o.name for o in normalised.graph.output}


@pytest.mark.parametrize("cut", [0, 10, 1000])
def test_truncated_model_is_a_clear_error(tmp_path: Path, cut: int) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(SAMPLE_MODEL.read_bytes()[:cut])
    with pytest.raises(ChainxError, match="empty" if cut == 0 else "not a valid ONNX model"):
        load_model(broken)


def test_an_opset_onnx_does_not_know_is_a_clear_error(tmp_path: Path) -> None:
    model = onnx.load(str(SAMPLE_MODEL))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 45
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ChainxError, match="opset 45 of domain 'ai.onnx'.*Export the model"):
        load_model(path)


def test_sha256_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path).startswith("ba7816bf")


def test_run_time_flatten_shape_folds_and_converts_to_torch() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 6, 6] input) => (float[N, 5] logits) {
            c = Conv <pads = [1, 1, 1, 1]> (input, w)
            p = GlobalAveragePool (c)
            s = Shape <end = 1> (p)
            minus_one = Constant <value = int64[1] {-1}> ()
            shape = Concat <axis = 0> (s, minus_one)
            f = Reshape (p, shape)
            logits = Gemm <transB = 1> (f, fc, fc_bias)
        }
        """,
        {"w": (4, 3, 3, 3), "fc": (5, 4), "fc_bias": (5,)},
    )
    normalised = normalise(model)
    reshape = next(n for n in normalised.graph.node if n.op_type == "Reshape")
    assert all(not (a.name == "allowzero" and a.i) for a in reshape.attribute)
    from chainx.scoring.model import convert

    convert(normalised)  # onnx2torch accepts it
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(session(normalised), x), run(session(model), x), atol=1e-5)


def test_channel_shuffle_becomes_one_gather() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 4, 4] input) => (float[N, 6, 4, 4] out) {
            c = Conv <pads = [1, 1, 1, 1]> (input, w)
            batch = Shape <end = 1> (c)
            tail = Constant <value = int64[4] {2, 3, 4, 4}> ()
            split_shape = Concat <axis = 0> (batch, tail)
            split = Reshape (c, split_shape)
            swapped = Transpose <perm = [0, 2, 1, 3, 4]> (split)
            back = Constant <value = int64[4] {0, 6, 4, 4}> ()
            out = Reshape (swapped, back)
        }
        """,
        {"w": (6, 3, 3, 3)},
    )
    normalised = normalise(model)
    ops = [n.op_type for n in normalised.graph.node]
    assert ops == ["Conv", "Gather"]
    gather = normalised.graph.node[1]
    index = next(i for i in normalised.graph.initializer if i.name == gather.input[1])
    assert numpy_helper.to_array(index).tolist() == [0, 3, 1, 4, 2, 5]
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(session(normalised), x), run(session(model), x))


def test_weight_from_a_constant_node_becomes_an_initializer() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 1, 3, 3] input) => (float[N, 1, 3, 3] out) {
            w = Constant <value = float[1, 1, 1, 1] {2.0}> ()
            out = Conv (input, w)
        }
        """
    )
    normalised = normalise(model)
    conv = next(n for n in normalised.graph.node if n.op_type == "Conv")
    assert conv.input[1] in {i.name for i in normalised.graph.initializer}


def test_model_with_external_data_loads_from_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "external.onnx"
    onnx.save_model(
        load_model(SAMPLE_MODEL),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (tmp_path / "weights.bin").stat().st_size > path.stat().st_size
    loaded = normalise(load_model(path))
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    expected = run(session(normalise(load_model(SAMPLE_MODEL))), x)
    np.testing.assert_array_equal(run(session(loaded), x), expected)


@pytest.mark.parametrize(
    ("opset", "dynamo"),
    [(11, False), (13, False), (15, False), (17, False), (20, False), (18, True)],
)
@pytest.mark.parametrize("name", ["pre-activation", "inception", "squeeze-excite", "grouped"])
def test_exporters_and_opsets_convert_score_and_shrink(name: str, opset: int, dynamo: bool) -> None:
    model = tiny_model(name, opset=opset, dynamo=dynamo)
    points = find_score_points(model)
    from chainx.scoring.model import ScoringModel

    scoring = ScoringModel(model, points)  # onnx2torch converts the normalised model
    x = inputs_for(model)
    import torch

    with torch.no_grad():
        torch_output = scoring.unscored(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(torch_output, run(session(model), x), rtol=1e-4, atol=1e-5)
    _, error = shrink_and_compare(model, random_multipliers(points, 0.3, seed=opset))
    assert error <= 1e-5


@pytest.mark.parametrize("escape", ["absolute", "parent", "symlink"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path, escape: str) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(
        load_model(SAMPLE_MODEL),
        str(outside / "m.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    model = onnx.load(str(outside / "m.onnx"), load_external_data=False)
    location = {
        "absolute": str(outside / "weights.bin"),
        "parent": "../elsewhere/weights.bin",
        "symlink": "link.bin",
    }[escape]
    if escape == "symlink":
        (folder / "link.bin").symlink_to(outside / "weights.bin")
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ChainxError, match="outside the model's folder"):
        load_model(path)


def test_missing_external_data_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(
        load_model(SAMPLE_MODEL),
        str(path),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ChainxError, match="weights.bin.*missing"):
        load_model(path)


def test_an_old_opset_is_upgraded() -> None:
    model = model_with_weights(
        """
        <ir_version: 4, opset_import: ["" : 9]>
        net (float[N, 3, 6, 6] input) => (float[N, 4] logits) {
            c = Conv <pads = [1, 1, 1, 1]> (input, w, b)
            r = Relu (c)
            p = Pad <pads = [0, 0, 1, 1, 0, 0, 1, 1]> (r)
            g = GlobalAveragePool (p)
            f = Flatten (g)
            logits = Gemm <transB = 1> (f, fc, fc_bias)
        }
        """,
        {"w": (5, 3, 3, 3), "b": (5,), "fc": (4, 5), "fc_bias": (4,)},
    )
    normalised = normalise(model)
    assert normalised.opset_import[0].version >= 11
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(session(normalised), x), run(session(model), x), atol=1e-5)
    _, error = shrink_and_compare(
        normalised, random_multipliers(find_score_points(normalised), 0.5)
    )
    assert error <= 1e-5


TWO_HEADS = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] image, float[N, 4] prior) => (float[N, 4] logits, float[N, 4] mixed) {
        c = Conv <pads = [1, 1, 1, 1]> (image, w, b)
        r = Relu (c)
        g = GlobalAveragePool (r)
        f = Flatten (g)
        logits = Gemm <transB = 1> (f, fc, fc_bias)
        mixed = Add (logits, prior)
    }
"""


def test_several_outputs_need_output_and_the_image_input_is_found() -> None:
    model = model_with_weights(
        TWO_HEADS, {"w": (5, 3, 3, 3), "b": (5,), "fc": (4, 5), "fc_bias": (4,)}
    )
    with pytest.raises(ChainxError, match="2 outputs .*--output"):
        normalise(model)
    with pytest.raises(ChainxError, match="'scores' is not an output.*logits, mixed"):
        normalise(model, output_name="scores")
    with pytest.raises(ChainxError, match="also reads the inputs prior"):
        normalise(model, input_name="image", output_name="mixed")
    chosen = normalise(model, output_name="logits")
    assert [i.name for i in chosen.graph.input] == ["image"]
    assert [o.name for o in chosen.graph.output] == ["logits"]
    assert "Add" not in {n.op_type for n in chosen.graph.node}


def test_unconvertible_ops_are_all_named_before_any_work() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        net (float[N, 3, 6, 6] input) => (float[N, 5, 6, 6] out) {
            c = Conv <pads = [1, 1, 1, 1]> (input, w)
            a = com.example.Mystery (c)
            out = com.example.Enigma (a)
        }
        """,
        {"w": (5, 3, 3, 3)},
    )
    from chainx.scoring.conversion import check_convertible

    with pytest.raises(ChainxError, match=r"2 nodes .*Mystery.*Enigma"):
        check_convertible(model)
