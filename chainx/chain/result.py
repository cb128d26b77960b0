"""The extraction result as plain data: what chain.json holds and what the diagram draws."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
