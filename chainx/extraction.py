"""`chainx extract` as a function: every stage of chainx/pipeline.py, then the description,
the drawings and chain.json's record, held in an ExtractResult (written only on request)."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chainx.chain.export import chain_summary
from chainx.chain.result import ExtractResult, LayerGraph, layer_results
from chainx.chain.verify import ChainVerification, model_cost
from chainx.errors import UnfaithfulChainError, stage
from chainx.frontier import frontier_chains
from chainx.onnx.graph import GraphIndex
from chainx.pipeline import Listener, build_chain, build_deploy, open_model, optimise_scores
from chainx.render.files import render_files
from chainx.render.frontier_plot import frontier_plot
from chainx.render.layers import layer_edges
from chainx.render.paths import link_weights, strongest_paths
from chainx.render.report import predictions, report_html
from chainx.scoring.settings import REFERENCE_MARGIN, OptimiseResult, OptimiseSettings
from chainx.settings import ExtractSettings, read_class_names
from chainx.version import __version__

# What chain.json says of each frontier chain; frontier.json has every metric.
FRONTIER_SUMMARY = ("keep_ratio", "filters_kept", "verified", "chain")


def refuse_unfaithful(verification: ChainVerification, summary: dict) -> None:
    """A chain that keeps half or fewer of the region's predictions explains nothing (a
    two-class region gives half to a chain that always answers one class): stop before
    anything is drawn or written, and say what to change."""
    region = verification.region
    if 2 * region.agree > region.images:
        return
    raise UnfaithfulChainError(
        f"the chain keeps only {region.agree} of the region's {region.images} predictions "
        f"with {summary['filters_kept']:,} of {summary['filters_total']:,} filters: half or "
        "fewer, so it does not explain the region and no chain was written. Keep more "
        "filters (a larger --keep-ratio, a smaller --lam or --tau) or optimise longer "
        "(--steps, --finetune-steps); if the original's own predictions on these images look "
        "wrong, check the preprocessing (--size, --resize, --mean, --std)."
    )


def budget_record(settings: OptimiseSettings, result: OptimiseResult) -> dict[str, Any]:
    """chain.json's "budget": how the chain's size was chosen. The default search records
    every budget it fine-tuned and why it chose the one it did."""
    if result.chosen is not None:
        chosen = result.budgets[result.chosen]
        wanted = settings.min_agreement or 0.0
        return {
            "mode": "auto",
            "min_agreement": wanted,
            "holds": chosen.agreement >= wanted - 1e-9,
            "chosen": asdict(chosen),
            "reason": result.budget_reason,
            "finetune_lr": result.finetune_lr,
            "finetune_lr_tried": [asdict(trial) for trial in result.step_sizes],
            "tried": [asdict(trial) for trial in result.budgets],
        }
    if settings.keep_ratio is not None:
        return {"mode": "keep-ratio", "keep_ratio": settings.keep_ratio}
    return {"mode": "tau", "tau": settings.tau}


def budget_line(budget: dict[str, Any]) -> str:
    """The terminal's account of the default search."""
    tried = sorted(budget["tried"], key=lambda trial: -trial["keep_ratio"])
    listed = ", ".join(f"{t['keep_ratio']:.3g} ({t['agreement']:.0%})" for t in tried)
    chosen = budget["chosen"]
    head = "budget" if budget["holds"] else "budget: WARNING,"
    return (
        f"{head} tried {listed} of the filters; chose {chosen['keep_ratio']:.3g} "
        f"({chosen['filters']:,} filters): {budget['reason']}"
    )


def extract(
    model: str | Path,
    images: str | Path,
    holdout: str | Path | None = None,
    *,
    settings: ExtractSettings | None = None,
    out: str | Path | None = None,
    force: bool = False,
    listener: Listener | None = None,
) -> ExtractResult:
    """Extract, verify and draw the chain of `model` on the region `images`.

    Nothing is written unless `out` is given. The result is returned even when the
    verification fails (`result.verification.passed`); a chain that does not reproduce the
    region raises UnfaithfulChainError instead.
    """
    settings = settings or ExtractSettings()
    listener = listener or Listener()
    model, images = Path(model), Path(images)
    holdout = Path(holdout) if holdout is not None else None
    inputs = [model, images] + ([holdout] if holdout else [])
    if out is not None:
        from chainx.outputs import check_output_dir

        check_output_dir(Path(out), force, inputs)  # fail before the long work
    timings: dict[str, float] = {}
    started = time.perf_counter()

    source = open_model(model, settings.read)
    listener.message(f"preprocessing: {source.prep.describe()}")
    region = source.images(images)
    held = source.images(holdout) if holdout else None
    for name, loaded in (("region", region), ("holdout", held)):
        skipped = loaded.skipped.describe() if loaded else None
        if skipped:
            listener.message(f"{name}: {skipped}")
    listener.message(
        f"model: {len(source.points)} scored layers, "
        f"{sum(p.channels for p in source.points):,} filters; output treated as {source.kind}; "
        f"region: {len(region.paths)} images"
        + (f"; holdout: {len(held.paths)} images" if held else "")
    )
    timings["load_s"] = time.perf_counter() - started

    scores = optimise_scores(source, region, settings.optimise, listener.step, settings.frontier)
    timings["optimise_s"] = scores.result.seconds
    budget = budget_record(scores.settings, scores.result)
    if budget["mode"] == "auto":
        listener.message(budget_line(budget))
    if (scale := scores.result.output_scale) > 1:
        listener.message(
            f"objective: the region's median top-1 margin is {scale * REFERENCE_MARGIN:,.0f} "
            f"nats, at which the KL is flat; it reads the outputs at temperature {scale:,.0f} "
            f"(margin {REFERENCE_MARGIN:g})"
        )
    settings_record = source.settings_record(scores.settings)
    chain = build_chain(
        source, scores.scoring, scores.result.multipliers, region, held, settings_record
    )
    timings["export_s"], timings["verify_s"] = chain.export_s, chain.verify_s
    kinds = {p.layer: p.kind for p in source.points}
    summary = chain_summary(scores.result.multipliers, chain.present, kinds)
    refuse_unfaithful(chain.verification, summary)
    class_names = read_class_names(settings.read.class_names)
    frontier = None
    if settings.frontier:
        mark = time.perf_counter()
        frontier = frontier_chains(
            source, scores, chain, region, held, settings_record, class_names
        )
        timings["frontier_s"] = time.perf_counter() - mark

    multipliers = scores.result.multipliers
    layers = layer_results(source.points, multipliers, scores.result.gates, chain.present)
    order = [p.layer for p in source.points]
    edges = layer_edges(GraphIndex.build(source.normalised), order)
    names = {layer.node: layer.display for layer in layers}
    scored_units = {
        layer: units[multipliers[layer][units] != 0] for layer, units in chain.present.items()
    }
    mark = time.perf_counter()
    axes = {p.layer: p.axis for p in source.points if p.axis != 1}
    with stage("inference paths"):
        links = link_weights(chain.model, region.array, scored_units, edges, axes)
        paths = strongest_paths(links, scored_units, order)
    if paths:
        listener.message(f"strongest inference path: {paths[0].describe(names)}")
    timings["paths_s"] = time.perf_counter() - mark

    deploy = build_deploy(source, multipliers, chain, region)
    timings["deploy_s"] = deploy.seconds
    if not deploy.check.passed:
        listener.message(
            f"chain.deploy.onnx not written: it differs from chain.onnx by "
            f"{deploy.check.max_abs_diff:.3g} (tolerance {deploy.check.tolerance:.3g}); "
            "deploy chain.onnx"
        )
    with stage("cost"):
        cost = {
            "original": asdict(model_cost(model, region.array[:1])),
            "chain": asdict(model_cost(chain.model, region.array[:1])),
            "deploy": asdict(deploy.cost),
        }
    graph = LayerGraph(
        layers,
        edges,
        [path.describe(names) for path in paths],
        [layer for layer, _ in paths[0].filters] if paths else [],
    )
    mark = time.perf_counter()
    with stage("draw"):
        drawn = render_files(
            chain.model,
            graph,
            f"{model.stem} · {images.name}",
            region.array,
            source.prep,
            scored_units,
            multipliers,
            settings.filter_images,
            {p.layer: p.kind for p in source.points},
        )
    timings["visualise_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    record = {
        "generator": "chainx",
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": str(model),
            "sha256": source.digest,
            "images": str(images),
            "holdout": str(holdout) if holdout else None,
        },
        "settings": settings_record,
        "budget": budget,
        "summary": summary,
        "layers": [layer.to_json() for layer in layers],
        "edges": edges,
        "paths": [
            {
                "strength": path.strength,
                "text": path.describe(names),
                "filters": [
                    {"node": layer, "display": names[layer], "index": index}
                    for layer, index in path.filters
                ],
            }
            for path in paths
        ],
        "filters": drawn.filter_sheets,
        "featuremaps": drawn.featuremaps,
        "frozen_ops": [{"node": name, "op_type": op} for name, op in chain.frozen],
        "metrics": {
            **chain.verification.to_json(),
            "deploy": {**asdict(deploy.check), "block": deploy.block},
            "cost": cost,
            "optimisation": {
                "steps": scores.result.steps,
                "finetune_steps": scores.result.finetune_steps,
                "torch": scores.result.compiled,  # compiled, or eager and why
                # Nats the region's outputs lose with every filter off; below 1, λ scaled.
                "region_signal": scores.result.signal,
                # The temperature the objective read the outputs at (1: as they are).
                "output_scale": scores.result.output_scale,
            },
        },
        "timings": timings,
    }
    if frontier is not None:
        record["frontier"] = [
            {key: entry[key] for key in FRONTIER_SUMMARY} for entry in frontier.entries
        ]
    outputs = chain.verification.outputs
    files = {**drawn.files, **(frontier.files if frontier else {})}
    if deploy.check.passed:
        files["chain.deploy.onnx"] = deploy.model.SerializeToString()
    with stage("report"):
        report = report_html(
            {**record, "files": {}},
            files,
            predictions(
                region.paths,
                region.labels,
                outputs.original_region,
                outputs.chain_region,
                source.kind,
                class_names,
            ),
            region.array,
            predictions(
                held.paths,
                held.labels,
                outputs.original_holdout,
                outputs.chain_holdout,
                source.kind,
                class_names,
            )
            if held
            else None,
            held.array if held else None,
            source.prep,
            class_names,
            frontier_plot(frontier.entries) if frontier else None,
        )
    result = ExtractResult(
        chain=chain.model,
        verification=chain.verification,
        layers=layers,
        record=record,
        files={**files, "report.html": report.encode("utf-8")},
        inputs=inputs,
        frontier=frontier.entries if frontier else [],
    )
    if out is not None:
        result.save(out, force=True)  # the folder was checked before the work began
    return result
