"""The extraction result: what chain.json holds, what the diagram draws, and the typed record
that the Python API returns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from chainx.chain.verify import ChainVerification
from chainx.onnx.score_points import ScorePoint
from chainx.outputs import OUTPUT_FILES, OutputStage, check_output_dir, write_atomic
from chainx.render.layers import point_display_names


@dataclass
class LayerResult:
    """One scored layer of the original model and what the chain keeps of it.

    The kept filters are those the chain computes; `folded` counts filters with a non-zero
    score that the chain does not compute (constant outputs folded into a consumer's bias,
    or outputs nothing reads).
    """

    node: str
    display: str
    total: int
    gate: float
    kept_indices: list[int] = field(default_factory=list)
    kept_scores: list[float] = field(default_factory=list)
    folded: int = 0

    @property
    def kept(self) -> int:
        return len(self.kept_indices)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "display": self.display,
            "kept": self.kept,
            "total": self.total,
            "gate": self.gate,
            "folded": self.folded,
            "filters": [
                {"index": i, "score": s}
                for i, s in zip(self.kept_indices, self.kept_scores, strict=True)
            ],
        }


def layer_results(
    points: list[ScorePoint],
    multipliers: dict[str, np.ndarray],
    gates: dict[str, float],
    present: dict[str, np.ndarray],
) -> list[LayerResult]:
    """Per scored layer: its names, its gate, and the filters the chain computes (`present`)."""
    names = point_display_names(points)
    layers = []
    for point in points:
        values = multipliers[point.layer]
        kept = present[point.layer]
        layers.append(
            LayerResult(
                node=point.layer,
                display=names[point.layer],
                total=point.channels,
                gate=gates[point.layer],
                kept_indices=[int(i) for i in kept],
                kept_scores=[float(values[i]) for i in kept],
                folded=int(np.count_nonzero(np.delete(values, kept))),
            )
        )
    return layers


@dataclass
class LayerGraph:
    """Data flow between scored layers, with every other op collapsed.

    `edges` joins layer node names; the pseudo nodes "input" and "output" stand for the
    model's input and output.
    """

    layers: list[LayerResult]
    edges: list[tuple[str, str]]
    paths: list[str] = field(default_factory=list)
    top_path: list[str] = field(default_factory=list)  # layer node names of the strongest


@dataclass
class ExtractResult:
    """A verified chain and everything `chainx extract` writes, held in memory until `save`.

    `record` is chain.json's content but for "files", which names where the files were
    written; `files` holds the drawings (relative path → content).
    """

    chain: onnx.ModelProto
    verification: ChainVerification
    layers: list[LayerResult]
    record: dict[str, Any]
    files: dict[str, bytes]
    inputs: list[Path]  # the model and image folders, which a save must never overwrite
    frontier: list[dict[str, Any]] = field(default_factory=list)  # frontier.json's entries
    out: Path | None = None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record["metrics"]

    def to_json(self) -> dict[str, Any]:
        """chain.json's content; "files" holds the saved paths (the bare names before a save)."""
        return {**self.record, "files": self._files(self.out)}

    def _files(self, out: Path | None) -> dict[str, str]:
        """The top-level files of the output folder, by name → path (bare before a save)."""
        written = {"chain.onnx", "chain.json", *self.files}
        return {name: str(out / name) if out else name for name in OUTPUT_FILES if name in written}

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the output folder `chainx extract --out` writes, staged and swapped in whole.

        A non-empty folder that is not an earlier chainx output needs `force`.
        """
        out = Path(out)
        check_output_dir(out, force, self.inputs)
        stage = OutputStage(out)
        try:
            record = {**self.record, "files": self._files(out)}
            contents = {
                "chain.onnx": self.chain.SerializeToString(),
                **self.files,
                "chain.json": json.dumps(record, indent=2).encode(),
            }
            for name, content in contents.items():
                write_atomic(stage.path / name, content)
            stage.publish()
        except BaseException:
            stage.discard()
            raise
        self.out = out
        return out
