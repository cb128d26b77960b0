"""Per-layer featuremaps of the chain: the SMOE scale of each retained layer, as heat maps.

The SMOE scale (Mundhenk et al. 2019) summarises a layer's channels at each pixel by how
much their mean exceeds their geometric mean: m·log(m/g). It is large where a few channels
fire strongly, and zero where all channels agree. It is computed from the chain itself, in
onnxruntime, on the kept channels only, after the layer's score.
"""

from __future__ import annotations

import io
import math

import numpy as np
import onnx
from PIL import Image

from chainx.images import Preprocessing
from chainx.onnx.runtime import run_tensors
from chainx.onnx.score_points import score_muls
from chainx.render.html import viridis

THUMBNAIL = 112


def layer_activations(
    chain: onnx.ModelProto, images: np.ndarray, layers: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Layer node name → its scored output (N, kept, H, W) on `images`, run in the chain.

    `layers` limits it to those layers (a transformer's heads are 4-D but not images).
    """
    scored = {
        layer: mul.output[0]
        for layer, mul in score_muls(chain).items()
        if layers is None or layer in layers
    }
    shapes = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in onnx.shape_inference.infer_shapes(chain).graph.value_info
    }
    spatial = {layer: name for layer, name in scored.items() if shapes.get(name) == 4}
    values = run_tensors(chain, images, spatial.values(), batch_size=1)
    return {layer: values[name] for layer, name in spatial.items()}


def smoe_scale(activation: np.ndarray, epsilon: float = 1e-6) -> np.ndarray:
    """(C, H, W) → (H, W): mean · log(mean / geometric mean) over the channels, after ReLU."""
    positive = np.maximum(activation.astype(np.float64), 0.0) + epsilon
    mean = positive.mean(axis=0)
    geometric = np.exp(np.log(positive).mean(axis=0))
    return mean * np.log(mean / geometric)


def normalised(scale: np.ndarray) -> np.ndarray:
    """Map a SMOE scale to [0, 1] by the normal CDF of its z-score, as in the paper."""
    spread = float(scale.std())
    if spread == 0.0 or not np.isfinite(spread):
        return np.zeros_like(scale)
    z = (scale - scale.mean()) / spread
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def colour(values: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB (H, W, 3) uint8 on the viridis stops."""
    return viridis(values).round().astype(np.uint8)


def displayable(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """A preprocessed (C, S, S) input back to (S, S, 3) uint8 for display."""
    mean = np.asarray(prep.mean, np.float32)[:, None, None]
    std = np.asarray(prep.std, np.float32)[:, None, None]
    pixels = np.clip(image * std + mean, 0.0, 1.0)
    pixels = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
    return (pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, size: int = THUMBNAIL) -> Image.Image:
    """The heat map (H, W) in [0, 1] upsampled onto the image, half and half."""
    base = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    heat_image = Image.fromarray((heat * 255).round().astype(np.uint8))
    heat_image = heat_image.resize((size, size), Image.Resampling.BILINEAR)
    coloured = Image.fromarray(colour(np.asarray(heat_image, np.float64) / 255.0))
    return Image.blend(base.convert("RGB"), coloured, 0.55)


def featuremap_strips(
    activations: dict[str, np.ndarray],
    images: np.ndarray,
    prep: Preprocessing,
    names: dict[str, str],
) -> dict[str, tuple[str, bytes]]:
    """One PNG strip per retained spatial layer: every region image with its SMOE map.

    `activations` are `layer_activations` of the chain on `images`. Returns layer node
    name → (file name, PNG).
    """
    pictures = [displayable(image, prep) for image in images]
    strips: dict[str, tuple[str, bytes]] = {}
    for layer, activation in activations.items():
        tiles = [
            overlay(picture, normalised(smoe_scale(maps)))
            for picture, maps in zip(pictures, activation, strict=True)
        ]
        strip = Image.new("RGB", (THUMBNAIL * len(tiles), THUMBNAIL))
        for index, tile in enumerate(tiles):
            strip.paste(tile, (index * THUMBNAIL, 0))
        strips[layer] = (f"{file_stem(names.get(layer, layer))}.png", png_bytes(strip))
    return strips


def png_bytes(image: Image.Image) -> bytes:
    """PNG at zlib's fastest level: heat maps over photos hardly compress, and `optimize`
    took 15x the time for 15 % fewer bytes (ResNet-18 strips: 12.4 s against 0.8 s)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def file_stem(name: str) -> str:
    """A layer's display name as a safe file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "layer"
