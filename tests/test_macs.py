"""MACs counted from the graph, against counts worked out by hand."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chainx.onnx.macs import count_macs


def model(
    nodes: list[onnx.NodeProto],
    weights: dict[str, tuple[int, ...]],
    input_shape: list[int | str | None],
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.ones(shape, np.float32), name)
            for name, shape in weights.items()
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def image(channels: int, height: int, width: int) -> np.ndarray:
    return np.zeros((1, channels, height, width), np.float32)


def test_a_conv_counts_each_output_times_its_inputs() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    # 8 × 10 × 10 outputs, each reading 3 channels × 3 × 3.
    assert (
        count_macs(model([conv], {"w": (8, 3, 3, 3)}, [1, 3, 10, 10]), image(3, 10, 10)) == 800 * 27
    )


def test_a_depthwise_conv_counts_only_its_own_channel() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2])
    # 10 × 10 input, 3 × 3 kernel, stride 2, no padding: 4 × 4 outputs per channel.
    assert (
        count_macs(model([conv], {"w": (8, 1, 3, 3)}, [1, 8, 10, 10]), image(8, 10, 10))
        == 8 * 16 * 9
    )


def test_a_conv_transpose_spreads_every_input_over_its_kernel() -> None:
    conv = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    assert count_macs(model([conv], {"w": (4, 2, 2, 2)}, [1, 4, 5, 5]), image(4, 5, 5)) == 100 * 8


def test_gemm_and_matmul_count_rows_times_inner_times_columns() -> None:
    gemm = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
    assert count_macs(model([gemm], {"w": (4, 16)}, [1, 16]), np.zeros((1, 16), np.float32)) == 64
    gemm_a = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)
    assert count_macs(model([gemm_a], {"w": (16, 4)}, [16, 1]), np.zeros((16, 1), np.float32)) == 64
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"])
    features = np.zeros((1, 5, 16), np.float32)
    assert count_macs(model([matmul], {"w": (16, 4)}, [1, 5, 16]), features) == 5 * 16 * 4


def test_elementwise_ops_are_not_counted_and_a_free_size_is_read_from_the_image() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["c"])
    relu = helper.make_node("Relu", ["c"], ["r"])
    add = helper.make_node("Add", ["r", "c"], ["y"])
    free = model([conv, relu, add], {"w": (2, 3, 1, 1)}, ["n", 3, "h", "w"])
    assert count_macs(free, image(3, 6, 5)) == 2 * 30 * 3


def test_shapes_computed_at_run_time_are_known() -> None:
    """A padding computed from the input's shape (timm's "same" padding) defeats ONNX shape
    inference; the count reads the shapes onnxruntime gives."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "two", "four"], ["size"]),
        helper.make_node("Mod", ["size", "two_values"], ["odd"]),
        helper.make_node("Concat", ["zeros", "odd", "zeros", "odd"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["y"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = model(nodes, {"w": (4, 3, 2, 2)}, [1, 3, "h", "w"])
    for name, value in {"two": [2], "four": [4], "two_values": [2, 2], "zeros": [0, 0]}.items():
        graph.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    # 7 × 7 padded to 8 × 8: 4 × 4 outputs per filter, each reading 3 × 2 × 2.
    assert count_macs(graph, image(3, 7, 7)) == 4 * 16 * 12
