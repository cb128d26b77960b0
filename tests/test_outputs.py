"""The output folder is never a place where the user's files get lost."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from conftest import SAMPLE_MODEL, SAMPLE_REGION

from chainx.errors import ChainxError
from chainx.outputs import (
    COMPARE_OUTPUT,
    OUTPUT_FILES,
    OutputStage,
    check_output_dir,
    write_atomic,
)


def test_new_and_empty_folders_are_fine(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new", force=False, protected=[])
    check_output_dir(tmp_path, force=False, protected=[])


def test_foreign_folder_needs_force(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(ChainxError, match="--force"):
        check_output_dir(tmp_path, force=False, protected=[])
    check_output_dir(tmp_path, force=True, protected=[])


def test_an_earlier_chainx_output_may_be_replaced(tmp_path: Path) -> None:
    (tmp_path / "chain.json").write_text(json.dumps({"generator": "chainx"}))
    check_output_dir(tmp_path, force=False, protected=[])


def test_each_command_replaces_only_its_own_earlier_output(tmp_path: Path) -> None:
    extract_out, compare_out = tmp_path / "extract", tmp_path / "compare"
    extract_out.mkdir()
    compare_out.mkdir()
    (extract_out / "chain.json").write_text(json.dumps({"generator": "chainx"}))
    (compare_out / "compare.json").write_text(json.dumps({"generator": "chainx"}))
    check_output_dir(compare_out, force=False, protected=[], layout=COMPARE_OUTPUT)
    with pytest.raises(ChainxError, match="--force"):
        check_output_dir(extract_out, force=False, protected=[], layout=COMPARE_OUTPUT)
    with pytest.raises(ChainxError, match="--force"):
        check_output_dir(compare_out, force=False, protected=[])


def test_inputs_are_protected_even_with_force(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(ChainxError, match="inside the input"):
        check_output_dir(images / "out", force=True, protected=[images])
    model = tmp_path / "out" / "chain.onnx"
    model.parent.mkdir()
    model.write_bytes(b"model")
    with pytest.raises(ChainxError, match="replace the input"):
        check_output_dir(tmp_path / "out", force=True, protected=[model])


def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "chain.json"
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["chain.json"]


def _stage_with(out: Path, text: str) -> OutputStage:
    stage = OutputStage(out)
    for name in OUTPUT_FILES:
        (stage.path / name).write_text(text)
    return stage


def test_a_stage_replaces_an_earlier_output_whole(tmp_path: Path) -> None:
    out = tmp_path / "run.chain"
    _stage_with(out, "first").publish()
    assert {p.name for p in out.iterdir()} == set(OUTPUT_FILES)
    _stage_with(out, "second").publish()
    assert all((out / name).read_text() == "second" for name in OUTPUT_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.chain"]  # nothing left over


def test_a_compare_stage_replaces_its_own_files_and_keeps_a_chains(tmp_path: Path) -> None:
    for text in ("first", "second"):
        stage = OutputStage(tmp_path / "diff", COMPARE_OUTPUT)
        for name in COMPARE_OUTPUT.files:
            (stage.path / name).write_text(text)
        stage.publish()
    assert {p.read_text() for p in (tmp_path / "diff").iterdir()} == {"second"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff"]
    chain = _stage_with(tmp_path / "chain", "chain")
    chain.publish()
    stage = OutputStage(tmp_path / "chain", COMPARE_OUTPUT)
    (stage.path / "compare.json").write_text("comparison")
    stage.publish()  # a forced compare into a chain's folder: the chain's files stay
    assert all((tmp_path / "chain" / name).read_text() == "chain" for name in OUTPUT_FILES)
    assert (tmp_path / "chain" / "compare.json").read_text() == "comparison"


def test_a_forced_folder_keeps_the_users_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    _stage_with(tmp_path, "chain").publish()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "chain.onnx").read_text() == "chain"


def test_a_killed_runs_staging_folder_is_cleaned_up(tmp_path: Path) -> None:
    out = tmp_path / "run.chain"
    left = _stage_with(out, "killed").path  # never published, as after kill -9
    stage = OutputStage(out)
    assert not left.exists()
    stage.discard()
    assert list(tmp_path.iterdir()) == []


def _complete_or_absent(out: Path) -> bool:
    if not out.exists():
        return True
    if not (out / "chain.json").is_file():
        return False
    data = json.loads((out / "chain.json").read_text())
    # Every file chain.json lists (the frontier's only with --frontier), and no other.
    if {p.name for p in out.iterdir()} != {*data["files"], "featuremaps", "filters"}:
        return False
    if set(data["files"]) != set(OUTPUT_FILES) - {"frontier.json"}:
        return False
    onnx.checker.check_model(onnx.load(str(out / "chain.onnx")), full_check=True)
    return data["generator"] == "chainx" and (out / "chain.svg").stat().st_size > 0


def test_killing_an_extract_never_leaves_a_half_written_output(tmp_path: Path) -> None:
    out = tmp_path / "run.chain"
    command = [
        sys.executable,
        "-c",
        "from chainx.cli import run; run()",
        "extract",
        str(SAMPLE_MODEL),
        str(SAMPLE_REGION),
        "--resize",
        "28",
        "--steps",
        "60",
        "--finetune-steps",
        "20",
        "--out",
        str(out),
    ]
    rng = random.Random(0)
    for attempt in range(6):
        if attempt == 3:
            subprocess.run(command, check=True, capture_output=True, timeout=300)
            assert _complete_or_absent(out) and out.exists()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 9.0))
        process.send_signal(signal.SIGKILL if attempt % 2 else signal.SIGTERM)
        process.wait(timeout=60)
        assert _complete_or_absent(out), f"attempt {attempt}: {sorted(out.iterdir())}"
