"""`chainx verify`: recheck a saved chain against its source model and images."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from chainx.chain.deploy import check_deploy
from chainx.chain.export import (
    chain_summary,
    multipliers_from_metadata,
    read_metadata,
    slices_from_metadata,
)
from chainx.chain.verify import verify_chain
from chainx.channels.surgery import present_units
from chainx.errors import ChainxError, stage
from chainx.images import Preprocessing, load_images
from chainx.onnx.load import load_model, sha256_file
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points


@dataclass
class ChainSources:
    chain: Path
    model: Path
    images: Path
    holdout: Path | None
    deploy: Path | None = None  # chain.deploy.onnx, checked against the chain

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
                deploy=deploy if (deploy := target / "chain.deploy.onnx").is_file() else None,
            )
        if model is None or images is None:
            raise ChainxError(
                f"{target}: with a chain.onnx, also give the source model and the region images: "
                "chainx verify chain.onnx MODEL.onnx IMAGES/"
            )
        sibling = target.with_name("chain.deploy.onnx")
        deploy = sibling if target.name == "chain.onnx" and sibling.is_file() else None
        return cls(chain=target, model=model, images=images, holdout=holdout, deploy=deploy)


@stage("verify")
def verify_saved_chain(sources: ChainSources) -> dict[str, Any]:
    from chainx.scoring.model import ScoringModel, masked_outputs  # torch loads here

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
    prep = Preprocessing.from_json(settings["preprocessing"])
    region = load_images(sources.images, prep)
    holdout = load_images(sources.holdout, prep).array if sources.holdout else None
    normalised = normalise(original, settings.get("input"), settings.get("output"))
    points = find_score_points(normalised)
    multipliers = multipliers_from_metadata(metadata)
    slices = slices_from_metadata(metadata)
    if sorted(multipliers) != sorted(p.layer for p in points):
        raise ChainxError(
            f"{sources.chain}: its layers do not match the Conv layers of {sources.model}."
        )
    onnx.checker.check_model(chain, full_check=True)
    expected = masked_outputs(ScoringModel(normalised, points), region.array, multipliers)
    verification = verify_chain(
        chain,
        sources.model,
        original,
        normalised,
        slices,
        expected,
        region.array,
        holdout,
        settings["output_kind"],
    )
    metrics = verification.to_json()
    files = {"chain.onnx": str(sources.chain)}
    passed = verification.passed and not warnings
    if sources.deploy is not None:
        check = check_deploy(load_model(sources.deploy), chain, region.array, expected)
        metrics["deploy"] = asdict(check)
        files["chain.deploy.onnx"] = str(sources.deploy)
        passed = passed and check.passed
    return {
        "passed": passed,
        "warnings": warnings,
        "summary": chain_summary(
            multipliers,
            present_units(chain, slices, {p.layer: p.channels for p in points}),
            {p.layer: p.kind for p in points},
        ),
        "metrics": metrics,
        "files": files,
    }
