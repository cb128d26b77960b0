"""Each normalisation pass on its own, on a tiny graph: what it changes, and how it fails."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnx.version_converter
import pytest
from conftest import model_with_weights
from onnx import numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.passes import complete_shapes
from chainx.onnx.passes.allowzero import DropNeedlessAllowzero
from chainx.onnx.passes.channel_shuffle import ShuffleToGather
from chainx.onnx.passes.channels_last import (
    ChannelsFirstInput,
    reads_channels_last,
    with_channels_last_input,
)
from chainx.onnx.passes.complete_shapes import CompleteShapes
from chainx.onnx.passes.contrib_ops import LowerFusedOps
from chainx.onnx.passes.expand_gelu import ExpandGelu
from chainx.onnx.passes.explicit_auto_pad import ExplicitAutoPad
from chainx.onnx.passes.float16 import FLOAT16_INSIDE, FLOAT16_IO, Float16AsFloat32, float16_form
from chainx.onnx.passes.free_batch import FreeFixedBatch
from chainx.onnx.passes.infer_shapes import InferShapes
from chainx.onnx.passes.initializer_inputs import InitializerInputsAsConstants
from chainx.onnx.passes.name_nodes import NameNodes
from chainx.onnx.passes.opset_down import DowngradeOpset
from chainx.onnx.passes.opset_up import UpgradeOpset
from chainx.onnx.passes.optimize import Optimize
from chainx.onnx.passes.packed_projection import SplitPackedProjection
from chainx.onnx.passes.select_io import SelectIO
from chainx.onnx.passes.split_to_slices import SplitToSlices
from chainx.onnx.runtime import run_tensors, session, with_outputs


def attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in {"", "ai.onnx"})


def outputs_on(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = session(model, cpu=True)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def images(*shape: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


CONV_RELU = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] input) => (float[N, 4, 6, 6] out) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        out = Relu (c)
    }
"""

TWO_HEADS = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] image, float[N, 4] prior) => (float[N, 4] logits, float[N, 4] mixed) {
        c = Conv <pads = [1, 1, 1, 1]> (image, w)
        g = GlobalAveragePool (c)
        f = Flatten (g)
        logits = Gemm <transB = 1> (f, fc)
        mixed = Add (logits, prior)
    }
"""


def test_select_io_keeps_the_chosen_output_and_the_image_input() -> None:
    model = model_with_weights(TWO_HEADS, {"w": (5, 3, 3, 3), "fc": (4, 5)})
    result = SelectIO(output_name="logits")(model)
    assert result.modified
    assert [i.name for i in result.model.graph.input] == ["image"]
    assert [o.name for o in result.model.graph.output] == ["logits"]
    assert ops(result.model) == ["Conv", "GlobalAveragePool", "Flatten", "Gemm"]


def test_select_io_leaves_a_one_input_one_output_model_alone() -> None:
    model = model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})
    before = model.SerializeToString()
    result = SelectIO()(model)
    assert not result.modified
    assert result.model.SerializeToString() == before


def test_select_io_names_the_inputs_when_the_chosen_one_is_missing() -> None:
    model = model_with_weights(TWO_HEADS, {"w": (5, 3, 3, 3), "fc": (4, 5)})
    with pytest.raises(ChainxError, match=r"--input 'x' is not an input.*image, prior"):
        SelectIO(input_name="x", output_name="logits")(model)


OPSET_9 = """
    <ir_version: 4, opset_import: ["" : 9]>
    net (float[N, 3, 6, 6] input) => (float[N, 5, 8, 8] out) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        out = Pad <pads = [0, 0, 1, 1, 0, 0, 1, 1]> (c)
    }
"""


def test_upgrade_opset_converts_an_old_model_and_keeps_a_new_one() -> None:
    result = UpgradeOpset()(model_with_weights(OPSET_9, {"w": (5, 3, 3, 3)}))
    assert result.modified and opset(result.model) == 13
    pad = next(n for n in result.model.graph.node if n.op_type == "Pad")
    assert "pads" not in attrs(pad) and len(pad.input) >= 2  # pads became an input
    new = model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})
    kept = UpgradeOpset()(new)
    assert not kept.modified and kept.model is new


def test_upgrade_opset_failure_of_the_converter_is_a_clear_error(monkeypatch) -> None:
    def no_adapter(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("adapter_lookup: No Adapter From Version $9 for Pad")

    monkeypatch.setattr(onnx.version_converter, "convert_version", no_adapter)
    with pytest.raises(ChainxError, match=r"opset 9.*No Adapter.*opset 11 or newer"):
        UpgradeOpset()(model_with_weights(OPSET_9, {"w": (5, 3, 3, 3)}))


def test_upgrade_opset_lets_an_unexpected_error_through(monkeypatch) -> None:
    def broken(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise KeyError("a bug, not a model the converter rejects")

    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    with pytest.raises(KeyError):
        UpgradeOpset()(model_with_weights(OPSET_9, {"w": (5, 3, 3, 3)}))


SPLIT_18 = """
    <ir_version: 8, opset_import: ["" : 18]>
    net (float[N, 3, 6, 6] input) => (float[N, 4, 6, 6] out, float[N, 1, 1, 1] mean) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        a, b = Split <axis = 1, num_outputs = 2> (c)
        r = Relu (a)
        out = Concat <axis = 1> (r, b)
        mean = ReduceMean <keepdims = 1> (c)
    }
"""


def test_split_to_slices_writes_one_slice_per_output() -> None:
    model = model_with_weights(SPLIT_18, {"w": (4, 3, 3, 3)})
    result = SplitToSlices()(model)
    assert result.modified
    assert ops(result.model) == ["Conv", "Slice", "Slice", "Relu", "Concat", "ReduceMean"]
    constants = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    second = result.model.graph.node[2]
    assert [constants[name].tolist() for name in second.input[1:]] == [[2], [4], [1]]
    x = images(2, 3, 6, 6)
    for got, want in zip(outputs_on(result.model, x), outputs_on(model, x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_split_to_slices_keeps_a_split_of_unknown_size() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 18]>
        net (float[N, C] input) => (float[N, M] a, float[N, K] b) {
            a, b = Split <axis = 1, num_outputs = 2> (input)
        }
        """
    )
    assert not SplitToSlices()(model).modified


def test_expand_gelu_computes_what_gelu_computes() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 9, opset_import: ["" : 20]>
        net (float[N, 4] input) => (float[N, 4] out) {
            g = Gelu <approximate = "tanh"> (input)
            out = Gelu (g)
        }
        """
    )
    NameNodes()(model)
    result = ExpandGelu()(model)
    assert result.modified and "Gelu" not in ops(result.model)
    assert {"Tanh", "Erf"} <= set(ops(result.model))
    last = result.model.graph.node[-1]
    assert (last.name, last.output[0]) == ("Gelu_1", "out")
    x = images(3, 4)
    np.testing.assert_allclose(outputs_on(result.model, x)[0], outputs_on(model, x)[0], atol=1e-6)


def test_downgrade_opset_takes_split_18_and_reduce_18_down_to_17() -> None:
    model = model_with_weights(SPLIT_18, {"w": (4, 3, 3, 3)})
    result = DowngradeOpset()(model)
    assert result.modified and opset(result.model) == 17
    assert "Split" not in ops(result.model)
    reduce = next(n for n in result.model.graph.node if n.op_type == "ReduceMean")
    assert "noop_with_empty_axes" not in attrs(reduce)


MISH_18 = """
    <ir_version: 8, opset_import: ["" : 18]>
    net (float[N, 3, 6, 6] input) => (float[N, 4, 6, 6] out) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        out = Mish (c)
    }
"""


def test_downgrade_opset_keeps_a_model_the_converter_rejects() -> None:
    # Mish exists only from opset 18: onnx's converter raises a RuntimeError for it.
    model = model_with_weights(MISH_18, {"w": (4, 3, 3, 3)})
    with pytest.raises(RuntimeError, match="Mish"):
        onnx.version_converter.convert_version(model, 17)
    result = DowngradeOpset()(model)
    assert not result.modified and result.model is model and opset(model) == 18


def test_downgrade_opset_lets_an_unexpected_error_through(monkeypatch) -> None:
    def broken(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise TypeError("a bug, not a model the converter rejects")

    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    with pytest.raises(TypeError, match="a bug"):
        DowngradeOpset()(model_with_weights(MISH_18, {"w": (4, 3, 3, 3)}))


def test_initializers_listed_as_inputs_become_constants() -> None:
    model = model_with_weights(
        """
        <ir_version: 3, opset_import: ["" : 11]>
        net (float[N, 3, 6, 6] input, float[4, 3, 3, 3] w) => (float[N, 4, 6, 6] out) {
            out = Conv <pads = [1, 1, 1, 1]> (input, w)
        }
        """,
        {"w": (4, 3, 3, 3)},
    )
    result = InitializerInputsAsConstants()(model)
    assert result.modified and [i.name for i in result.model.graph.input] == ["input"]
    assert not InitializerInputsAsConstants()(result.model).modified


def test_an_ir_3_model_declares_the_ir_its_opset_needs_once_initializers_are_constants() -> None:
    model = model_with_weights(
        """
        <ir_version: 3, opset_import: ["" : 8]>
        net (float[1, 3, 6, 6] input, float[4, 3, 3, 3] w) => (float[1, 4, 6, 6] out) {
            out = Conv <pads = [1, 1, 1, 1]> (input, w)
        }
        """,
        {"w": (4, 3, 3, 3)},
    )
    upgraded = UpgradeOpset()(model).model
    assert upgraded.ir_version == 3  # onnx's converter leaves the IR version as it was
    result = InitializerInputsAsConstants()(upgraded)
    assert result.model.ir_version == onnx.helper.find_min_ir_version_for(
        list(result.model.opset_import)
    )
    onnx.checker.check_model(result.model, full_check=True)  # IR 3 would reject the constants


def test_optimize_drops_identity_lifts_constants_and_keeps_batchnorm() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 5, 5] input) => (float[N, 4, 5, 5] out) {
            w_id = Identity (w)
            c = Conv <pads = [1, 1, 1, 1]> (input, w_id)
            two = Constant <value = float[1] {2.0}> ()
            d = Mul (c, two)
            out = BatchNormalization (d, scale, bias, mean, var)
        }
        """,
        {"w": (4, 3, 3, 3), "scale": (4,), "bias": (4,), "mean": (4,), "var": (4,)},
    )
    result = Optimize()(model)
    assert result.modified
    assert ops(result.model) == ["Conv", "Mul", "BatchNormalization"]
    initializers = {i.name for i in result.model.graph.initializer}
    assert set(result.model.graph.node[1].input) <= initializers | {"c"}


def test_explicit_auto_pad_writes_the_pads_and_drops_valid() -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 7, 7] input) => (float[N, 4, 3, 3] out) {
            c = Conv <auto_pad = "SAME_LOWER", strides = [2, 2]> (input, w)
            out = MaxPool <auto_pad = "VALID", kernel_shape = [2, 2]> (c)
        }
        """,
        {"w": (4, 3, 4, 4)},
    )
    x = images(2, 3, 7, 7)
    expected = outputs_on(model, x)[0]
    result = ExplicitAutoPad()(model)
    conv, pool = result.model.graph.node
    assert result.modified
    assert attrs(conv)["pads"] == [2, 2, 1, 1] and "auto_pad" not in attrs(conv)
    assert attrs(pool) == {"kernel_shape": [2, 2]}
    np.testing.assert_allclose(outputs_on(result.model, x)[0], expected, atol=1e-5)
    assert not ExplicitAutoPad()(result.model).modified


@pytest.mark.parametrize(("name", "named"), [("stem", "node 'stem' (Conv)"), ("", "writes 'out'")])
def test_explicit_auto_pad_on_an_unknown_size_names_the_node(name: str, named: str) -> None:
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, H, W] input) => (float[N, 4, H, W] out) {
            out = Conv <auto_pad = "SAME_UPPER"> (input, w)
        }
        """,
        {"w": (4, 3, 3, 3)},
    )
    model.graph.node[0].name = name
    with pytest.raises(ChainxError, match=re.escape(named) + ".*auto_pad=SAME_UPPER.*unknown"):
        ExplicitAutoPad()(model)


def test_name_nodes_names_the_unnamed_ones_uniquely() -> None:
    model = model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})
    model.graph.node[1].name = "Conv_0"
    result = NameNodes()(model)
    assert result.modified
    assert [n.name for n in result.model.graph.node] == ["Conv_0_", "Conv_0"]
    assert not NameNodes()(result.model).modified


def test_infer_shapes_records_every_inner_shape() -> None:
    model = model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})
    result = InferShapes()(model)
    assert result.modified
    (info,) = result.model.graph.value_info
    assert info.name == "c"
    assert [d.dim_value or d.dim_param for d in info.type.tensor_type.shape.dim] == ["N", 4, 6, 6]
    assert not InferShapes()(result.model).modified


RUN_TIME_FLATTEN = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, 6, 6] input) => (float[N, M] out) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        p = GlobalAveragePool (c)
        s = Shape <end = 1> (p)
        minus_one = Constant <value = int64[1] {-1}> ()
        shape = Concat <axis = 0> (s, minus_one)
        f = Reshape (p, shape)
        out = Relu (f)
    }
"""


def dims(model: onnx.ModelProto, name: str) -> list[int | str]:
    infos = [*model.graph.value_info, *model.graph.output]
    info = next(i for i in infos if i.name == name)
    return [d.dim_value or d.dim_param for d in info.type.tensor_type.shape.dim]


def test_complete_shapes_sizes_a_run_time_flatten() -> None:
    model = InferShapes()(model_with_weights(RUN_TIME_FLATTEN, {"w": (4, 3, 3, 3)})).model
    assert dims(model, "f")[1] != 4
    result = CompleteShapes()(model)
    assert result.modified
    assert dims(result.model, "f") == dims(result.model, "out") == ["N", 4]


def test_complete_shapes_needs_a_static_input_size() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, H, W] input) => (float[N, 3, H, W] out) {
            out = Relu (input)
        }
        """
    )
    assert not CompleteShapes()(model).modified


CUSTOM_OP = """
    <ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
    net (float[N, 3, 6, 6] input) => (float[N, 4, 6, 6] out) {
        c = Conv <pads = [1, 1, 1, 1]> (input, w)
        out = com.example.Mystery (c)
    }
"""


def test_complete_shapes_leaves_a_model_onnxruntime_cannot_run_unchanged() -> None:
    # onnxruntime raises its Fail for the unregistered op: the analysis freezes what it
    # cannot size, and check_convertible names the op.
    model = model_with_weights(CUSTOM_OP, {"w": (4, 3, 3, 3)})
    before = model.SerializeToString()
    result = CompleteShapes()(model)
    assert not result.modified
    assert result.model.SerializeToString() == before


def test_complete_shapes_lets_an_unexpected_error_through(monkeypatch) -> None:
    def broken(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        raise ValueError("a bug, not a model onnxruntime rejects")

    monkeypatch.setattr(complete_shapes, "run_tensors", broken)
    model = InferShapes()(model_with_weights(RUN_TIME_FLATTEN, {"w": (4, 3, 3, 3)})).model
    with pytest.raises(ValueError, match="a bug"):
        CompleteShapes()(model)


@pytest.mark.parametrize(("shape", "dropped"), [([-1, 12], True), ([0, 12], False)])
def test_allowzero_goes_where_the_shape_has_no_zero(shape: list[int], dropped: bool) -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 3, 2, 2] input) => (float[N, 12] out) {
            out = Reshape <allowzero = 1> (input, shape)
        }
        """
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), "shape"))
    result = DropNeedlessAllowzero()(model)
    assert result.modified is dropped
    assert ("allowzero" not in attrs(result.model.graph.node[0])) is dropped


def shuffle(perm: list[int]) -> onnx.ModelProto:
    model = onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[2, 6, 4, 4] input) => (float[2, 6, 4, 4] out) {{
            split = Reshape (input, split_shape)
            swapped = Transpose <perm = {perm}> (split)
            out = Reshape (swapped, back)
        }}
        """
    )
    for name, value in [("split_shape", [2, 2, 3, 4, 4]), ("back", [2, 6, 4, 4])]:
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return InferShapes()(NameNodes()(model).model).model


def test_shuffle_to_gather_finds_the_permutation() -> None:
    model = shuffle([0, 2, 1, 3, 4])
    result = ShuffleToGather()(model)
    assert result.modified and ops(result.model) == ["Gather"]
    gather = result.model.graph.node[0]
    index = next(i for i in result.model.graph.initializer if i.name == gather.input[1])
    assert numpy_helper.to_array(index).tolist() == [0, 3, 1, 4, 2, 5]
    x = images(2, 6, 4, 4)
    np.testing.assert_array_equal(outputs_on(result.model, x)[0], outputs_on(model, x)[0])


def test_shuffle_to_gather_leaves_other_transposes() -> None:
    model = shuffle([0, 1, 2, 4, 3])
    result = ShuffleToGather()(model)
    assert not result.modified and result.model is model


def test_run_tensors_reads_inner_tensors_in_batches() -> None:
    model = model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})
    x = images(5, 3, 6, 6)
    values = run_tensors(model, x, ["c", "out"], batch_size=2, cpu=True)
    assert values["c"].shape == (5, 4, 6, 6)
    np.testing.assert_array_equal(values["out"], np.maximum(values["c"], 0))
    probe = with_outputs(model, ["c", "out", "c"])
    assert [o.name for o in probe.graph.output] == ["out", "c"]
    assert [o.name for o in model.graph.output] == ["out"]


def fixed_batch_model(body: str, constants: dict[str, list[int]], out: str) -> onnx.ModelProto:
    model = model_with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[1, 3, 4, 4] input) => (float[{out}] out) {{
            c = Conv (input, w)
            {body}
        }}
        """,
        {"w": (2, 3, 1, 1)},
    )
    for name, value in constants.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return InferShapes()(NameNodes()(model).model).model


def test_free_fixed_batch_frees_the_reshapes_and_keeps_the_outputs() -> None:
    model = fixed_batch_model("out = Reshape (c, shape)", {"shape": [1, 32]}, "1, 32")
    result = FreeFixedBatch()(model)
    assert result.modified
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = images(5, 3, 4, 4)
    batched = outputs_on(result.model, x)[0]
    alone = np.concatenate([outputs_on(model, x[i : i + 1])[0] for i in range(5)])
    np.testing.assert_allclose(batched, alone, rtol=1e-6)


def test_free_fixed_batch_keeps_a_batch_baked_elsewhere() -> None:
    # A token of batch 1 concatenated to every image, as a ViT's class token: freeing only
    # the Reshape would break the model, and the check on a batch of images finds it.
    model = fixed_batch_model(
        "r = Reshape (c, shape)\n            out = Concat <axis = 1> (r, token)",
        {"shape": [1, 8, 4]},
        "1, 9, 4",
    )
    model.graph.initializer.append(numpy_helper.from_array(images(1, 1, 4), "token"))
    assert not FreeFixedBatch()(model).modified


def test_free_fixed_batch_leaves_a_free_batch_alone() -> None:
    model = InferShapes()(model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})).model
    assert not FreeFixedBatch()(model).modified


def fused(body: str, output: str) -> onnx.ModelProto:
    model = model_with_weights(
        f"""
        <ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
        net (float[N, 3, 6, 6] input) => ({output}) {{
            {body}
        }}
        """,
        {"w": (4, 3, 3, 3), "b": (4,), "wg": (12, 4), "bg": (4,)},
    )
    return model


@pytest.mark.parametrize(
    ("body", "output", "activation"),
    [
        (  # Conv + the residual input Z + LeakyRelu, as onnxruntime fuses a ResNet block
            "z = Relu (input)\n z1 = Slice (z, zero, one, one)\n"
            "z4 = Concat <axis = 1> (z, z1)\n"
            'out = com.microsoft.FusedConv <pads = [1, 1, 1, 1], activation = "LeakyRelu", '
            "activation_params = [0.2]> (input, w, b, z4)",
            "float[N, 4, 6, 6] out",
            "LeakyRelu",
        ),
        (
            'out = com.microsoft.FusedConv <pads = [1, 1, 1, 1], activation = "Clip", '
            "activation_params = [0.0, 6.0]> (input, w, b)",
            "float[N, 4, 6, 6] out",
            "Clip",
        ),
        (
            "p = GlobalAveragePool (input)\n r = Flatten (p)\n"
            "g = Concat <axis = 1> (r, r, r, r)\n"
            'out = com.microsoft.FusedGemm <activation = "Relu"> (g, wg, bg)',
            "float[N, 4] out",
            "Relu",
        ),
    ],
)
def test_lower_fused_ops_computes_what_onnxruntime_fused(
    body: str, output: str, activation: str
) -> None:
    model = fused(body, output)
    for name, value in (("zero", [0]), ("one", [1])):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    x = images(2, 3, 6, 6)
    expected = outputs_on(model, x)[0]  # onnxruntime's own fused kernel
    result = LowerFusedOps()(onnx.ModelProto.FromString(model.SerializeToString()))
    assert result.modified
    assert {n.domain for n in result.model.graph.node} == {""}
    assert activation in ops(result.model)
    assert [o.domain for o in result.model.opset_import] == [""]
    onnx.checker.check_model(result.model, full_check=True)
    np.testing.assert_allclose(outputs_on(result.model, x)[0], expected, rtol=1e-5, atol=1e-6)


def test_lower_fused_ops_names_every_op_it_cannot_lower() -> None:
    model = fused(
        "a = com.microsoft.Gelu (input)\n out = com.microsoft.FastGelu (a)",
        "float[N, 3, 6, 6] out",
    )
    message = "2 nodes use ops outside the ONNX standard.*Gelu.*FastGelu.*ORT_ENABLE_BASIC"
    with pytest.raises(ChainxError, match=message):
        LowerFusedOps()(model)


@pytest.mark.parametrize(("keep_io_types", "form"), [(False, FLOAT16_IO), (True, FLOAT16_INSIDE)])
def test_float16_as_float32_computes_what_the_float16_model_computes(
    keep_io_types: bool, form: str
) -> None:
    from onnxconverter_common import float16

    model = InferShapes()(model_with_weights(CONV_RELU, {"w": (4, 3, 3, 3)})).model
    half = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    assert float16_form(half) == form and float16_form(model) is None
    x = images(2, 3, 6, 6)
    expected = outputs_on(half, x if keep_io_types else x.astype(np.float16))[0]
    result = Float16AsFloat32()(onnx.ModelProto.FromString(half.SerializeToString()))
    assert result.modified and float16_form(result.model) is None
    onnx.checker.check_model(result.model, full_check=True)
    weight = next(
        i for i in result.model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT
    )
    source = next(i for i in half.graph.initializer if i.name == weight.name)
    # Every float16 weight is exactly a float32 value: nothing rounded on the way.
    assert np.array_equal(numpy_helper.to_array(weight), numpy_helper.to_array(source))
    got = outputs_on(result.model, x)[0]
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-2, atol=1e-2)


NHWC_ENTRY = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 6, 6, 3] input) => (float[N, 4, 6, 6] out) {{
        {entry}
        out = Conv <pads = [1, 1, 1, 1]> (t, w)
    }}
"""


@pytest.mark.parametrize(
    ("entry", "constants"),
    [
        ("t = Transpose <perm = [0, 3, 1, 2]> (input)", {}),
        (  # a Keras Normalization on NHWC, per channel on the last axis, then the Transpose
            "s = Sub (input, mean)\n d = Div (s, std)\n t = Transpose <perm = [0, 3, 1, 2]> (d)",
            {"mean": [[[[0.4, 0.5, 0.6]]]], "std": [0.2, 0.25, 0.3]},
        ),
    ],
)
def test_channels_first_input_reads_nhwc_as_nchw(entry: str, constants: dict) -> None:
    model = model_with_weights(NHWC_ENTRY.format(entry=entry), {"w": (4, 3, 3, 3)})
    for name, value in constants.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    assert reads_channels_last(model)
    x = images(2, 6, 6, 3)
    expected = outputs_on(model, x)[0]
    result = ChannelsFirstInput()(onnx.ModelProto.FromString(model.SerializeToString()))
    assert result.modified and "Transpose" not in ops(result.model)
    dims = [d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 6, 6]
    np.testing.assert_allclose(
        outputs_on(result.model, x.transpose(0, 3, 1, 2))[0], expected, rtol=1e-6
    )
    restored = with_channels_last_input(result.model)  # a chain gets the file's layout back
    np.testing.assert_allclose(outputs_on(restored, x)[0], expected, rtol=1e-6)


def test_channels_first_input_takes_tf2onnx_reshape_for_one_channel() -> None:
    text = NHWC_ENTRY.replace("6, 6, 3]", "6, 6, 1]").format(entry="t = Reshape (input, shape)")
    model = model_with_weights(text, {"w": (4, 1, 3, 3)})
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1, 1, 6, 6]), "shape"))
    result = ChannelsFirstInput()(model)
    assert result.modified and ops(result.model) == ["Conv"]


def test_channels_first_input_leaves_other_entries_alone() -> None:
    # The image also read elsewhere: not a plain channels-last entry.
    entry = "t = Transpose <perm = [0, 3, 1, 2]> (input)\n r = Relu (input)"
    model = model_with_weights(NHWC_ENTRY.format(entry=entry), {"w": (4, 3, 3, 3)})
    assert not reads_channels_last(model) and not ChannelsFirstInput()(model).modified


# nn.MultiheadAttention's packed in-projection as torch writes it (a batch of 1 folded in).
PACKED_PROJECTION = """
<ir_version: 9, opset_import: ["" : 17]>
net (float[5, 1, 4] x) => (float[5, 1, 4] q, float[5, 1, 4] k, float[5, 1, 4] v) {
    m = MatMul (x, w)
    p = Add (b, m)
    r = Reshape (p, shape)
    u = Unsqueeze (r, zero)
    t = Transpose <perm = [3, 1, 2, 0, 4]> (u)
    s = Squeeze (t, three)
    q = Gather <axis = 0> (s, i0)
    k = Gather <axis = 0> (s, i1)
    v = Gather <axis = 0> (s, i2)
}
"""


def packed_projection(extra_reader: bool = False) -> onnx.ModelProto:
    text = PACKED_PROJECTION
    if extra_reader:  # the packed tensor is also an output: it must stay
        text = text.replace("float[5, 1, 4] v)", "float[5, 1, 4] v, float[5, 1, 12] p)")
    model = model_with_weights(text, {"w": (4, 12), "b": (12,)})
    integers = {
        "shape": [5, 1, 3, 4],
        "zero": [0],
        "three": [3],
        "i0": 0,
        "i1": 1,
        "i2": 2,
    }
    for name, value in integers.items():
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    return InferShapes()(NameNodes()(model).model).model


def test_a_packed_projection_becomes_three_projections_on_column_blocks() -> None:
    model = packed_projection()
    result = SplitPackedProjection()(model)
    assert result.modified
    assert ops(result.model) == ["MatMul", "Add"] * 3
    weights = {init.name: numpy_helper.to_array(init) for init in result.model.graph.initializer}
    original = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for index, node in enumerate(n for n in result.model.graph.node if n.op_type == "MatMul"):
        columns = slice(4 * index, 4 * index + 4)
        np.testing.assert_array_equal(weights[node.input[1]], original["w"][:, columns])
    x = np.random.default_rng(1).standard_normal((5, 1, 4)).astype(np.float32)
    before = session(model).run(None, {"x": x})
    after = session(result.model).run(None, {"x": x})
    for expected, actual in zip(before, after, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)
    assert "w" not in weights and "b" not in weights  # gone with the packed MatMul


def test_a_packed_projection_read_elsewhere_stays() -> None:
    model = packed_projection(extra_reader=True)
    assert not SplitPackedProjection()(model).modified
