"""Zero against mean replacement of removed filters, inside the scoring model (issue 35, §2).

Each trial draws a region and holdout as `chainx sweep` does (same seed, same draw), runs
phase 1 once, then concludes it once per ablation from the same score path, each with the
default budget search and the same frontier cuts, fine-tuned with the ablation in place:

- `zero`: as chainx does, a removed filter outputs zero;
- `mean`: its output is its mean featuremap over the region (in the original network);
- `constant`: its output is one number, that featuremap's mean (what a bias can carry);
- `optimal`: the `constant` chains, then each removed filter's number learnt on the
  region's objective with the chain's multipliers frozen (Li & Janson 2024's optimal
  ablation, given the chain; the budget search is `constant`'s).

Each is measured in the scoring model (not exported): region agreement, within-class
holdout agreement, and the area under the holdout frontier.

    .venv/bin/python tools/ablation_probe.py build/cifar10_resnet20.onnx \\
        ../shared/data/cifar10/test --trials 20 --resize 32 --out build/ablation_r20.jsonl

On EfficientNet-Lite0 the search and four ablations cost about 40 min a region (the
replacement needs the whole network in every fine-tuning), so there the probe takes
`--ablations zero,mean --keep-ratio 0.05 --frontier 0.3,0.15,0.05`: the chain at a fixed
budget and three cuts, zero against the mean featuremap. Zero and mean alone with the
search and two cuts (`--frontier 0.15,0.05`) take about 11 min a region (docs/method.md).

`--shard 0/2` and `--shard 1/2` split the trials between two processes (one thread each,
OMP_NUM_THREADS=1), `--summary FILE...` prints the paired comparison of finished runs.
A measurement tool: the replacement lives in forward hooks here, not in chainx, until it
wins (issue 35).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import chainx.scoring.finetune as finetune_module
from chainx.chain.metrics import fidelity_metrics, frontier_auc, mean_ci, paired_test
from chainx.images import load_image_files
from chainx.pipeline import open_model
from chainx.scoring.device import resolve_device
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import Sparsified, conclude, sparsify
from chainx.scoring.settings import OptimiseSettings
from chainx.settings import MIN_AGREEMENT, ReadSettings
from chainx.sweep.plan import SweepConfig, plan_trials

FRONTIER = (0.3, 0.15, 0.07, 0.03)
ABLATIONS = ("zero", "mean", "constant", "optimal")
OPTIMAL_STEPS = 100


def _score_modules(scoring: ScoringModel) -> list[torch.nn.Module]:
    """Each point's score Mul, as onnx2torch names it."""
    return [scoring.net.get_submodule(p.multiplier.replace(".", "/")) for p in scoring.points]


def region_means(scoring: ScoringModel, images: np.ndarray) -> list[torch.Tensor]:
    """Each point's featuremaps averaged over the region, in the original network."""
    seen: list[torch.Tensor] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: seen.append(out.mean(0, keepdim=True)))
        for module in _score_modules(scoring)
    ]
    try:
        with torch.no_grad():
            scoring.unscored(torch.from_numpy(images))
    finally:
        for hook in hooks:
            hook.remove()
    return [value.detach() for value in seen]


@contextlib.contextmanager
def replaced(scoring: ScoringModel, values: list[torch.Tensor]) -> Iterator[None]:
    """Within: a masked-out filter outputs `values` (per point, broadcast to its output)
    instead of zero (its multiplier is 0, so the Mul's output there is 0 and the value is
    added)."""

    def hook(index: int):  # noqa: ANN202
        point = scoring.points[index]

        def add_value(_module: torch.nn.Module, _inputs: object, out: torch.Tensor) -> torch.Tensor:
            removed = (~scoring.masks[index]).to(out.dtype).reshape(point.shape)
            return out + removed * values[index]

        return add_value

    hooks = [m.register_forward_hook(hook(i)) for i, m in enumerate(_score_modules(scoring))]
    # The shrunk network has no removed filter to replace: fine-tune the whole one.
    shrink = finetune_module.shrunk_to_masks
    finetune_module.shrunk_to_masks = lambda _scoring: contextlib.nullcontext(False)
    try:
        yield
    finally:
        finetune_module.shrunk_to_masks = shrink
        for handle in hooks:
            handle.remove()


def channel_constants(means: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each featuremap mean reduced to one number per filter, shaped to broadcast."""
    return [m.mean(dim=tuple(range(2, m.dim())), keepdim=True) if m.dim() > 2 else m for m in means]


def learnt_constants(
    scoring: ScoringModel,
    phase1: Sparsified,
    multipliers: dict[str, np.ndarray],
    start: list[torch.Tensor],
) -> list[torch.Tensor]:
    """The removed filters' numbers that minimise the region's objective for a chain whose
    multipliers stay fixed, from `start`."""
    values = [s.clone().requires_grad_(True) for s in start]
    scoring.masks = [torch.from_numpy(multipliers[p.layer] != 0) for p in scoring.points]
    saved = [s.detach().clone() for s in scoring.scores]
    gates = scoring.gates.detach().clone()
    with torch.no_grad():  # the chain's multipliers as scores, with gates at 1 (sigmoid)
        for score, p in zip(scoring.scores, scoring.points, strict=True):
            score.copy_(torch.from_numpy(multipliers[p.layer]))
        scoring.gates.fill_(30.0)
    adam = torch.optim.Adam(values, lr=0.05)
    settings = phase1.settings
    with replaced(scoring, values):
        for _ in range(OPTIMAL_STEPS):
            adam.zero_grad()
            scoring.zero_grad()
            phase1.objective.step(
                hinge=settings.hinge, margin=settings.margin, hold=settings.hold_margin
            )
            adam.step()
    with torch.no_grad():
        for score, value in zip(scoring.scores, saved, strict=True):
            score.copy_(value)
        scoring.gates.copy_(gates)
    return [v.detach() for v in values]


def area(frontier: list[dict[str, Any]]) -> float | None:
    """The mean within-class holdout agreement (%) over the frontier's range removed."""
    points = [(e["removed"], 100 * e["holdout"]) for e in frontier]
    return frontier_auc(points, min(x for x, _ in points), max(x for x, _ in points))


def measured(
    scoring: ScoringModel,
    multipliers: dict[str, np.ndarray],
    images: tuple[np.ndarray, np.ndarray],
    originals: tuple[np.ndarray, np.ndarray],
    kind: str,
) -> dict[str, Any]:
    """Region and within-class holdout agreement of a chain, in the scoring model as it is
    (with or without the replacement hooks)."""
    scoring.masks = [torch.from_numpy(multipliers[p.layer] != 0) for p in scoring.points]
    classes = sorted({int(c) for c in originals[0].argmax(1)})
    outputs = [scoring.masked(x, multipliers) for x in images]
    region = fidelity_metrics(outputs[0], originals[0], kind, classes)
    holdout = fidelity_metrics(outputs[1], originals[1], kind, classes)
    total = sum(p.channels for p in scoring.points)
    kept = sum(int(np.count_nonzero(multipliers[p.layer])) for p in scoring.points)
    return {
        "kept": kept,
        "removed": 1 - kept / total,
        "region": region["agreement"],
        "holdout": holdout["class_agreement"],
    }


def run_trial(
    spec: Any,
    settings: OptimiseSettings,
    ablations: tuple[str, ...] = ABLATIONS,
    frontier: tuple[float, ...] = FRONTIER,
    keep_ratio: float | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    source = open_model(spec.config.model, spec.config.read)

    def load(files: tuple[tuple[Path, str], ...]) -> np.ndarray:
        paths, labels = [p for p, _ in files], [c for _, c in files]
        return load_image_files(paths, labels, source.prep, False).array

    images = load(spec.region), load(spec.holdout)
    scoring = ScoringModel(source.normalised, source.points)
    with torch.no_grad():
        originals = tuple(scoring.unscored(torch.from_numpy(x)).numpy() for x in images)
    means = region_means(scoring, images[0])
    # The default run's settings: the budget found by search (`chainx.settings`), or
    # --keep-ratio's chain where the search would cost too much (EfficientNet-Lite0).
    settings = replace(
        settings,
        seed=spec.seed,
        device=resolve_device(settings.device),
        min_agreement=None if keep_ratio else MIN_AGREEMENT,
        keep_ratio=keep_ratio,
        compile="never",  # forward hooks on an eager network
    )
    phase1 = sparsify(scoring, images[0], source.kind, settings, frontier=frontier)
    record: dict[str, Any] = {
        "trial": spec.index,
        "classes": list(spec.classes),
        "chain": f"keep {keep_ratio:g}" if keep_ratio else "auto budget",
    }
    constants = channel_constants(means)

    def frontier_of(
        entry: dict[str, Any], cuts: list[tuple[float, dict]], values: list | None
    ) -> None:
        with replaced(scoring, values) if values is not None else contextlib.nullcontext():
            entry["frontier"] = [
                {"keep_ratio": ratio, **measured(scoring, m, images, originals, source.kind)}
                for ratio, m in cuts
            ]
        entry["area"] = area(entry["frontier"])

    concluded = (("zero", None), ("mean", means), ("constant", constants))
    wanted = {"constant"} | set(ablations) if "optimal" in ablations else set(ablations)
    for ablation, values in (c for c in concluded if c[0] in wanted):
        with replaced(scoring, values) if values is not None else contextlib.nullcontext():
            result = conclude(scoring, phase1)
            entry = measured(scoring, result.multipliers, images, originals, source.kind)
        cuts = [(cut.keep_ratio, cut.multipliers) for cut in result.frontier]
        frontier_of(entry, cuts, values)
        entry["budgets_tried"] = len(result.budgets)
        record[ablation] = entry
        if ablation == "constant" and "optimal" in ablations:
            chain = learnt_constants(scoring, phase1, result.multipliers, constants)
            with replaced(scoring, chain):
                optimal = measured(scoring, result.multipliers, images, originals, source.kind)
            optimal["frontier"] = []
            for ratio, m in cuts:
                learnt = learnt_constants(scoring, phase1, m, constants)
                with replaced(scoring, learnt):
                    cut = measured(scoring, m, images, originals, source.kind)
                optimal["frontier"].append({"keep_ratio": ratio, **cut})
            optimal["area"] = area(optimal["frontier"])
            record["optimal"] = optimal
    record["seconds"] = time.perf_counter() - started
    return record


def summary(records: list[dict[str, Any]]) -> None:
    """Zero's mean [95 % CI] over the trials, then each other ablation minus zero, paired
    (wins/losses/ties, two-sided Wilcoxon)."""
    others = [a for a in ABLATIONS[1:] if all(a in r for r in records)]
    print(f"{len(records)} trials; columns: zero, " + ", ".join(f"{a} − zero" for a in others))
    chain = records[0].get("chain", "auto budget")
    budgets = sorted({c["keep_ratio"] for c in records[0]["zero"]["frontier"]}, reverse=True)
    columns = {
        f"{chain}: % removed": lambda e: 100 * e["removed"],
        f"{chain}: region %": lambda e: 100 * e["region"],
        f"{chain}: holdout %": lambda e: 100 * e["holdout"],
        "frontier area (holdout %)": lambda e: e["area"],
        **{
            f"keep {k:g}: {what} %": (
                lambda e, k=k, what=what: (
                    100 * next(c[what] for c in e["frontier"] if c["keep_ratio"] == k)
                )
            )
            for k in budgets
            for what in ("region", "holdout")
        },
    }
    for name, value in columns.items():
        zero = [value(r["zero"]) for r in records]
        z = mean_ci(zero)
        cells = [f"{z['mean']:.1f} [{z['low']:.1f}, {z['high']:.1f}]"]
        for ablation in others:
            d = paired_test([value(r[ablation]) for r in records], zero)
            diff, p = d["difference"], d["wilcoxon_p"]
            cells.append(
                f"{diff['mean']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}] "
                f"({d['wins']}/{d['losses']}/{d['ties']}, p {'—' if p is None else f'{p:.2g}'})"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--holdout-data", type=Path)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--holdout-per-class", type=int, default=200)
    parser.add_argument("--resize", type=int)
    parser.add_argument("--mean", type=lambda s: tuple(map(float, s.split(","))))
    parser.add_argument("--std", type=lambda s: tuple(map(float, s.split(","))))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, nargs="+", help="print finished runs' comparison")
    parser.add_argument(
        "--ablations", default=",".join(ABLATIONS), help="of " + ", ".join(ABLATIONS)
    )
    parser.add_argument("--frontier", default=",".join(map(str, FRONTIER)))
    parser.add_argument(
        "--keep-ratio", type=float, help="the chain at this budget instead of the default search"
    )
    parser.add_argument(
        "--shard", default="0/1", help="I/N: only trials whose index is I modulo N (parallel runs)"
    )
    args = parser.parse_args()
    if args.summary:
        summary([json.loads(line) for f in args.summary for line in f.read_text().splitlines()])
        return
    shard, shards = map(int, args.shard.split("/"))
    ablations = tuple(args.ablations.split(","))
    if "zero" not in ablations or not set(ablations) <= set(ABLATIONS):
        raise SystemExit(f"--ablations: zero and any of {', '.join(ABLATIONS[1:])}")
    frontier = tuple(float(k) for k in args.frontier.split(","))
    read = ReadSettings(resize=args.resize, mean=args.mean, std=args.std)
    config = SweepConfig(
        model=args.model,
        data=args.data,
        holdout_data=args.holdout_data,
        holdout_per_class=args.holdout_per_class,
        read=read,
    )
    done = set()
    if args.out.exists():
        done = {json.loads(line)["trial"] for line in args.out.read_text().splitlines()}
    for spec in plan_trials(config, args.trials):
        if spec.index in done or spec.index % shards != shard:
            continue
        record = run_trial(spec, config.optimise, ablations, frontier, args.keep_ratio)
        with args.out.open("a") as out:
            out.write(json.dumps(record) + "\n")
        cells = [
            f"{a} {record[a]['kept']} kept {record[a]['region']:.0%} area {record[a]['area']:.1f}"
            for a in ablations
            if a in record
        ]
        print(f"trial {spec.index} {spec.classes}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
