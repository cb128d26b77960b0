"""The output folder: refuse to clobber what is not ours, and write every file atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from chainx.errors import ChainxError

OUTPUT_FILES = ("chain.onnx", "chain.json", "chain.gv", "chain.svg")


def is_chainx_output(folder: Path) -> bool:
    try:
        data = json.loads((folder / "chain.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("generator") == "chainx"


def check_output_dir(out: Path, force: bool, protected: list[Path]) -> None:
    """Fail early when writing to `out` could lose the user's data."""
    if out.exists() and not out.is_dir():
        raise ChainxError(f"--out {out}: exists and is not a folder. Choose another --out.")
    resolved = out.resolve()
    for path in protected:
        target = path.resolve()
        if target == resolved or (target.is_dir() and target in resolved.parents):
            raise ChainxError(
                f"--out {out}: is inside the input {path}. Choose a folder outside the inputs."
            )
        if target.parent == resolved and target.name in OUTPUT_FILES:
            raise ChainxError(
                f"--out {out}: writing there would replace the input {path}. Choose another --out."
            )
    if out.is_dir() and any(out.iterdir()) and not is_chainx_output(out) and not force:
        raise ChainxError(
            f"--out {out}: the folder is not empty and is not an earlier chainx output. "
            "Choose another --out, or pass --force to write into it."
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
