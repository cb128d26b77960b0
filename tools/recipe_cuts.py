"""Can sparsification stop early? One optimisation with its per-step record, then the
chain cut from the score state at earlier steps, each fine-tuned and verified as extract's.

The recipe is the EfficientNet-Lite0 one of docs/performance.md (500 + 150 + 150 steps, a
4.9 % budget). Prints one JSON line per chain (filters kept, region and holdout agreement,
seconds) and writes the step record (filters above τ, KL, agreement, and the overlap of the
budget's top filters with the step before) to OUT/steps.json:

    .venv/bin/python tools/recipe_cuts.py build/efficientnet_lite0.onnx \
        build/hymenoptera/region ../shared/data/hymenoptera/val --cuts 300,375,450 \
        --out build/recipe_cuts
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from chainx.pipeline import build_chain, open_model
from chainx.scoring import optimise as scoring_optimise
from chainx.scoring.conversion import check_conversion
from chainx.scoring.frontier import ScoreState
from chainx.scoring.model import ScoringModel
from chainx.scoring.settings import OptimiseSettings, StepReport
from chainx.settings import ReadSettings

if __package__:  # imported as tools.recipe_cuts
    from tools.recipes import LITE0, LITE0_PREPROCESS
else:  # run as a script: tools/ is first on sys.path
    from recipes import LITE0, LITE0_PREPROCESS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("region", type=Path)
    parser.add_argument("holdout", type=Path)
    parser.add_argument("--cuts", default="300,375,450", help="sparsification steps to cut at")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cuts = {int(step) for step in args.cuts.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)

    settings = OptimiseSettings(**LITE0)
    source = open_model(args.model, ReadSettings(**LITE0_PREPROCESS))
    region, holdout = source.images(args.region), source.images(args.holdout)
    scoring = ScoringModel(source.normalised, source.points)
    check_conversion(scoring, source.normalised, region.array)
    budget = math.ceil(settings.keep_ratio * sum(p.channels for p in source.points))
    steps: list[dict] = []
    states: dict[int, ScoreState] = {}
    previous: set[int] = set()

    def record(report: StepReport) -> None:
        nonlocal previous
        entry = {**vars(report)}
        if report.phase == "sparsify":
            with torch.no_grad():
                flat = torch.cat([m.detach() for m in scoring.multipliers()])
                top = set(torch.topk(flat, budget).indices.tolist())
            entry["top_overlap"] = len(top & previous) / len(top | previous)
            previous = top
            if report.step in cuts:
                states[report.step] = ScoreState.of(scoring, report.step)
        steps.append(entry)

    def measure(label: str, multipliers: dict, seconds: float) -> None:
        verification = build_chain(source, scoring, multipliers, region, holdout, {}).verification
        row = {
            "chain": label,
            "filters_kept": sum(int((m != 0).sum()) for m in multipliers.values()),
            "verified": verification.passed,
            "region": f"{verification.region.agree}/{verification.region.images}",
            "holdout": f"{verification.holdout.agree}/{verification.holdout.images}",
            "seconds": round(seconds, 1),
        }
        print(json.dumps(row), flush=True)

    mark = time.perf_counter()
    result = scoring_optimise.optimise(scoring, region.array, source.kind, settings, record)
    measure("all 500 steps", result.multipliers, time.perf_counter() - mark)
    (args.out / "steps.json").write_text(json.dumps(steps))

    # What optimise() does after phase 1, from each earlier state.
    objective, scaled, _ = scoring_optimise.region_objective(
        scoring, region.array, source.kind, settings
    )
    for step, state in sorted(states.items()):
        mark = time.perf_counter()
        state.restore(scoring)
        final = scoring_optimise.threshold_and_finetune(
            scoring, objective, scaled, settings.lam, [], lambda *_: None
        )
        multipliers = scoring_optimise.as_arrays(scoring, final)
        measure(f"cut at step {step}", multipliers, time.perf_counter() - mark)


if __name__ == "__main__":
    main()
