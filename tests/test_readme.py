"""The README's Python example runs as written, from the repository root's layout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def python_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_example_runs(tmp_path: Path) -> None:
    (tmp_path / "sample_models").symlink_to(REPO / "sample_models")
    script = tmp_path / "example.py"
    script.write_text(python_example())
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True"
    assert 0.5 <= float(lines[1]) <= 1.0
    assert lines[2].startswith("conv1 ")
    data = json.loads((tmp_path / "mnist_resnet.chain" / "chain.json").read_text())
    assert data["settings"]["seed"] == 0 and data["metrics"]["holdout"]["images"] == 80
