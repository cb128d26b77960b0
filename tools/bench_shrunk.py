"""Benchmark: a fine-tuning step on the whole masked network against the shrunk one.

The mask and scores are a chain's own (chain.onnx's metadata); the step is the objective
fine-tuning runs (KL + the margin hinge, backward into scores and gates) on the region.
Both run in this process, interleaved, the shrunk one eagerly as fine-tuning runs it and
the whole one eagerly or (`--compile`) compiled; prints the median of each and the time to
shrink. The first step of each is left out (warm-up).

    python tools/bench_shrunk.py build/efficientnet_lite0.onnx build/red/r0/chain.onnx \
        build/hym0/region --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import onnx
import torch

from chainx.chain.export import multipliers_from_metadata, read_metadata
from chainx.cli.options import parse_floats
from chainx.pipeline import open_model
from chainx.scoring.compiled import compiled_network
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective
from chainx.scoring.reduced import reduce
from chainx.settings import ReadSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("chain", type=Path)
    parser.add_argument("region", type=Path)
    parser.add_argument("--mean", type=lambda text: parse_floats("--mean", text))
    parser.add_argument("--std", type=lambda text: parse_floats("--std", text))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--compile", action="store_true", help="the whole network through torch.compile"
    )
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    source = open_model(args.model, ReadSettings(mean=args.mean, std=args.std))
    multipliers = multipliers_from_metadata(read_metadata(onnx.load(args.chain)))
    scoring = ScoringModel(source.normalised, source.points)
    scoring.masks = [torch.from_numpy(multipliers[p.layer] != 0) for p in source.points]
    with torch.no_grad():
        for score, point in zip(scoring.scores, source.points, strict=True):
            score.copy_(torch.from_numpy(multipliers[point.layer]))
    images = torch.from_numpy(source.images(args.region).array)
    objective = Objective(scoring, images, source.kind, len(images), False, 0)
    if args.compile:
        scoring.use_compiled(compiled_network(scoring.net))
    started = time.perf_counter()
    reduced = reduce(scoring.source, scoring.points, scoring.masks)
    shrink_s = time.perf_counter() - started

    def step() -> float:
        for parameter in scoring.learnt():
            parameter.grad = None
        started = time.perf_counter()
        objective.step(hinge=5.0, margin=1.0, hold=0.5)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"whole": [], "shrunk": []}
    for repeat in range(args.repeats + 1):
        for name, net in (("whole", None), ("shrunk", reduced)):
            scoring.use_reduced(net)
            elapsed = step()
            if repeat:
                times[name].append(elapsed)
    kept = sum(int(m.sum()) for m in scoring.masks)
    whole, shrunk = (statistics.median(times[n]) for n in ("whole", "shrunk"))
    print(f"filters kept: {kept:,} of {sum(scoring.channels):,}; batch {len(images)}")
    print(f"shrink and convert: {shrink_s:.2f} s")
    how = "compiled" if args.compile else "eager"
    print(f"fine-tuning step, whole masked network ({how}): {1000 * whole:.1f} ms")
    print(f"fine-tuning step, shrunk network:       {1000 * shrunk:.1f} ms ({whole / shrunk:.2f}×)")


if __name__ == "__main__":
    main()
