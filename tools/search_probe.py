"""The default budget search at several fine-tuning step sizes, on one score path.

Phase 1 runs once (the default recipe); the search then runs once per `--step-sizes` entry
from the same path: a number fine-tunes every candidate at that step size, `auto` is the
default (the first candidate chooses between --finetune-lr and a fifth of it). What
differs between the entries is the search alone, which is how docs/method.md separates the
search's part in the thread-count dependence from the path's:

    .venv/bin/python tools/search_probe.py build/efficientnet_lite0.onnx \\
        build/hymenoptera/region --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --threads 1 \\
        --step-sizes 0.05,0.01,auto --out build/search_probe.json

Prints and writes, per entry, the chosen budget's filters (cut, before constant filters
fold) and region agreement, and every budget tried.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from chainx.cli.options import parse_floats
from chainx.pipeline import open_model
from chainx.scoring.auto_budget import smallest_holding
from chainx.scoring.device import set_threads
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import sparsify
from chainx.settings import ExtractSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("region", type=Path)
    parser.add_argument("--resize", type=int)
    parser.add_argument("--mean")
    parser.add_argument("--std")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-sizes", default="0.05,0.01,auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    set_threads(args.threads)
    settings = ExtractSettings.from_options(
        seed=args.seed,
        resize=args.resize,
        mean=parse_floats("--mean", args.mean),
        std=parse_floats("--std", args.std),
    )
    source = open_model(args.model, settings.read)
    images = source.images(args.region).array
    scoring = ScoringModel(source.normalised, source.points)
    started = time.perf_counter()
    path = sparsify(scoring, images, source.kind, settings.optimise)
    record = {
        "phase1_s": round(time.perf_counter() - started, 1),
        "phase1_kept": path.history[-1].kept,
        "searches": {},
    }
    print(f"phase 1: {record['phase1_s']} s, {record['phase1_kept']:,} filters above τ")
    for entry in args.step_sizes.split(","):
        path.recorder.last.restore(scoring)  # phase 1's end, as every search starts
        sizes = None if entry == "auto" else (float(entry),)
        started = time.perf_counter()
        search = smallest_holding(
            scoring,
            path.objective,
            path.settings,
            path.recorder,
            path.persistence,
            lambda *_: None,
            sizes,
        )
        chosen = search.trials[search.chosen]
        record["searches"][entry] = {
            "seconds": round(time.perf_counter() - started, 1),
            "finetune_lr": search.finetune_lr,
            "filters": chosen.filters,
            "agreement": chosen.agreement,
            "tried": [asdict(trial) for trial in search.trials],
        }
        print(
            f"{entry}: {chosen.filters:,} filters cut, {chosen.agreement:.0%} of the region, "
            f"step size {search.finetune_lr:g}, {len(search.trials)} budgets tried"
        )
    if args.out:
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
