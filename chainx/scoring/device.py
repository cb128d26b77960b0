"""Where torch runs: the device for the scores, the GPUs a sweep can use, its threads."""

from __future__ import annotations

import torch

from chainx.errors import ChainxError
from chainx.onnx.runtime import use_threads


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ChainxError("--device cuda: torch sees no CUDA device. Use --device cpu or auto.")
    return device


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def set_threads(threads: int) -> None:
    """torch's threads and onnxruntime's, one count for the process."""
    torch.set_num_threads(threads)
    use_threads(threads)
