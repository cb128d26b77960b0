"""tools/gpu_check.sh, small and on the CPU: the GPU machine's script must not rot unseen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_short_on_the_cpu() -> None:
    result = subprocess.run(
        # --python, as on the H200, whose own python held torch: chainx as `python -m chainx`
        ["bash", "tools/gpu_check.sh", "--device", "cpu", "--short", "--python", sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("| chainx on cpu") :]
    for row in ("device tests", "extract resnet18", "scored step / plain step", "sweep, 2 trials"):
        assert f"| {row}" in table, table
