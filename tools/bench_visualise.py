"""Benchmark: the time to visualise the top 32 filters of a chain (activation maximisation).

    .venv/bin/python tools/bench_visualise.py CHAIN_DIR [--filters 32] [--steps 64]
    .venv/bin/python tools/bench_visualise.py CHAIN_DIR --per-layer 4   # as `chainx extract`

CHAIN_DIR is a `chainx extract` output; its chain.onnx and settings are used. The 32
filters are the highest-scored kept filters across the chain's spatial layers (with
--per-layer N, the top N of each layer, the extract's filter sheets), optimised together in
one batch, as `chainx extract` does. It runs on the CPU, and reports the page faults and
kernel time of the steps beside their time: where freed memory goes back to the system,
every step faults it in again (chainx/scoring/memory.py).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from chainx.images import Preprocessing
from chainx.render.featuremaps import layer_activations
from chainx.scoring.activation_max import Target, visualise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chain_dir", type=Path)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--per-layer", type=int, default=0, help="top N of every layer")
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    data = json.loads((args.chain_dir / "chain.json").read_text())
    chain = onnx.load(str(args.chain_dir / "chain.onnx"))
    prep = Preprocessing.from_json(data["settings"]["preprocessing"])
    probe = np.zeros((1, prep.channels, prep.size, prep.size), np.float32)
    spatial = set(layer_activations(chain, probe))
    ranked = sorted(
        (
            (f["score"], layer["node"], position, f["index"])
            for layer in data["layers"]
            if layer["node"] in spatial
            # The chain's scored channels: the kept filters with a non-zero score, by index.
            for position, f in enumerate(
                sorted((f for f in layer["filters"] if f["score"] > 0), key=lambda f: f["index"])
            )
        ),
        reverse=True,
    )
    if args.per_layer:
        layers = [node for _, node, _, _ in ranked]
        ranked = [r for i, r in enumerate(ranked) if layers[:i].count(r[1]) < args.per_layer]
    else:
        ranked = ranked[: args.filters]
    targets = [Target(node, position, index) for _, node, position, index in ranked]
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    images = visualise(chain, targets, prep, steps=args.steps)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = (after.ru_minflt - before.ru_minflt) / args.steps
    kernel = (after.ru_stime - before.ru_stime) / args.steps
    print(
        f"{len(targets)} filters, {args.steps} steps, {prep.size}×{prep.size}: {seconds:.1f} s "
        f"({seconds / args.steps * 1000:.0f} ms a step, {faults:,.0f} page faults and "
        f"{kernel * 1000:.0f} ms of kernel time a step) on {torch.get_num_threads()} CPU "
        f"threads; peak host memory {after.ru_maxrss / 1024:.0f} MiB; images {images.shape}"
    )


if __name__ == "__main__":
    main()
