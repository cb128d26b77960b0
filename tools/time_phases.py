"""Time each fine-tuning of a Lite0 extract, with its fine-tuning shrunk or (`--whole`) not.

Runs `chainx.extract` in this process with a recipe of tools/recipes.py, a timer around
each fine-tuning (and each shrinking of the network), and prints one JSON line: the phase
times, the optimisation time, steps, filters kept, region and holdout agreement.

    python tools/time_phases.py build/efficientnet_lite0.onnx build/hym0/region \
        ../shared/data/hymenoptera/val build/phases/r0 [--whole] [--recipe LITE0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import chainx
import chainx.scoring.optimise as optimise
import chainx.scoring.reduced as reduced

if __package__:  # imported as tools.time_phases
    from tools import recipes
else:  # run as a script: tools/ is first on sys.path
    import recipes


def timed(function: Callable, name: Callable[..., str], record: list) -> Callable:
    def wrapper(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        record.append((name(*args, **kwargs), round(time.perf_counter() - started, 2)))
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("region", type=Path)
    parser.add_argument("holdout", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--recipe", default="LITE0_SHORT")
    parser.add_argument("--whole", action="store_true", help="fine-tune the whole network")
    args = parser.parse_args()
    if args.whole:
        reduced.REDUCE_FROM_REMOVED = 2.0  # no mask removes twice its filters: never shrink
    phases: list[tuple[str, float]] = []
    optimise.finetune = timed(
        optimise.finetune,
        lambda *a, **k: k.get("phase", a[5] if len(a) > 5 else "fine-tune"),
        phases,
    )
    reduced.reduce = timed(reduced.reduce, lambda *a, **k: "shrink", phases)
    started = time.perf_counter()
    chain = chainx.extract(
        args.model,
        args.region,
        args.holdout,
        out=args.out,
        filter_images=0,
        **recipes.LITE0_PREPROCESS,
        **getattr(recipes, args.recipe),
    ).to_json()
    metrics = chain["metrics"]
    print(
        json.dumps(
            {
                "whole": args.whole,
                "wall_s": round(time.perf_counter() - started, 1),
                "optimise_s": round(chain["timings"]["optimise_s"], 1),
                "phases_s": phases,
                "steps": metrics["optimisation"]["steps"],
                "finetune_steps": metrics["optimisation"]["finetune_steps"],
                "kept": chain["summary"]["filters_kept"],
                "region": metrics["region"]["agree"],
                "holdout": metrics["holdout"]["agree"],
                "verified": metrics["exactness"]["passed"],
            }
        )
    )


if __name__ == "__main__":
    main()
