"""Unit visualisations by activation maximisation (Erhan et al. 2009), on the chain.

For the top-scored units of each retained layer, an input image is optimised to excite
the unit, with the usual regularisation: the image lives in a decorrelated Fourier space
(low frequencies first, colours decorrelated), and every step sees it randomly jittered,
scaled and rotated. All units are optimised together, one image each, in one batch, in
the model's own preprocessing space. Beside each image: the region crops that excite the
unit most. This is an optimisation module, so it imports torch.

A unit's response is its mean over the image: a Conv filter's over its featuremap, an MLP
neuron's over the tokens, and an attention head's output norm (over its D values) over the
tokens, as the paper's ViT chains are read.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from PIL import Image

from chainx.images import Preprocessing
from chainx.onnx.graph import fixed_batch
from chainx.onnx.normalise import float32_channels_first
from chainx.onnx.runtime import with_outputs
from chainx.onnx.score_points import score_muls
from chainx.render.featuremaps import displayable, file_stem, png_bytes
from chainx.scoring.memory import keep_freed_memory
from chainx.scoring.model import padded_batches, quiet_list_indexing

# Colour correlation of natural images (square root of the RGB covariance), as in Lucid.
COLOUR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR = COLOUR / COLOUR.norm(dim=0).max()
TILE = 96


@dataclass(frozen=True)
class Target:
    layer: str
    position: int  # the filter's position among the layer's kept channels in the chain
    index: int  # its original index
    kind: str = "filter"  # ScorePoint.kind: "filter", "neuron" or "head"


def unit_view(value: torch.Tensor, kind: str) -> torch.Tensor:
    """A scored layer's output with the units on axis 1, a unit's responses after it:
    filters (N, C, H, W) as they are, neurons (N, T, U) → (N, U, T), heads (N, H, T, D) →
    their output norm (N, H, T)."""
    if kind == "neuron":
        return value.movedim(-1, 1)
    if kind == "head":
        return torch.linalg.vector_norm(value, dim=-1)
    return value


def _probe(chain: onnx.ModelProto, layers: list[str]) -> tuple[torch.nn.Module, list[str]]:
    """The chain converted to torch, with each scored layer's output as an extra output."""
    import onnx2torch

    keep_freed_memory()

    muls = score_muls(chain)
    names = [muls[layer].output[0] for layer in layers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A float16 or channels-last chain is drawn from its float32, NCHW twin.
        probe = float32_channels_first(chain)
        module = onnx2torch.convert(with_outputs(probe, names)).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module, names


def _fourier_image(spectrum: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, size, size//2+1, 2) spectrum → (N, 3, size, size) pixels in [0, 1]."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    scale = 1.0 / torch.sqrt(fy**2 + fx**2).clamp_min(1.0 / size)
    image = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(size, size), norm="ortho")
    if image.requires_grad:
        # A gradient that reaches the FFT with a zero stride (a response that ignores some
        # pixels, as DenseNet's) made oneMKL 2024 fail in torch < 2.8 (pytorch#154477).
        image.register_hook(lambda grad: grad.contiguous())
    image = torch.einsum("nchw,dc->ndhw", image, COLOUR)
    return torch.sigmoid(image)


def _run_probe(
    module: torch.nn.Module, x: torch.Tensor, fixed_batch: int | None, kinds: list[str]
) -> list[torch.Tensor]:
    """The scored layers' outputs, units on axis 1 (unit_view); a model with a fixed batch
    runs in pieces of that size."""
    with quiet_list_indexing():
        if not fixed_batch or len(x) == fixed_batch:
            outputs = list(module(x)[1:])
        else:
            pieces = [module(chunk)[1:] for chunk in padded_batches(x, fixed_batch)]
            outputs = [torch.cat(layer)[: len(x)] for layer in zip(*pieces, strict=True)]
    return [unit_view(value, kind) for value, kind in zip(outputs, kinds, strict=True)]


def _transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random jitter, scale and rotation, so that only robust patterns survive."""
    count = len(images)
    angle = (torch.rand(count, generator=generator) - 0.5) * (math.pi / 18)
    scale = 1.0 + (torch.rand(count, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(count, 2, generator=generator) - 0.5) * 0.1
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(
        images, grid, padding_mode="reflection", align_corners=False
    )


def visualise(
    chain: onnx.ModelProto,
    targets: list[Target],
    prep: Preprocessing,
    steps: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """One (S, S, 3) uint8 image per target, each maximising its unit's mean response."""
    layers = sorted({t.layer for t in targets})
    kinds = [next(t.kind for t in targets if t.layer == layer) for layer in layers]
    module, _ = _probe(chain, layers)
    generator = torch.Generator().manual_seed(seed)
    size = prep.size
    spectrum = 0.01 * torch.randn(len(targets), 3, size, size // 2 + 1, 2, generator=generator)
    spectrum.requires_grad_(True)
    adam = torch.optim.Adam([spectrum], lr=0.1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    which = [layers.index(t.layer) for t in targets]
    fixed = fixed_batch(chain)
    positions = torch.tensor([t.position for t in targets])
    for _ in range(steps):
        adam.zero_grad()
        pixels = _transform(_fourier_image(spectrum, size), generator)
        if prep.channels == 1:
            pixels = pixels.mean(dim=1, keepdim=True)
        outputs = _run_probe(module, (pixels - mean) / std, fixed, kinds)
        responses = torch.stack(
            [outputs[layer][i, positions[i]].mean() for i, layer in enumerate(which)]
        )
        loss = -responses.sum()
        if not loss.requires_grad:  # every target is a constant: its inputs were all removed
            break
        loss.backward()
        adam.step()
    with torch.no_grad():
        final = _fourier_image(spectrum, size)
        if prep.channels == 1:
            final = final.mean(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    return (final.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def dataset_examples(
    activation: np.ndarray, images: np.ndarray, prep: Preprocessing, count: int = 3
) -> list[Image.Image]:
    """The region image that excites one unit most (its response (N, H, W) summed), then
    the `count` crops around the highest peaks of its response (a token unit's on the patch
    grid)."""
    n, height, width = activation.shape
    flat = activation.reshape(n, -1)
    whole = int(np.maximum(flat, 0).sum(axis=1).argmax())
    examples = [
        Image.fromarray(displayable(images[whole], prep)).resize(
            (TILE, TILE), Image.Resampling.BILINEAR
        )
    ]
    best = np.argsort(-flat.max(axis=1))[:count]
    crops = []
    for image_index in best:
        y, x = divmod(int(flat[image_index].argmax()), width)
        picture = Image.fromarray(displayable(images[image_index], prep))
        half = max(prep.size // 4, 8)
        cy = int((y + 0.5) * prep.size / height)
        cx = int((x + 0.5) * prep.size / width)
        box = (cx - half, cy - half, cx + half, cy + half)
        crops.append(picture.crop(box).resize((TILE, TILE), Image.Resampling.BILINEAR))
    return examples + crops


def filter_sheets(
    chain: onnx.ModelProto,
    targets: list[Target],
    activations: dict[str, np.ndarray],
    images: np.ndarray,
    prep: Preprocessing,
    names: dict[str, str],
    steps: int = 64,
) -> dict[str, tuple[str, bytes]]:
    """Per layer one PNG (layer node name → (file name, PNG)): a row per top unit: its
    visualisation, the region image that excites it most, and the three crops where it
    peaks. `activations` hold each layer's units on axis 1 over an (H, W) grid."""
    if not targets:
        return {}
    pictures = visualise(chain, targets, prep, steps=steps)
    sheets: dict[str, tuple[str, bytes]] = {}
    for layer in dict.fromkeys(t.layer for t in targets):
        rows = [(t, pictures[i]) for i, t in enumerate(targets) if t.layer == layer]
        sheet = Image.new("RGB", (TILE * 5 + 6, (TILE + 2) * len(rows)), "white")
        for row, (target, picture) in enumerate(rows):
            top = row * (TILE + 2)
            sheet.paste(Image.fromarray(picture).resize((TILE, TILE)), (0, top))
            examples = dataset_examples(activations[layer][:, target.position], images, prep)
            for column, crop in enumerate(examples, start=1):
                sheet.paste(crop, (column * TILE + 6, top))
        sheets[layer] = (f"{file_stem(names.get(layer, layer))}.png", png_bytes(sheet))
    return sheets
