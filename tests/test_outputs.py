"""The output folder is never a place where the user's files get lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainx.errors import ChainxError
from chainx.outputs import check_output_dir, write_atomic


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
