"""Find and preprocess the region's images: RGB (or gray), resize, centre-crop, normalise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from chainx.errors import ChainxError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int

    def describe(self) -> str:
        mode = "RGB" if self.channels == 3 else "grayscale"
        return (
            f"{mode}, resize short side to {self.resize}, centre-crop {self.size}, "
            f"scale to [0,1], mean {list(self.mean)}, std {list(self.std)}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "size": self.size,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
        }

    @classmethod
    def from_json(cls, data: dict) -> Preprocessing:
        return cls(
            size=data["size"],
            resize=data["resize"],
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            channels=data["channels"],
        )


@dataclass
class ImageSet:
    """Images as one (N, C, S, S) float32 array, with their paths and folder labels."""

    paths: list[Path]
    labels: list[str]
    array: np.ndarray


def make_preprocessing(
    input_shape: list[int | None],
    size: int | None,
    resize: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> Preprocessing:
    if len(input_shape) != 4:
        raise ChainxError(
            f"the model input has rank {len(input_shape)}; chainx needs an image input "
            "(N, C, H, W)."
        )
    channels, height, width = input_shape[1:]
    if channels not in (1, 3):
        raise ChainxError(
            f"the model input has {channels} channels; chainx reads images as RGB (3) or "
            "grayscale (1)."
        )
    if size is None:
        if height is None or height != width:
            raise ChainxError(
                f"the model input is {height}×{width}, not a fixed square size: give --size."
            )
        size = height
    elif height is not None and (height, width) != (size, size):
        raise ChainxError(f"--size {size} does not match the model's fixed input {height}×{width}.")
    mean = mean or (IMAGENET_MEAN if channels == 3 else (0.5,))
    std = std or (IMAGENET_STD if channels == 3 else (0.5,))
    for option, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise ChainxError(f"{option} needs 1 or {channels} values, got {len(values)}.")
    if any(s <= 0 for s in std):
        raise ChainxError("--std values must be positive.")
    return Preprocessing(
        size=size,
        resize=resize if resize is not None else round(size * 8 / 7),
        mean=tuple(mean),
        std=tuple(std),
        channels=channels,
    )


def find_images(folder: Path) -> tuple[list[Path], list[str]]:
    """Images in a flat folder, or in one sub-folder per class (the label)."""
    if not folder.is_dir():
        raise ChainxError(f"{folder}: not a folder. Give a folder of images.")
    paths: list[Path] = []
    labels: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            for path in sorted(entry.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(path)
                    labels.append(entry.name)
        elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(entry)
            labels.append("")
    if not paths:
        raise ChainxError(
            f"{folder}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))}), neither in "
            "the folder nor in its class sub-folders."
        )
    return paths, labels


def load_image(path: Path, prep: Preprocessing) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB" if prep.channels == 3 else "L")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ChainxError(
            f"{path}: not a readable image ({exc}). Remove it or replace it."
        ) from None
    scale = prep.resize / min(image.size)
    resized = image.resize(
        (max(prep.size, round(image.width * scale)), max(prep.size, round(image.height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - prep.size) // 2
    top = (resized.height - prep.size) // 2
    crop = resized.crop((left, top, left + prep.size, top + prep.size))
    array = np.asarray(crop, np.float32).reshape(prep.size, prep.size, prep.channels) / 255.0
    mean = np.asarray(prep.mean, np.float32)
    std = np.asarray(prep.std, np.float32)
    return ((array - mean) / std).transpose(2, 0, 1)


def load_images(folder: Path, prep: Preprocessing) -> ImageSet:
    paths, labels = find_images(folder)
    array = np.stack([load_image(path, prep) for path in paths]).astype(np.float32)
    return ImageSet(paths=paths, labels=labels, array=array)
