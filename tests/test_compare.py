"""`chainx compare`: the overlap of two chains of one model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION
from typer.testing import CliRunner

from chainx.chain.compare import compare
from chainx.cli import app

QUICK = ["--resize", "28", "--steps", "60", "--finetune-steps", "5"]


def invoke(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("compare")
    for name, images in (("threes_eights", SAMPLE_REGION), ("holdout", SAMPLE_HOLDOUT)):
        result = invoke("extract", SAMPLE_MODEL, images, "--out", folder / name, *QUICK)
        assert result.exit_code == 0, result.output
    return folder / "threes_eights", folder / "holdout"


def test_overlap_counts_follow_the_kept_filters(chains: tuple[Path, Path]) -> None:
    a, b = chains
    comparison = compare(a, b)
    data_a = json.loads((a / "chain.json").read_text())
    data_b = json.loads((b / "chain.json").read_text())
    for layer, la, lb in zip(comparison.layers, data_a["layers"], data_b["layers"], strict=True):
        mine = {f["index"] for f in la["filters"]}
        theirs = {f["index"] for f in lb["filters"]}
        assert (layer.kept_a, layer.kept_b, layer.shared) == (
            len(mine),
            len(theirs),
            len(mine & theirs),
        )
    assert 0.0 <= comparison.filter_jaccard <= 1.0
    assert compare(a, a).filter_jaccard == 1.0


def test_the_cli_prints_a_table_and_writes_the_diagram(
    chains: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = chains
    result = invoke("compare", a, b, "--out", tmp_path / "diff")
    assert result.exit_code == 0, result.output
    assert "overlap (Jaccard)" in result.output and "threes_eights" in result.output
    data = json.loads((tmp_path / "diff" / "compare.json").read_text())
    assert data["filters"]["shared"] == compare(a, b).filters_shared
    assert (tmp_path / "diff" / "compare.svg").read_text().lstrip().startswith("<?xml")


def test_chains_of_different_models_do_not_compare(
    chains: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = chains
    other = tmp_path / "other"
    other.mkdir()
    data = json.loads((a / "chain.json").read_text())
    data["source"]["sha256"] = "0" * 64
    (other / "chain.json").write_text(json.dumps(data))
    result = invoke("compare", a, other)
    assert result.exit_code == 2 and "different models" in result.output
    result = invoke("compare", a, tmp_path)
    assert result.exit_code == 2 and "not a chainx output" in result.output


def test_a_rerun_replaces_an_earlier_comparison_whole(
    chains: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = chains
    out = tmp_path / "diff"
    assert invoke("compare", a, b, "--out", out).exit_code == 0
    (out / "compare.json").write_text(json.dumps({"generator": "chainx", "stale": True}))
    result = invoke("compare", a, b, "--out", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["compare.gv", "compare.json", "compare.svg"]
    assert "stale" not in json.loads((out / "compare.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["diff"]  # no staging left behind


def test_a_foreign_folder_is_refused_and_with_force_keeps_its_files(
    chains: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = chains
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = invoke("compare", a, b, "--out", out)
    assert result.exit_code == 2 and "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    result = invoke("compare", a, b, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "precious"
    assert {"compare.json", "compare.gv", "compare.svg"} <= {p.name for p in out.iterdir()}


def test_without_graphviz_compare_says_what_to_install(
    chains: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = chains
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = invoke("compare", a, b, "--out", tmp_path / "diff")
    assert result.exit_code == 2, result.output
    assert "apt-get install graphviz" in result.output and "internal error" not in result.output
    assert not (tmp_path / "diff").exists()


def test_a_comparison_is_not_a_chain(chains: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = chains
    assert invoke("compare", a, b, "--out", tmp_path / "diff").exit_code == 0
    result = invoke("compare", a, tmp_path / "diff" / "compare.json")
    assert result.exit_code == 2 and "not a chainx output" in result.output
