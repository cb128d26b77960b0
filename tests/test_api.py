"""The Python API: `chainx.extract` is the CLI's pipeline, writes nothing unless asked, and
raises ChainxError with the CLI's messages."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx
import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION
from typer.testing import CliRunner

import chainx
from chainx.cli import app

FAST = {"steps": 60, "finetune_steps": 10, "filter_images": 1}
FAST_FLAGS = ["--steps", "60", "--finetune-steps", "10", "--filter-images", "1"]
# What differs between two runs of the same extraction: when and how fast, and where.
VOLATILE = {"created", "timings", "files"}


def comparable(data: dict) -> dict:
    data = {key: value for key, value in data.items() if key not in VOLATILE}
    for side in ("original", "chain"):
        data["metrics"]["cost"][side].pop("latency_ms")
    # The deploy form is the faster of two as timed on the machine (pipeline.build_deploy).
    data["metrics"]["cost"].pop("deploy")
    data["metrics"].pop("deploy")
    return data


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> chainx.ExtractResult:
    before = set(os.listdir(Path.cwd()))
    made = chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, holdout=SAMPLE_HOLDOUT, resize=28, **FAST)
    assert set(os.listdir(Path.cwd())) == before, "extract without out= wrote something"
    return made


def test_the_result_holds_a_verified_chain(result: chainx.ExtractResult) -> None:
    assert isinstance(result.chain, onnx.ModelProto)
    onnx.checker.check_model(result.chain, full_check=True)
    assert result.verification.passed
    assert result.metrics["region"]["images"] == 20
    assert result.metrics == result.to_json()["metrics"]
    kept = sum(layer.kept for layer in result.layers)
    assert kept == result.to_json()["summary"]["filters_kept"] > 0
    assert [layer.display for layer in result.layers][0] == "conv1"
    assert result.out is None


def test_save_writes_what_the_cli_writes(result: chainx.ExtractResult, tmp_path: Path) -> None:
    saved = result.save(tmp_path / "api")
    cli = tmp_path / "cli"
    flags = ["--holdout", str(SAMPLE_HOLDOUT), "--resize", "28", *FAST_FLAGS, "--out", str(cli)]
    outcome = CliRunner().invoke(app, ["extract", str(SAMPLE_MODEL), str(SAMPLE_REGION), *flags])
    assert outcome.exit_code == 0, outcome.output

    def files(folder: Path) -> list[str]:
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))

    assert files(saved) == files(cli)
    assert (saved / "chain.onnx").read_bytes() == (cli / "chain.onnx").read_bytes()
    api_json = json.loads((saved / "chain.json").read_text())
    cli_json = json.loads((cli / "chain.json").read_text())
    assert comparable(api_json) == comparable(cli_json)
    assert api_json["files"]["chain.onnx"] == str(saved / "chain.onnx")
    assert result.to_json()["files"]["chain.onnx"] == str(saved / "chain.onnx")
    for name in ("featuremaps", "filters"):
        for png in (saved / name).iterdir():
            assert png.read_bytes() == (cli / name / png.name).read_bytes()


def test_save_refuses_a_foreign_folder_and_the_inputs(
    result: chainx.ExtractResult, tmp_path: Path
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(chainx.ChainxError, match="not an earlier chainx output"):
        result.save(foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    result.save(foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (foreign / "chain.onnx").is_file()
    with pytest.raises(chainx.ChainxError, match="inside the input"):
        result.save(SAMPLE_REGION / "out")


def test_out_writes_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "chain"
    made = chainx.extract(
        str(SAMPLE_MODEL), str(SAMPLE_REGION), out=str(out), resize=28, seed=1, **FAST
    )
    assert made.out == out
    assert json.loads((out / "chain.json").read_text())["settings"]["seed"] == 1
    assert (out / "report.html").stat().st_size > 10_000


def test_a_bad_input_raises_the_cli_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(chainx.ChainxError) as raised:
        chainx.extract(empty, SAMPLE_REGION)
    outcome = CliRunner().invoke(app, ["extract", str(empty), str(SAMPLE_REGION)])
    assert outcome.exit_code == 2
    assert str(raised.value) in " ".join(outcome.output.split())


def test_a_chain_that_keeps_half_the_region_or_less_is_refused(tmp_path: Path) -> None:
    # One filter of 168 cannot tell the region's 3s from its 8s.
    options = {"resize": 28, "keep_ratio": 0.01, "finetune_steps": 0, "filter_images": 0}
    with pytest.raises(chainx.UnfaithfulChainError, match=r"keeps only \d+ of the region's 20"):
        chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, out=tmp_path / "api.chain", **options)
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    out = tmp_path / "cli.chain"
    outcome = CliRunner().invoke(
        app, ["extract", str(SAMPLE_MODEL), str(SAMPLE_REGION), "--out", str(out), *flags]
    )
    assert outcome.exit_code == 1
    assert "no chain was written" in " ".join(outcome.output.split())
    assert "--keep-ratio" in outcome.output
    assert not list(tmp_path.iterdir())  # neither call left a folder behind


def test_an_unknown_option_names_the_options() -> None:
    with pytest.raises(chainx.ChainxError, match="unknown option 'keep_raito'.*keep_ratio"):
        chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, keep_raito=0.1)


def test_settings_from_options_follow_the_flags() -> None:
    settings = chainx.ExtractSettings.from_options(
        keep_ratio=0.2, mean=[0.5, 0.5, 0.5], input="x", hold_margin=0.5, filter_images=0
    )
    assert settings.optimise.keep_ratio == 0.2
    assert settings.optimise.hold_margin == 0.5
    assert settings.read.mean == (0.5, 0.5, 0.5)
    assert settings.read.input_name == "x"
    assert settings.filter_images == 0
    assert settings.optimise.steps == chainx.OptimiseSettings().steps


def test_without_dot_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "chain"
    with pytest.raises(chainx.ChainxError, match="install graphviz"):
        chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, out=out, resize=28, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
