"""Find and preprocess the region's images: RGB (or gray), resize, centre-crop, normalise."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from PIL import Image, ImageOps, UnidentifiedImageError

from chainx.errors import ChainxError
from chainx.onnx.input_scaling import in_graph_normalisation

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
    note: str | None = None  # why the mean and std are what they are, where not asked for

    def describe(self) -> str:
        mode = "RGB" if self.channels == 3 else "grayscale"
        return (
            f"{mode}, resize short side to {self.resize}, centre-crop {self.size}, "
            f"scale to [0,1], mean {list(self.mean)}, std {list(self.std)}"
            + (f" ({self.note})" if self.note else "")
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
    skipped: SkippedFiles = field(default_factory=lambda: SkippedFiles())


def model_preprocessing(
    model: onnx.ModelProto,
    size: int | None,
    resize: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> Preprocessing:
    """`make_preprocessing` for the model's first input. A model that normalises its own
    input gets its pixels unnormalised, on the scale it reads, unless --mean/--std say
    otherwise."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    in_graph = in_graph_normalisation(model) if mean is None and std is None else None
    if in_graph is None:
        return make_preprocessing(shape, size, resize, mean, std)
    prep = make_preprocessing(shape, size, resize, (0.0,), (1.0 / in_graph.pixel_scale,))
    return replace(prep, note=in_graph.describe())


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
    if channels not in (1, 3) and width in (1, 3):
        raise ChainxError(
            f"the model input {input_shape} looks channels-last (N, H, W, C); chainx needs "
            "(N, C, H, W). Export the model with a channels-first input, or put a Transpose "
            "in front of it."
        )
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


# Pixels above which an image is refused before it is decoded: a decompression bomb.
MAX_PIXELS = 64_000_000
# Stand-ins that photo sites serve for deleted photos (e.g. in the ants/bees set).
PLACEHOLDER_STEMS = {"imagenotfound", "photo_unavailable", "unavailable"}


@dataclass
class SkippedFiles:
    """Files in an image folder that are not used, and why: reported once, counted."""

    not_images: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def describe(self) -> str | None:
        parts = []
        if self.not_images:
            names = ", ".join(p.name for p in self.not_images[:3])
            more = f" and {len(self.not_images) - 3} more" if len(self.not_images) > 3 else ""
            parts.append(f"{len(self.not_images)} non-image or placeholder files ({names}{more})")
        if self.unreadable:
            names = "; ".join(f"{p.name}: {why}" for p, why in self.unreadable[:3])
            more = f"; and {len(self.unreadable) - 3} more" if len(self.unreadable) > 3 else ""
            parts.append(f"{len(self.unreadable)} unreadable images ({names}{more})")
        return "skipped " + " and ".join(parts) if parts else None


def _is_candidate(path: Path) -> bool:
    suffix = path.suffix.lower()
    return (
        (suffix in IMAGE_SUFFIXES or suffix == ".npy")
        and not path.name.startswith(".")
        and path.stem.lower() not in PLACEHOLDER_STEMS
    )


def find_images(folder: Path) -> tuple[list[Path], list[str], list[Path]]:
    """Images in a flat folder, or in one sub-folder per class (the label).

    Returns the images, their labels, and the other files (skipped).
    """
    if not folder.is_dir():
        raise ChainxError(f"{folder}: not a folder. Give a folder of images.")
    paths: list[Path] = []
    labels: list[str] = []
    skipped: list[Path] = []
    for entry in sorted(folder.iterdir()):
        files = [(entry, "")] if entry.is_file() else []
        if entry.is_dir():
            files = [(path, entry.name) for path in sorted(entry.iterdir()) if path.is_file()]
        for path, label in files:
            if _is_candidate(path):
                paths.append(path)
                labels.append(label)
            else:
                skipped.append(path)
    if not paths:
        raise ChainxError(
            f"{folder}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))} or .npy), "
            "neither in the folder nor in its class sub-folders."
        )
    return paths, labels, skipped


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images (PNG "I;16", "I") scaled to 8 bits, not clipped."""
    if image.mode not in {"I;16", "I;16B", "I;16L", "I"}:
        return image
    values = np.asarray(image, np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _load_array(path: Path, prep: Preprocessing) -> np.ndarray:
    """A preprocessed .npy tensor, (C, S, S) or (1, C, S, S), as the model takes it."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _Unreadable(f"not a readable .npy file ({exc})") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    expected = (prep.channels, prep.size, prep.size)
    if array.shape != expected or not np.issubdtype(array.dtype, np.number):
        raise _Unreadable(f"a .npy input must be a number array of shape {expected}")
    return array.astype(np.float32)


class _Unreadable(Exception):
    """One input file that cannot be used; the message says why."""


def load_image(path: Path, prep: Preprocessing) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return _load_array(path, prep)
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise _Unreadable(
                    f"{opened.width}×{opened.height} pixels is over chainx's limit of "
                    f"{MAX_PIXELS:,} (a decompression bomb?)"
                )
            image = _to_8_bit(ImageOps.exif_transpose(opened))
            image = image.convert("RGB" if prep.channels == 3 else "L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise _Unreadable(f"not a readable image ({exc})") from None
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


def load_images(folder: Path, prep: Preprocessing, strict: bool = False) -> ImageSet:
    """Load and preprocess every image of a folder.

    Non-image files and known placeholders are skipped and counted. An unreadable image
    (corrupt, truncated, a decompression bomb) is skipped and named, or with `strict` is an
    error. Inputs with NaN or Inf are refused.
    """
    paths, labels, other = find_images(folder)
    return load_image_files(paths, labels, prep, strict, SkippedFiles(not_images=other), folder)


def load_image_files(
    paths: list[Path],
    labels: list[str],
    prep: Preprocessing,
    strict: bool = False,
    skipped: SkippedFiles | None = None,
    source: Path | None = None,
) -> ImageSet:
    """Load and preprocess the given images, with the rules of `load_images`."""
    skipped = skipped or SkippedFiles()
    kept_paths, kept_labels, arrays = [], [], []
    for path, label in zip(paths, labels, strict=True):
        try:
            array = load_image(path, prep)
        except _Unreadable as exc:
            if strict:
                raise ChainxError(
                    f"{path}: {exc}. Remove or replace it, or drop --strict to skip it."
                ) from None
            skipped.unreadable.append((path, str(exc)))
            continue
        if not np.isfinite(array).all():
            raise ChainxError(f"{path}: the input holds NaN or Inf values. Fix or remove it.")
        kept_paths.append(path)
        kept_labels.append(label)
        arrays.append(array)
    if not arrays:
        raise ChainxError(
            f"{source or paths[0].parent}: none of its {len(paths)} image files could be read "
            f"({skipped.unreadable[0][0].name}: {skipped.unreadable[0][1]})."
        )
    return ImageSet(
        paths=kept_paths,
        labels=kept_labels,
        array=np.stack(arrays).astype(np.float32),
        skipped=skipped,
    )
