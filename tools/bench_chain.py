"""Benchmark: the original model, chain.onnx and chain.deploy.onnx side by side in onnxruntime.

For each batch size and thread count, every model runs in this one process (CPU, full graph
optimisations): the median of --repeats timed runs after warm-up. Also prints parameters and
MACs per image, and with --profile where each model's time goes, per op type (onnxruntime's
profiler, kernel time only).

    python tools/bench_chain.py build/efficientnet_lite0.onnx build/effnet.chain \
        --size 224 --batch 1 32 --threads 1 2 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from chainx.chain.verify import median_latency_ms
from chainx.onnx.macs import count_macs
from chainx.onnx.runtime import as_input


def session(path: Path, threads: int, profile_dir: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "profile")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_breakdown(path: Path, images: np.ndarray, threads: int, runs: int = 20) -> dict[str, float]:
    """Op type → kernel milliseconds per run."""
    with tempfile.TemporaryDirectory() as folder:
        sess = session(path, threads, folder)
        model_input = sess.get_inputs()[0]
        feed = {model_input.name: as_input(model_input, images)}
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    return {op: micros / runs / 1000 for op, micros in per_op.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the original ONNX model")
    parser.add_argument("chain", type=Path, help="a chainx output folder")
    parser.add_argument("--size", type=int, default=224, help="image side")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="per-op-type breakdown")
    args = parser.parse_args()

    models = {"original": args.model, "chain": args.chain / "chain.onnx"}
    if (args.chain / "chain.deploy.onnx").is_file():
        models["deploy"] = args.chain / "chain.deploy.onnx"
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, args.channels, args.size, args.size)).astype(np.float32)
    print("| model | parameters | MACs per image |")
    print("| --- | ---: | ---: |")
    for name, path in models.items():
        proto = onnx.load(str(path))
        parameters = int(sum(np.prod(init.dims) for init in proto.graph.initializer))
        print(f"| {name} | {parameters:,} | {count_macs(proto, image):,} |")
    print()
    print("| batch | threads | " + " | ".join(f"{name} ms" for name in models) + " | speed-up |")
    print("| ---: | ---: | " + " | ".join("---:" for _ in models) + " | --- |")
    for batch in args.batch:
        images = rng.standard_normal((batch, *image.shape[1:])).astype(np.float32)
        for threads in args.threads:
            times = {
                name: median_latency_ms(session(path, threads), images, args.repeats)
                for name, path in models.items()
            }
            ratios = ", ".join(
                f"{name} {times['original'] / times[name]:.2f}×"
                for name in models
                if name != "original"
            )
            cells = " | ".join(f"{times[name]:.2f}" for name in models)
            print(f"| {batch} | {threads} | {cells} | {ratios} |")
    if args.profile:
        for batch in args.batch:
            images = rng.standard_normal((batch, *image.shape[1:])).astype(np.float32)
            for name, path in models.items():
                breakdown = op_breakdown(path, images, args.threads[0])
                total = sum(breakdown.values())
                parts = "; ".join(f"{op} {ms:.2f}" for op, ms in list(breakdown.items())[:8])
                where = f"{name}, batch {batch}, {args.threads[0]} thread(s)"
                print(f"\n{where}: kernels {total:.2f} ms: {parts}")


if __name__ == "__main__":
    main()
