"""Benchmark: sweep throughput (trials per hour) with the local process pool and with Ray.

Runs the same trials (same plan, same settings) into fresh folders: the local pool with 1
worker and with one worker per core, then Ray tasks on a Ray instance started on this
machine (`ray start --head --block`). Prints trials/hour for each and writes them as JSON.

    python tools/bench_sweep.py --model build/cifar10_resnet20.onnx \
        --data ../shared/data/cifar10/test --class-names tools/class_names/cifar10.txt \
        --resize 32 --keep-ratio 0.07 --finetune-steps 200 --trials 4
    python tools/bench_sweep.py --model sample_models/mnist_resnet.onnx \
        --data sample_models/mnist_holdout --resize 28 --per-class 5 --trials 4
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chainx.scoring.settings import OptimiseSettings
from chainx.settings import ReadSettings
from chainx.sweep.plan import SweepConfig
from chainx.sweep.run import run_sweep


def timed_sweep(config: SweepConfig, trials: int, workers: int, ray: str | None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        result = run_sweep(config, trials, Path(folder) / "out", workers, ray)
        seconds = time.perf_counter() - started
    if result.failures:
        raise SystemExit(f"trials failed: {result.failures}")
    return {"trials": trials, "seconds": seconds, "trials_per_hour": 3600 * trials / seconds}


def start_ray(cpus: int) -> tuple[str, subprocess.Popen]:
    """A Ray head of its own (`ray start --head --block`); stopping it stops only that one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"127.0.0.1:{port}", head
        except OSError:
            if head.poll() is not None:
                raise SystemExit("ray start --head failed") from None
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="one sub-folder per class")
    parser.add_argument("--holdout-data", type=Path)
    parser.add_argument("--class-names", type=Path)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--holdout-per-class", type=int, default=100)
    parser.add_argument("--resize", type=int)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--keep-ratio", type=float)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    config = SweepConfig(
        model=args.model,
        data=args.data,
        holdout_data=args.holdout_data,
        per_class=args.per_class,
        holdout_per_class=args.holdout_per_class,
        read=ReadSettings(resize=args.resize, class_names=args.class_names),
        optimise=OptimiseSettings(
            steps=args.steps, finetune_steps=args.finetune_steps, keep_ratio=args.keep_ratio
        ),
    )
    cores = os.cpu_count() or 1
    results = {
        "cores": cores,
        "local, 1 worker": timed_sweep(config, args.trials, 1, None),
        f"local, {cores} workers": timed_sweep(config, args.trials, cores, None),
    }
    address, head = start_ray(cores)
    try:
        results[f"Ray on this machine, {cores} CPUs"] = timed_sweep(
            config, args.trials, cores, address
        )
    finally:
        head.send_signal(signal.SIGINT)
        head.wait()
    for name, entry in results.items():
        if isinstance(entry, dict):
            print(
                f"{name:>28}: {entry['trials']} trials in {entry['seconds']:.0f} s = "
                f"{entry['trials_per_hour']:.0f} trials/hour"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
