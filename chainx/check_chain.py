"""`chainx verify`: recheck a saved chain against its source model and images."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from chainx.errors import ChainxError
from chainx.export import multipliers_from_metadata, read_metadata, slices_from_metadata
from chainx.images import Preprocessing, load_images
from chainx.model_io import load_model, normalise, sha256_file
from chainx.score_points import find_score_points
from chainx.verify import (
    check_exact_copies,
    check_exactness,
    fidelity,
    region_classes,
    run,
    session,
)


@dataclass
class ChainSources:
    chain: Path
    model: Path
    images: Path
    holdout: Path | None

    @classmethod
    def resolve(
        cls, target: Path, model: Path | None, images: Path | None, holdout: Path | None
    ) -> ChainSources:
        if target.is_dir():
            record = target / "chain.json"
            try:
                source = json.loads(record.read_text())["source"]
            except (OSError, ValueError, KeyError):
                raise ChainxError(
                    f"{target}: no readable chain.json; give chain.onnx, the model and the images."
                ) from None
            return cls(
                chain=target / "chain.onnx",
                model=model or Path(source["model"]),
                images=images or Path(source["images"]),
                holdout=holdout or (Path(source["holdout"]) if source.get("holdout") else None),
            )
        if model is None or images is None:
            raise ChainxError(
                f"{target}: with a chain.onnx, also give the source model and the region images: "
                "chainx verify chain.onnx MODEL.onnx IMAGES/"
            )
        return cls(chain=target, model=model, images=images, holdout=holdout)


def verify_saved_chain(sources: ChainSources) -> dict[str, Any]:
    from chainx.scoring import masked_outputs  # torch loads here

    chain = load_model(sources.chain)
    metadata = read_metadata(chain)
    if "chainx.multipliers" not in metadata:
        raise ChainxError(f"{sources.chain}: not a chain written by chainx (no chainx metadata).")
    original = load_model(sources.model)
    digest = sha256_file(sources.model)
    warnings = []
    if digest != metadata.get("chainx.source_sha256"):
        warnings.append(f"{sources.model} is not the model the chain was extracted from")
    settings = json.loads(metadata["chainx.settings"])
    prep_data = settings["preprocessing"]
    prep = Preprocessing(
        size=prep_data["size"],
        resize=prep_data["resize"],
        mean=tuple(prep_data["mean"]),
        std=tuple(prep_data["std"]),
        channels=prep_data["channels"],
    )
    kind = settings["output_kind"]
    region = load_images(sources.images, prep)
    normalised = normalise(original)
    points = find_score_points(normalised)
    multipliers = multipliers_from_metadata(metadata)
    if sorted(multipliers) != sorted(p.conv for p in points):
        raise ChainxError(
            f"{sources.chain}: its layers do not match the Conv layers of {sources.model}."
        )
    expected = masked_outputs(normalised, points, multipliers, region.array)
    chain_out = run(session(chain), region.array)
    exactness = check_exactness(chain_out, expected)
    copies = check_exact_copies(chain, original, slices_from_metadata(metadata), normalised)
    original_out = run(session(sources.model), region.array)
    classes = region_classes(original_out)
    region_fidelity = fidelity(chain_out, original_out, kind, classes)
    holdout_fidelity = None
    if sources.holdout:
        held = load_images(sources.holdout, prep)
        holdout_fidelity = fidelity(
            run(session(chain), held.array), run(session(sources.model), held.array), kind, classes
        )
    kept = sum(len(v.nonzero()[0]) for v in multipliers.values())
    total = sum(len(v) for v in multipliers.values())
    layers_kept = sum(bool(v.any()) for v in multipliers.values())
    onnx.checker.check_model(chain, full_check=True)
    return {
        "passed": exactness.passed and copies.passed and not warnings,
        "warnings": warnings,
        "summary": {
            "layers_kept": layers_kept,
            "layers_total": len(multipliers),
            "filters_kept": kept,
            "filters_total": total,
            "filters_removed_fraction": 1 - kept / total,
        },
        "metrics": {
            "exactness": asdict(exactness),
            "exact_copies": {"checked": copies.checked, "mismatched": copies.mismatched},
            "region": asdict(region_fidelity),
            "holdout": asdict(holdout_fidelity) if holdout_fidelity else None,
        },
        "files": {"chain.onnx": str(sources.chain)},
    }
