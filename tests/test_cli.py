"""The command line through Typer's CliRunner: exit codes, messages, files left alone."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import (
    SAMPLE_HOLDOUT,
    SAMPLE_MODEL,
    SAMPLE_REGION,
    model_with_weights,
    unreadable_images,
)
from onnx import numpy_helper
from torch import nn
from typer.testing import CliRunner

from chainx.cli import app

QUICK = ["--resize", "28", "--steps", "20", "--finetune-steps", "5"]


def invoke(*args: str) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run.chain"
    result = invoke("extract", SAMPLE_MODEL, SAMPLE_REGION, "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    return out


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith("chainx ")


def test_extract_writes_every_output(extracted: Path) -> None:
    assert sorted(p.name for p in extracted.iterdir()) == [
        "chain.deploy.onnx",
        "chain.gv",
        "chain.json",
        "chain.onnx",
        "chain.svg",
        "featuremaps",
        "filters",
        "report.html",
    ]
    data = json.loads((extracted / "chain.json").read_text())
    assert data["generator"] == "chainx"
    assert data["metrics"]["exactness"]["passed"]
    assert data["metrics"]["exact_copies"]["mismatched"] == []
    chain = onnx.load(str(extracted / "chain.onnx"))
    onnx.checker.check_model(chain, full_check=True)
    keys = {p.key for p in chain.metadata_props}
    assert {"chainx.version", "chainx.source_sha256", "chainx.settings"} <= keys


def test_verify_an_output_folder(extracted: Path) -> None:
    result = invoke("verify", extracted)
    assert result.exit_code == 0, result.output
    assert "passed" in result.output


def test_verify_with_explicit_model_and_images(extracted: Path) -> None:
    result = invoke("verify", extracted / "chain.onnx", SAMPLE_MODEL, SAMPLE_REGION)
    assert result.exit_code == 0, result.output
    saved = json.loads((extracted / "chain.json").read_text())
    summary, region = saved["summary"], saved["metrics"]["region"]
    output = " ".join(result.output.split())
    assert "verification passed" in output and "weights checked bit for bit" in output
    assert f"layers kept {summary['layers_kept']}/{summary['layers_total']}" in output
    assert f"filters kept {summary['filters_kept']:,}/{summary['filters_total']:,}" in output
    assert f"region: top-1 agreement {region['agree']}/{region['images']}" in output


def test_verify_fails_with_exit_1_on_a_corrupted_chain(extracted: Path, tmp_path: Path) -> None:
    chain = onnx.load(str(extracted / "chain.onnx"))
    conv = next(n for n in chain.graph.node if n.op_type == "Conv")
    init = next(i for i in chain.graph.initializer if i.name == conv.input[1])
    value = numpy_helper.to_array(init).copy()
    value.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    corrupted = tmp_path / "chain.onnx"
    onnx.save(chain, str(corrupted))
    result = invoke("verify", corrupted, SAMPLE_MODEL, SAMPLE_REGION)
    assert result.exit_code == 1
    assert "FAILED" in result.output or "verification failed" in result.output
    assert "Traceback" not in result.output


def test_extract_writes_a_deploy_file_that_verify_checks(extracted: Path, tmp_path: Path) -> None:
    data = json.loads((extracted / "chain.json").read_text())
    assert data["metrics"]["deploy"]["passed"]
    cost = data["metrics"]["cost"]
    assert 0 < cost["chain"]["macs"] <= cost["original"]["macs"]
    assert cost["deploy"]["macs"] >= cost["chain"]["macs"]  # padding adds zero filters
    assert "chain.deploy.onnx" in data["files"]
    copy = tmp_path / "copy"
    shutil.copytree(extracted, copy)
    deploy = onnx.load(str(copy / "chain.deploy.onnx"))
    conv = next(n for n in deploy.graph.node if n.op_type == "Conv")
    init = next(i for i in deploy.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx.save(deploy, str(copy / "chain.deploy.onnx"))
    for args in ([copy], [copy / "chain.onnx", SAMPLE_MODEL, SAMPLE_REGION]):
        result = invoke("verify", *args)
        assert result.exit_code == 1, result.output
        assert "DIFFERS from chain.onnx" in " ".join(result.output.split())


def test_verify_a_chain_alone_asks_for_the_model(extracted: Path) -> None:
    result = invoke("verify", extracted / "chain.onnx")
    assert result.exit_code == 2
    assert "chainx verify chain.onnx MODEL.onnx IMAGES/" in result.output


def test_a_file_that_is_not_onnx_is_a_user_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"this is not a protobuf")
    result = invoke("extract", bogus, SAMPLE_REGION, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "not a valid ONNX model" in result.output
    assert "Traceback" not in result.output


def test_a_missing_model_is_a_user_error(tmp_path: Path) -> None:
    result = invoke("extract", tmp_path / "absent.onnx", SAMPLE_REGION)
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_an_empty_image_folder_is_a_user_error(tmp_path: Path) -> None:
    empty = tmp_path / "images"
    empty.mkdir()
    result = invoke("extract", SAMPLE_MODEL, empty, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 2
    assert "no images found" in result.output


def test_a_foreign_non_empty_folder_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = invoke("extract", SAMPLE_MODEL, SAMPLE_REGION, "--out", out, *QUICK)
    assert result.exit_code == 2
    assert "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "precious"


def test_bad_mean_is_a_user_error(tmp_path: Path) -> None:
    result = invoke(
        "extract", SAMPLE_MODEL, SAMPLE_REGION, "--out", tmp_path / "o", "--mean", "a,b", *QUICK
    )
    assert result.exit_code == 2
    assert "--mean" in result.output


def test_an_earlier_output_is_replaced_without_force(extracted: Path, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.chain"
    shutil.copytree(extracted, earlier)
    result = invoke("extract", SAMPLE_MODEL, SAMPLE_REGION, "--out", earlier, "--seed", "1", *QUICK)
    assert result.exit_code == 0, result.output
    assert json.loads((earlier / "chain.json").read_text())["settings"]["seed"] == 1
    assert sorted(p.name for p in earlier.iterdir()) == sorted(p.name for p in extracted.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["earlier.chain"]  # no staging left behind


def test_verify_against_another_model_file_says_why_it_fails(
    extracted: Path, tmp_path: Path
) -> None:
    other = onnx.load(str(SAMPLE_MODEL))
    other.doc_string = "same weights, different file"
    other_path = tmp_path / "other.onnx"
    onnx.save(other, str(other_path))
    result = invoke("verify", extracted / "chain.onnx", other_path, SAMPLE_REGION)
    assert result.exit_code == 1
    assert "not the model the chain was extracted from" in result.output


def test_an_op_without_a_rule_is_frozen_and_reported(tmp_path: Path) -> None:
    shapes = {"w1": (6, 1, 3, 3), "b1": (6,), "w2": (8, 6, 3, 3), "b2": (8,), "w3": (10, 8)}
    model = model_with_weights(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 1, 28, 28] input) => (float[N, 10] logits) {
            a = Conv <pads = [1, 1, 1, 1]> (input, w1, b1)
            r = Relu (a)
            n = LRN <size = 3> (r)
            c = Conv <pads = [1, 1, 1, 1]> (n, w2, b2)
            p = GlobalAveragePool (c)
            f = Flatten (p)
            logits = Gemm <transB = 1> (f, w3, b3)
        }
        """,
        {**shapes, "b3": (10,)},
    )
    path = tmp_path / "lrn.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    result = invoke("extract", path, SAMPLE_REGION, "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    assert "frozen ops" in result.output and "(LRN)" in result.output
    data = json.loads((out / "chain.json").read_text())
    assert [f["op_type"] for f in data["frozen_ops"]] == ["LRN"]
    assert data["metrics"]["exactness"]["passed"]


class _FixedBatch(nn.Module):
    """Exported for a batch of exactly 1: the flatten bakes the 1 into a Reshape (and a
    constant image of batch 1 concatenated to the input, into the Concat too)."""

    def __init__(self, downsample: bool = False, token: bool = False) -> None:
        super().__init__()
        self.downsample = downsample
        self.token = nn.Parameter(torch.randn(1, 1, 28, 28)) if token else None
        self.conv1 = nn.Conv2d(2 if token else 1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:  # nearest downsampling rounds differently in torch and ONNX
            x = nn.functional.interpolate(x, size=(8, 8), mode="nearest")
        if self.token is not None:
            x = torch.cat([x, self.token], dim=1)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).view(1, -1))


def _export_fixed(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(1, 1, 28, 28), buffer, dynamo=False)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize(("token", "chain_batch"), [(False, "batch"), (True, 1)])
def test_a_model_with_a_fixed_batch_of_one_is_extracted(
    tmp_path: Path, token: bool, chain_batch: str | int
) -> None:
    # Batched where only its Reshape holds the 1; one image at a time where a Concat does.
    torch.manual_seed(0)
    model = _export_fixed(_FixedBatch(token=token), tmp_path / "fixed.onnx")
    result = invoke("extract", model, SAMPLE_REGION, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "chain.json").read_text())
    assert data["metrics"]["exactness"]["passed"]
    batch = onnx.load(tmp_path / "out" / "chain.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert (batch.dim_param or batch.dim_value) == chain_batch


def test_a_model_torch_computes_differently_is_refused_before_optimising(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _export_fixed(_FixedBatch(downsample=True), tmp_path / "resize.onnx")
    result = invoke("extract", model, SAMPLE_REGION, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 2, result.output
    assert "differs from onnxruntime" in result.output and "Resize" in result.output
    assert not (tmp_path / "out").exists()


def test_a_model_without_conv_layers_is_a_user_error(tmp_path: Path) -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        net (float[N, 1, 28, 28] input) => (float[N, 10] logits) {
            f = Flatten (input)
            logits = Gemm <transB = 1> (f, w)
        }
        """
    )
    weight = np.random.default_rng(0).standard_normal((10, 784)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(weight, "w"))
    path = tmp_path / "linear.onnx"
    path.write_bytes(model.SerializeToString())
    result = invoke("extract", path, SAMPLE_REGION, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 2
    assert "nothing to score" in result.output


@pytest.mark.parametrize(("op", "kind"), [("Softmax", "probabilities"), ("LogSoftmax", "log-")])
def test_a_probability_output_is_detected_and_said(tmp_path: Path, op: str, kind: str) -> None:
    model = onnx.load(str(SAMPLE_MODEL))
    logits = model.graph.output[0].name
    model.graph.node[-1].output[0] = "raw_logits"
    model.graph.node.append(onnx.helper.make_node(op, ["raw_logits"], [logits], axis=1))
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(model.SerializeToString())
    result = invoke("extract", path, SAMPLE_REGION, "--out", tmp_path / "out", *QUICK)
    assert result.exit_code == 0, result.output
    assert f"output treated as {kind}" in result.output
    data = json.loads((tmp_path / "out" / "chain.json").read_text())
    assert data["settings"]["output_kind"].startswith(kind)


SWEEP = ["--per-class", "5", "--holdout-per-class", "5", "--resize", "28", "--steps", "20"]
SWEEP += ["--finetune-steps", "5", "--keep-ratio", "0.3", "--workers", "1"]


def test_sweep_runs_trials_and_prints_the_summary_and_its_files(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = invoke("sweep", SAMPLE_MODEL, SAMPLE_HOLDOUT, "--trials", "1", "--out", out, *SWEEP)
    assert result.exit_code == 0, result.output
    assert "1 trials: 0 already in" in result.output
    assert "neurochains" in result.output and "taylor" in result.output
    names = ("trials.jsonl", "summary.md", "sparsity_vs_holdout.png", "layers_kept.png")
    for name in (*names, "frontier.png"):  # the frontier is on by default
        assert str(out / name) in result.output.replace("\n", "")
    record = json.loads((out / "trials.jsonl").read_text().splitlines()[0])
    budgets = [entry["keep_ratio"] for entry in record["frontier"]]
    assert budgets == [0.5, 0.3, 0.15, 0.07, 0.03, 0.015]
    assert all(len(entry["frontier"]) == 6 for entry in record["methods"].values())
    assert "Fidelity–sparsity frontier" in (out / "summary.md").read_text()
    again = invoke("sweep", SAMPLE_MODEL, SAMPLE_HOLDOUT, "--trials", "1", "--out", out, *SWEEP)
    assert again.exit_code == 0 and "1 already in" in again.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--baselines", "random,magic"], "unknown magic"),
        (["--classes", "3"], "has only 2 class folders"),
        (["--ray", "127.0.0.1:9"], "cannot connect to a Ray cluster"),
    ],
)
def test_sweep_names_a_bad_option_and_exits_2(
    tmp_path: Path, options: list[str], message: str
) -> None:
    out = tmp_path / "sweep"
    result = invoke(
        "sweep", SAMPLE_MODEL, SAMPLE_HOLDOUT, "--trials", "1", "--out", out, *SWEEP, *options
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_sweep_reports_failed_trials_and_exits_1(tmp_path: Path) -> None:
    data = unreadable_images(tmp_path / "data")
    result = invoke("sweep", SAMPLE_MODEL, data, "--trials", "1", "--out", tmp_path / "o", *SWEEP)
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())
    assert "trial 0 failed" in output and "could be read" in output
    assert "rerun the same command to retry them" in output
