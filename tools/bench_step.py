"""Benchmark: one score-optimisation step against a plain forward+backward, same batch.

Both run in this process on the same converted model: the plain step is the unscored
network with the input as the only leaf needing a gradient; the scored step is chainx's
objective (KL + L1, backward into scores and gates). Prints both times, their ratio and
peak memory. With --profile, also the ops that take the most time in one more run of
each step, from torch's profiler (device time on a GPU, CPU time on a CPU).

    python tools/bench_step.py --model sample_models/mnist_resnet.onnx --batch 20
    python tools/bench_step.py --torchvision resnet50 --size 224 --batch 20 --device cuda
    python tools/bench_step.py --model build/efficientnet_lite0.onnx --batch 20 --compile
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.compiled import compiled_network
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective

if __package__:  # imported as tools.bench_step
    from tools.torch_export import export_classifier
else:  # run as a script: tools/ is first on sys.path
    from torch_export import export_classifier


def torchvision_model(name: str, size: int) -> onnx.ModelProto:
    import torchvision

    buffer = io.BytesIO()
    export_classifier(getattr(torchvision.models, name)(weights=None), (1, 3, size, size), buffer)
    return onnx.load_from_string(buffer.getvalue())


def timed(step: object, device: torch.device, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def profile(name: str, step: object, device: torch.device, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profiler(activities=activities) as run:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n== {name}: the {rows} ops with the most self time ({key})")
    print(run.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=48))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="an ONNX classifier")
    source.add_argument("--torchvision", help="a torchvision architecture, random weights")
    parser.add_argument("--size", type=int, default=224, help="input size for --torchvision")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="print torch's op profile")
    parser.add_argument(
        "--compile", action="store_true", help="both steps through torch.compile, as extract's"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)
    model = (
        torchvision_model(args.torchvision, args.size)
        if args.torchvision
        else (onnx.load(str(args.model)))
    )
    model = normalise(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [args.batch] + [d.dim_value for d in dims[1:]]
    images = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    images = images.to(device)
    points = find_score_points(model)
    scoring = ScoringModel(model, points).to(device)
    objective = Objective(scoring, images, "logits", args.batch, augment=False, seed=0)

    leaf = images.clone().requires_grad_(True)
    ones = [torch.ones(point.channels, device=device) for point in points]
    if args.compile:
        scoring.use_compiled(compiled_network(scoring.net))

    def plain() -> None:
        leaf.grad = None
        scoring.run(leaf, ones, scoring.compiled).logsumexp(-1).sum().backward()

    def scored() -> None:
        for parameter in scoring.learnt():
            parameter.grad = None
        objective.step(30.0)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Interleaved, one of each at a time: the machine's speed drifts over a run (other jobs,
    # memory settling), and timing all plain steps before all scored ones folds that drift
    # into the ratio (1.02 to 1.16 on Lite0 on one quiet host).
    warm_up = timed(plain, device, 1)[0] + timed(scored, device, 1)[0]
    if args.compile:
        print(f"compiled both steps in {warm_up:.1f} s")
    pairs = [(timed(plain, device, 1)[0], timed(scored, device, 1)[0]) for _ in range(args.repeats)]
    plain_ms = 1000 * statistics.median(p for p, _ in pairs)
    scored_ms = 1000 * statistics.median(s for _, s in pairs)
    ratios = sorted(s / p for p, s in pairs)
    name = args.torchvision or args.model.name
    print(f"model: {name}, {len(points)} conv layers, {sum(p.channels for p in points):,} filters")
    print(f"device: {device}, batch {shape}")
    print(f"plain forward+backward: {plain_ms:.1f} ms")
    print(f"scored step (KL + L1):  {scored_ms:.1f} ms")
    print(
        f"ratio: {statistics.median(ratios):.2f} (median of {len(ratios)} interleaved pairs; "
        f"quartiles {ratios[len(ratios) // 4]:.2f}, {ratios[3 * len(ratios) // 4]:.2f})"
    )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak host memory (max RSS): {rss_mib:.0f} MiB")
    if args.profile:
        profile("plain forward+backward", plain, device)
        profile("scored step", scored, device)


if __name__ == "__main__":
    main()
