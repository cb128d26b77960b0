"""Benchmark: two extracts at once against one alone, under a few thread policies.

Each policy runs the same `chainx extract` once alone, then `--copies` of it started
`--stagger` seconds apart (each into its own folder), and prints every run's wall time and
the slowdown against alone. A policy is extra extract flags and environment variables.

    python tools/bench_busy.py                       # the MNIST sample, 300 + 100 steps
    python tools/bench_busy.py --model build/efficientnet_lite0.onnx \
        --images build/hymenoptera/region --extra "--mean 0.5,0.5,0.5 --std 0.5,0.5,0.5"
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
POLICIES = {
    "the default: threads for the free cores": ([], {}),
    f"--threads {CORES} (one per core, whatever else runs)": (["--threads", str(CORES)], {}),
    "--threads 1": (["--threads", "1"], {}),
    "the default, OMP_WAIT_POLICY=PASSIVE": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def run_extracts(
    command: list[str], copies: int, env: dict[str, str], folder: Path, stagger: float
) -> list[float]:
    """Start `copies` extracts, `stagger` seconds apart; their wall times in seconds."""
    started, processes = [], []
    for copy in range(copies):
        if copy:
            time.sleep(stagger)
        out = folder / f"out{copy}"
        started.append(time.perf_counter())
        processes.append(
            subprocess.Popen(
                [*command, "--out", str(out), "--force"],
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    times = []
    for process, start in zip(processes, started, strict=True):
        _, errors = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"extract failed:\n{errors[-2000:]}")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "sample_models/mnist_resnet.onnx")
    parser.add_argument("--images", type=Path, default=ROOT / "sample_models/mnist_region")
    parser.add_argument("--extra", default="--resize 28", help="more extract flags")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument(
        "--stagger", type=float, default=3.0, help="seconds between starts (0: all at once)"
    )
    args = parser.parse_args()

    chainx = [sys.executable, "-c", "from chainx.cli import run; run()"]
    base = [*chainx, "extract", str(args.model), str(args.images), "--filter-images", "0"]
    base += shlex.split(args.extra)
    print(f"| policy | alone | {args.copies} at once (each) | slowdown |")
    print("| --- | ---: | --- | ---: |")
    with tempfile.TemporaryDirectory() as folder:
        for name, (flags, env) in POLICIES.items():
            alone = run_extracts([*base, *flags], 1, env, Path(folder), 0)[0]
            together = run_extracts([*base, *flags], args.copies, env, Path(folder), args.stagger)
            each = ", ".join(f"{t:.1f} s" for t in together)
            print(f"| {name} | {alone:.1f} s | {each} | {max(together) / alone:.2f}× |")


if __name__ == "__main__":
    main()
