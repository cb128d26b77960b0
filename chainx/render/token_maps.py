"""Featuremaps of a vision transformer's chain, on the patch grid, from the chain itself.

- A block's MLP (`B3.M`): the SMOE scale of its kept neurons at each patch token, laid over
  the image as a CNN layer's is (featuremaps.py).
- A block's heads (`B3.H`): for each kept head, its attention from the class token to the
  patches, one row per head; without a class token (a Keras ViT pools the tokens' mean),
  the attention each patch receives, averaged over the tokens that attend.

Tokens sit on a square grid after an optional class token first (timm and torchvision put
it there); a layer whose token count fits neither is not drawn.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from PIL import Image

from chainx.images import Preprocessing
from chainx.onnx.runtime import run_tensors
from chainx.onnx.score_points import score_muls
from chainx.render.featuremaps import (
    THUMBNAIL,
    displayable,
    file_stem,
    normalised,
    overlay,
    png_bytes,
    smoe_scale,
)


def _grid(tokens: int) -> tuple[int, int] | None:
    """(first patch token, grid side) for `tokens` tokens, or None."""
    for first in (1, 0):
        side = math.isqrt(tokens - first)
        if side > 1 and side * side == tokens - first:
            return first, side
    return None


def token_maps(
    chain: onnx.ModelProto,
    images: np.ndarray,
    prep: Preprocessing,
    names: dict[str, str],
    kinds: dict[str, str],
) -> dict[str, tuple[str, bytes]]:
    """Layer node name → (file name, PNG) for the transformer layers among `kinds`
    (layer → ScorePoint.kind): "neuron" layers on tokens and "head" layers."""
    muls = score_muls(chain)
    producer = {name: node for node in chain.graph.node for name in node.output}
    wanted: dict[str, str] = {}
    for layer, mul in muls.items():
        if kinds.get(layer) == "neuron":
            wanted[layer] = mul.output[0]
        elif kinds.get(layer) == "head":
            heads = producer.get(mul.input[0])
            if heads is not None and heads.op_type == "MatMul":
                wanted[layer] = heads.input[0]  # the attention weights, (N, H, tokens, tokens)
    if not wanted:
        return {}
    values = run_tensors(chain, images, list(dict.fromkeys(wanted.values())), batch_size=1)
    pictures = [displayable(image, prep) for image in images]
    strips: dict[str, tuple[str, bytes]] = {}
    for layer, name in wanted.items():
        value = values[name]
        if kinds[layer] == "neuron":
            rows = _mlp_rows(value, pictures)
        else:
            rows = _head_rows(value, pictures)
        if rows:
            strips[layer] = (f"{file_stem(names.get(layer, layer))}.png", _sheet(rows))
    return strips


def token_unit_maps(
    chain: onnx.ModelProto, images: np.ndarray, kinds: dict[str, str]
) -> dict[str, np.ndarray]:
    """Layer node name → (N, kept units, side, side): each kept MLP neuron's value and each
    kept head's output norm at every patch token, on the patch grid, for the transformer
    layers among `kinds`. The shape of a CNN layer's activations, so that the filter
    sheets' best crops (activation_max.dataset_examples) find a unit's peaks alike."""
    wanted = {
        layer: mul.output[0]
        for layer, mul in score_muls(chain).items()
        if kinds.get(layer) in ("neuron", "head")
    }
    if not wanted:
        return {}
    values = run_tensors(chain, images, list(wanted.values()), batch_size=1)
    maps: dict[str, np.ndarray] = {}
    for layer, name in wanted.items():
        value = values[name]
        if kinds[layer] == "head" and value.ndim == 4:
            value = np.linalg.norm(value, axis=-1)  # (N, H, T)
        elif kinds[layer] == "neuron" and value.ndim == 3:
            value = value.transpose(0, 2, 1)  # (N, U, T)
        else:
            continue
        if (grid := _grid(value.shape[-1])) is not None:
            first, side = grid
            maps[layer] = value[..., first:].reshape(*value.shape[:2], side, side)
    return maps


def _mlp_rows(value: np.ndarray, pictures: list[np.ndarray]) -> list[list[Image.Image]]:
    """One row: each image with the SMOE scale of the kept neurons per patch."""
    if value.ndim != 3 or (grid := _grid(value.shape[1])) is None:
        return []
    first, side = grid
    tiles = []
    for picture, tokens in zip(pictures, value, strict=True):
        maps = tokens[first:].T.reshape(-1, side, side)  # (neurons, side, side)
        tiles.append(overlay(picture, normalised(smoe_scale(maps))))
    return [tiles]


def _head_rows(value: np.ndarray, pictures: list[np.ndarray]) -> list[list[Image.Image]]:
    """One row per kept head: each image with the class token's attention to the patches
    (or, without a class token, the mean attention each patch receives)."""
    if value.ndim != 4 or (grid := _grid(value.shape[-1])) is None:
        return []
    first, side = grid
    rows = []
    for head in range(value.shape[1]):
        tiles = []
        for picture, attention in zip(pictures, value[:, head], strict=True):
            received = attention[0, 1:] if first else attention.mean(axis=0)
            weights = received.reshape(side, side).astype(np.float64)
            spread = weights.max() - weights.min()
            heat = (weights - weights.min()) / spread if spread > 0 else np.zeros_like(weights)
            tiles.append(overlay(picture, heat))
        rows.append(tiles)
    return rows


def _sheet(rows: list[list[Image.Image]]) -> bytes:
    sheet = Image.new("RGB", (THUMBNAIL * len(rows[0]), THUMBNAIL * len(rows)))
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            sheet.paste(tile, (column * THUMBNAIL, row * THUMBNAIL))
    return png_bytes(sheet)
