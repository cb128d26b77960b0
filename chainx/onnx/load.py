"""Read a model file safely: the checker, and external data confined to its folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import onnx.external_data_helper
import onnx.helper

from chainx.errors import ChainxError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: Path) -> onnx.ModelProto:
    """Read and check a model file; external data is read from the model's folder."""
    if not path.is_file():
        raise ChainxError(f"{path}: no such model file. Give the path of an .onnx file.")
    if path.stat().st_size == 0:
        raise ChainxError(f"{path}: the file is empty. Export the model again.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        raise ChainxError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc}). "
            "Export the model again, or check that the file is complete."
        ) from None
    _check_external_locations(model, path)
    try:
        onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ChainxError(
            f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc}). "
            "Export the model again, or check that the file and its external data are "
            "complete."
        ) from None
    _check_opsets(model, path)
    return model


def _check_opsets(model: onnx.ModelProto, path: Path) -> None:
    """Every opset of an ONNX domain must be one this onnx knows: the checker lets an unknown
    version through, and onnx's helpers then fail deep inside normalisation."""
    known = onnx.helper.OP_SET_ID_VERSION_MAP
    for opset in model.opset_import:
        domain = opset.domain or "ai.onnx"
        versions = [version for name, version in known if name == domain]
        if versions and (domain, opset.version) not in known:
            raise ChainxError(
                f"{path}: the model imports opset {opset.version} of domain {domain!r}, "
                f"which onnx {onnx.__version__} does not know (it knows "
                f"{min(versions)} to {max(versions)}). Export the model again with a known "
                "opset, or check that the file is not damaged."
            )


def _check_external_locations(model: onnx.ModelProto, path: Path) -> None:
    """External data must lie inside the model's folder: no absolute path, no `..`, no
    symlink that leads out. A hostile model could otherwise make chainx read any file."""
    folder = path.parent.resolve()
    tensors = [*model.graph.initializer]
    tensors += [a.t for node in model.graph.node for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if not onnx.external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        relative = Path(location)
        target = (folder / relative).resolve()
        if relative.is_absolute() or ".." in relative.parts or not target.is_relative_to(folder):
            raise ChainxError(
                f"{path}: the weights of {tensor.name!r} point outside the model's folder "
                f"({location!r}). chainx reads external data only from beside the model."
            )
        if not target.is_file():
            raise ChainxError(
                f"{path}: the external data file {location!r} of {tensor.name!r} is missing. "
                "Put it beside the model."
            )
