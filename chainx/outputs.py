"""The output folder: refuse to clobber what is not ours, and replace it as a whole.

A run writes its files into a staging folder beside `--out` and then swaps it into place,
so that an interrupted run (Ctrl-C, SIGTERM, kill -9) leaves the previous complete output
or nothing, never a mix or a half-written file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chainx.errors import ChainxError

OUTPUT_FILES = (
    "chain.onnx",
    "chain.deploy.onnx",
    "chain.json",
    "chain.gv",
    "chain.svg",
    "report.html",
    "frontier.json",
)
OUTPUT_FOLDERS = ("featuremaps", "filters", "frontier")


@dataclass(frozen=True)
class OutputLayout:
    """What one command writes into its folder. `record` is the JSON file whose
    "generator": "chainx" marks the folder as that command's own, so a rerun may replace it."""

    record: str
    files: tuple[str, ...]
    folders: tuple[str, ...] = ()

    @property
    def names(self) -> set[str]:
        return {*self.files, *self.folders}


EXTRACT_OUTPUT = OutputLayout("chain.json", OUTPUT_FILES, OUTPUT_FOLDERS)
COMPARE_OUTPUT = OutputLayout("compare.json", ("compare.json", "compare.gv", "compare.svg"))


def is_chainx_output(folder: Path, layout: OutputLayout = EXTRACT_OUTPUT) -> bool:
    try:
        data = json.loads((folder / layout.record).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("generator") == "chainx"


def check_output_dir(
    out: Path, force: bool, protected: list[Path], layout: OutputLayout = EXTRACT_OUTPUT
) -> None:
    """Fail early when writing `layout` to `out` could lose the user's data."""
    if out.exists() and not out.is_dir():
        raise ChainxError(f"--out {out}: exists and is not a folder. Choose another --out.")
    resolved = out.resolve()
    for path in protected:
        target = path.resolve()
        if target == resolved or (target.is_dir() and target in resolved.parents):
            raise ChainxError(
                f"--out {out}: is inside the input {path}. Choose a folder outside the inputs."
            )
        if target.parent == resolved and target.name in layout.names:
            raise ChainxError(
                f"--out {out}: writing there would replace the input {path}. Choose another --out."
            )
    if out.is_dir() and any(out.iterdir()) and not is_chainx_output(out, layout) and not force:
        raise ChainxError(
            f"--out {out}: the folder is not empty and is not an earlier chainx output. "
            "Choose another --out, or pass --force to write into it."
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; outputs are not
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


STAGE_PREFIX = ".chainx-stage-"
OLD_PREFIX = ".chainx-old-"


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False when the
    system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = libc.renameat2(
        at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange
    )
    return result == 0


class OutputStage:
    """Files are written into `path`, a hidden folder beside `out`; `publish` puts them in.

    When `out` holds only the files of `layout` (or does not exist), the staging folder
    replaces it whole. A folder with other files in it (--force) gets each file replaced
    atomically instead, and the user's files stay.
    """

    def __init__(self, out: Path, layout: OutputLayout = EXTRACT_OUTPUT) -> None:
        self.out = out
        self.layout = layout
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in out.parent.glob(f"{STAGE_PREFIX}{out.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
        for stale in out.parent.glob(f"{OLD_PREFIX}{out.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{out.name}-", dir=out.parent))
        os.chmod(self.path, 0o777 & ~_umask())

    def _only_ours(self) -> bool:
        return all(entry.name in self.layout.names for entry in self.out.iterdir())

    def publish(self) -> None:
        if not self.out.exists():
            os.replace(self.path, self.out)
            return
        if not self._only_ours():
            for entry in sorted(self.path.iterdir()):
                target = self.out / entry.name
                if target.is_dir() and entry.name in self.layout.folders:
                    shutil.rmtree(target)
                os.replace(entry, target)
            self.discard()
            return
        if _exchange(self.path, self.out):
            shutil.rmtree(self.path, ignore_errors=True)  # now holds the previous output
            return
        old = Path(tempfile.mkdtemp(prefix=f"{OLD_PREFIX}{self.out.name}-", dir=self.out.parent))
        os.replace(self.out, old / "previous")
        os.replace(self.path, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
