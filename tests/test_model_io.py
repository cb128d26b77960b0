"""Loading and normalising models from other exporters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_MODEL
from onnx import numpy_helper

from chainx.errors import ChainxError
from chainx.model_io import load_model, normalise, sha256_file
from chainx.verify import run, session


def _with_weights(text: str, shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    rng = np.random.default_rng(0)
    for name, shape in shapes.items():
        value = (
            rng.uniform(0.5, 1.5, shape) if name.startswith("var") else rng.standard_normal(shape)
        )
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
    return model


def test_auto_pad_same_upper_becomes_explicit_pads() -> None:
    model = _with_weights(
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
    model = _with_weights(
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
    with pytest.raises(ChainxError, match="not a valid ONNX model"):
        load_model(broken)


def test_sha256_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path).startswith("ba7816bf")
