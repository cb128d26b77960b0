"""`--frontier`: the chains at several budgets cut from the one optimisation, each exported,
verified and measured like the chain itself (frontier.json, frontier/, the report's plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import chainx.pipeline as pipeline
from chainx.errors import stage
from chainx.images import ImageSet
from chainx.pipeline import BuiltChain, Scores, Source


@dataclass
class Frontier:
    entries: list[dict[str, Any]]  # frontier.json: one per budget, largest first
    files: dict[str, bytes]  # frontier.json and frontier/keep-<budget>.onnx


@stage("frontier")
def frontier_chains(
    source: Source,
    scores: Scores,
    chain: BuiltChain,
    region: ImageSet,
    holdout: ImageSet | None,
    settings_record: dict[str, Any],
    class_names: list[str] | None,
) -> Frontier:
    """Every cut of `scores.result.frontier` as a verified chain, with the fidelity metrics
    of the main `chain`'s on the same images (the original's outputs are reused)."""
    outputs = chain.verification.outputs
    originals = (outputs.original_region, outputs.original_holdout)
    labels = (
        pipeline.folder_labels(region, class_names),
        pipeline.folder_labels(holdout, class_names),
    )
    entries, files = [], {}
    for cut in scores.result.frontier:
        record = {**settings_record, "frontier_keep_ratio": cut.keep_ratio}
        built = pipeline.build_chain(
            source, scores.scoring, cut.multipliers, region, holdout, record, originals
        )
        name = f"frontier/keep-{cut.keep_ratio:g}.onnx"
        files[name] = built.model.SerializeToString()
        measured = pipeline.measure_chain(built, source.kind, *labels)
        entries.append(
            pipeline.frontier_entry(
                cut.keep_ratio,
                built,
                cut.multipliers,
                measured,
                source=cut.source,
                step=cut.step,
                chain=name,
            )
        )
    files["frontier.json"] = json.dumps(entries, indent=2).encode()
    return Frontier(entries, files)
