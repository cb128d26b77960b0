"""`chainx compare A B`: which layers and filters two chains of one model share.

Two regions of one model (or a correctly and a wrongly classified set) give two chains;
the overlap of their kept filters says how much of the inference they share.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chainx.errors import ChainxError, stage
from chainx.version import __version__


@dataclass
class LayerOverlap:
    node: str
    display: str
    total: int
    kept_a: int
    kept_b: int
    shared: int

    @property
    def jaccard(self) -> float:
        union = self.kept_a + self.kept_b - self.shared
        return self.shared / union if union else 0.0


@dataclass
class Comparison:
    a: str
    b: str
    layers: list[LayerOverlap]
    edges: list[tuple[str, str]]

    @property
    def filters_shared(self) -> int:
        return sum(layer.shared for layer in self.layers)

    @property
    def filter_jaccard(self) -> float:
        union = sum(layer.kept_a + layer.kept_b - layer.shared for layer in self.layers)
        return self.filters_shared / union if union else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": "chainx",
            "version": __version__,
            "a": self.a,
            "b": self.b,
            "filters": {
                "kept_a": sum(layer.kept_a for layer in self.layers),
                "kept_b": sum(layer.kept_b for layer in self.layers),
                "shared": self.filters_shared,
                "jaccard": self.filter_jaccard,
            },
            "layers": [{**asdict(layer), "jaccard": layer.jaccard} for layer in self.layers],
        }


def read_chain(path: Path) -> dict[str, Any]:
    """chain.json of an output folder (or the file itself)."""
    file = path / "chain.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ChainxError(
            f"{path}: not a chainx output ({exc}). Give a folder written by chainx extract."
        ) from None
    # compare.json is chainx's too, but has no chain in it.
    if not isinstance(data, dict) or data.get("generator") != "chainx" or "source" not in data:
        raise ChainxError(f"{path}: not a chainx output. Give a folder written by chainx extract.")
    return data


@stage("compare")
def compare(a: Path, b: Path) -> Comparison:
    first, second = read_chain(a), read_chain(b)
    if first["source"]["sha256"] != second["source"]["sha256"]:
        raise ChainxError(
            f"{a} and {b} come from different models (sha256 {first['source']['sha256'][:12]}… "
            f"and {second['source']['sha256'][:12]}…); only chains of one model compare."
        )
    kept_b = {layer["node"]: layer for layer in second["layers"]}
    layers = []
    for layer in first["layers"]:
        other = kept_b[layer["node"]]
        mine = {f["index"] for f in layer["filters"]}
        theirs = {f["index"] for f in other["filters"]}
        layers.append(
            LayerOverlap(
                node=layer["node"],
                display=layer["display"],
                total=layer["total"],
                kept_a=len(mine),
                kept_b=len(theirs),
                shared=len(mine & theirs),
            )
        )
    edges = [tuple(edge) for edge in first.get("edges", [])]
    return Comparison(a=str(a), b=str(b), layers=layers, edges=edges)
