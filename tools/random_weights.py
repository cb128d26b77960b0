"""Write the random-weights control of a model: its weights re-drawn, BatchNorm re-estimated.

Every Conv, Gemm and MatMul weight is drawn again from N(0, σ²) at the layer's original
standard deviation; biases stay; each BatchNormalization's running statistics are measured
on IMAGES (preprocessed as `chainx extract` reads them). Extract a chain of the result as
of any model:
    python tools/random_weights.py build/cifar10_resnet20.onnx build/region --seed 0 \
        --out build/resnet20_random.onnx
    chainx extract build/resnet20_random.onnx build/region --out build/chain_random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from chainx.images import load_images, model_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.random_weights import random_weights_model


def write_random_weights(
    model: Path,
    images: Path,
    out: Path,
    seed: int,
    size: int | None = None,
    resize: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> None:
    normalised = normalise(load_model(model))
    prep = model_preprocessing(normalised, size, resize, mean, std)
    region = load_images(images, prep)
    onnx.save(random_weights_model(normalised, region.array, seed), out)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(value) for value in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path, help="a folder of images (sub-folders too)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    # The preprocessing options of chainx extract, with the same defaults.
    parser.add_argument("--size", type=int)
    parser.add_argument("--resize", type=int)
    parser.add_argument("--mean", type=_floats, help="e.g. 0.485,0.456,0.406")
    parser.add_argument("--std", type=_floats, help="e.g. 0.229,0.224,0.225")
    args = parser.parse_args()
    write_random_weights(
        args.model, args.images, args.out, args.seed, args.size, args.resize, args.mean, args.std
    )


if __name__ == "__main__":
    main()
