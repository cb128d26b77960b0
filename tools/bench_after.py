"""Benchmark: what an extract spends after verification when a chain keeps thousands of filters.

    .venv/bin/python tools/bench_after.py IMAGES [--model resnet18] [--size 64] [--steps 20]
        [--threads 1] [--onnx MODEL --mean M --std S]

Exports a zoo model (torchvision weights random, BatchNorm statistics randomised, as
tools/zoo.py builds it), or takes `--onnx` at its own input size; extracts a chain on the
images with few steps and τ = 0, so that nearly every filter stays, filter sheets off, on
one thread (--threads), and prints the extract's stage timings as one JSON line: the
filters kept, the optimisation's seconds and those of paths, the deploy file and the
drawings, and their share of the whole.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnx

import chainx
from chainx.cli.options import parse_floats
from chainx.scoring.device import set_threads

if __package__:  # imported as tools.bench_after
    from tools.zoo import export
else:  # run as a script: tools/ is first on sys.path
    from zoo import export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a region folder (e.g. 20 photos)")
    parser.add_argument("--model", default="resnet18", help="a tools/zoo.py torchvision name")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch's and onnxruntime's")
    parser.add_argument("--onnx", type=Path, help="this model instead of a zoo one")
    parser.add_argument("--mean", help="with --onnx: the preprocessing, as extract's")
    parser.add_argument("--std", help="with --onnx: the preprocessing, as extract's")
    args = parser.parse_args()
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        model = args.onnx
        preprocessing = {
            "mean": parse_floats("--mean", args.mean),
            "std": parse_floats("--std", args.std),
        }
        if model is None:
            model = Path(folder) / f"{args.model}.onnx"
            onnx.save(export(args.model, "torchscript"), model)
            preprocessing = {"resize": args.size}
        result = chainx.extract(
            model,
            args.images,
            **preprocessing,
            steps=args.steps,
            finetune_steps=5,
            tau=0.0,
            filter_images=0,
            out=Path(folder) / "chain",
        )
        timings = result.to_json()["timings"]
        summary = result.to_json()["summary"]
    after = sum(timings.get(key, 0.0) for key in ("paths_s", "deploy_s", "visualise_s"))
    row = {
        "model": args.onnx.name if args.onnx else args.model,
        "filters_kept": summary.get("filters_kept"),
        **{key: round(value, 2) for key, value in timings.items()},
        "after_verification_s": round(after, 2),
        "after_share": round(after / timings["total_s"], 3),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
