"""Sweeps on the sample model: records, resume, interrupts, failures, the local pool and Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE_HOLDOUT, SAMPLE_MODEL, unreadable_images
from PIL import Image

from chainx.errors import ChainxError
from chainx.images import load_image_files, make_preprocessing
from chainx.onnx.runtime import run, session
from chainx.scoring.settings import OptimiseSettings
from chainx.settings import ReadSettings
from chainx.sweep.plan import BASELINES, CHAIN, SweepConfig, plan_trials
from chainx.sweep.run import run_sweep
from chainx.sweep.summary import METRICS, summarise

QUICK = OptimiseSettings(steps=40, finetune_steps=10, keep_ratio=0.3)


def config(**kwargs: object) -> SweepConfig:
    values = {"data": SAMPLE_HOLDOUT, "per_class": 5, "holdout_per_class": 10}
    read = ReadSettings(resize=28, strict=bool(kwargs.pop("strict", False)))
    return SweepConfig(model=SAMPLE_MODEL, **{**values, "read": read, "optimise": QUICK, **kwargs})


def lines(out: Path) -> list[str]:
    return (out / "trials.jsonl").read_text().splitlines()


def sweep_command(out: Path, trials: int) -> list[str]:
    """The CLI sweep of `config()`'s settings, as a user would start it."""
    return [
        str(Path(sys.executable).with_name("chainx")), "sweep",
        str(SAMPLE_MODEL), str(SAMPLE_HOLDOUT),
        "--trials", str(trials), "--per-class", "5", "--holdout-per-class", "10",
        "--resize", "28", "--steps", "40", "--finetune-steps", "10", "--keep-ratio", "0.3",
        "--frontier", "none", "--workers", "1", "--out", str(out),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = run_sweep(config(), 3, out, workers=2)
    assert result.failures == [] and result.done == 3 and result.ran == 3
    return out


def test_every_trial_is_recorded_with_every_method_verified_at_one_budget(swept: Path) -> None:
    records = [json.loads(line) for line in lines(swept)]
    assert sorted(r["trial"] for r in records) == [0, 1, 2]
    plan = plan_trials(config(), 3)
    for record in records:
        spec = plan[record["trial"]]
        assert record["region"] == [str(path) for path, _ in spec.region]
        assert record["holdout_images"] == 20
        methods = record["methods"]
        assert list(methods) == [CHAIN, *BASELINES]
        budget = methods[CHAIN]["layer_scored"]
        assert 0 < sum(budget) < methods[CHAIN]["filters_total"]
        for entry in methods.values():
            assert entry["verified"], entry
            assert entry["layer_scored"] == budget
            assert sum(entry["layer_filters"]) == entry["filters_kept"]
            assert entry["region"]["images"] == 10 and entry["holdout"]["images"] == 20


def test_accuracy_is_measured_against_the_folder_labels(swept: Path) -> None:
    record = json.loads(lines(swept)[0])
    paths = [Path(p) for p in record["region"]]
    prep = make_preprocessing([None, 1, 28, 28], None, 28, None, None)
    images = load_image_files(paths, [p.parent.name for p in paths], prep)
    predicted = run(session(SAMPLE_MODEL), images.array).argmax(1)
    labels = np.array([int(p.parent.name) for p in paths])
    assert record["original_accuracy"]["region"] == pytest.approx(np.mean(predicted == labels))


def test_the_summary_is_the_mean_and_std_of_the_records(swept: Path) -> None:
    # In trial order, as the summary reads them: the log is in finishing order, which varies
    # with two workers, and a mean summed in another order can differ in its last bit.
    records = sorted((json.loads(line) for line in lines(swept)), key=lambda r: r["trial"])
    summary = json.loads((swept / "summary.json").read_text())
    assert summary == json.loads(json.dumps(summarise(records)))
    assert summary["trials"] == 3 and summary["unverified"] == 0
    for method in [CHAIN, *BASELINES]:
        agreement = [100 * r["methods"][method]["holdout"]["agreement"] for r in records]
        cell = summary["table"][method]["holdout agreement %"]
        assert cell["mean"] == pytest.approx(np.mean(agreement))
        assert cell["std"] == pytest.approx(np.std(agreement))
    assert len(summary["table"]) == len(BASELINES) + 2  # and the original
    for method in BASELINES:
        differences = [
            r["methods"][CHAIN]["holdout"]["agreement"]
            - r["methods"][method]["holdout"]["agreement"]
            for r in records
        ]
        assert summary["holdout_comparison"][method] == {
            "higher": sum(d > 0 for d in differences),
            "equal": sum(d == 0 for d in differences),
            "lower": sum(d < 0 for d in differences),
        }
    markdown = (swept / "summary.md").read_text()
    assert all(column in markdown for column, _, _ in METRICS)
    for plot in ("sparsity_vs_holdout.png", "layers_kept.png"):
        with Image.open(swept / plot) as image:
            assert image.format == "PNG" and image.width > 400


def test_a_rerun_runs_only_the_trials_not_yet_recorded(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    before = lines(out)
    starts = []
    result = run_sweep(config(), 4, out, workers=1, on_start=lambda p, t: starts.append((p, t)))
    assert starts == [(1, 4)] and result.ran == 1 and result.done == 4
    assert lines(out)[:3] == before
    assert json.loads(lines(out)[3])["trial"] == 3
    assert run_sweep(config(), 2, out, workers=1).ran == 0
    assert json.loads((out / "summary.json").read_text())["trials"] == 2


def test_a_sweep_with_other_settings_is_not_resumed(swept: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    with pytest.raises(ChainxError, match="other settings \\(optimise, per_class\\)"):
        run_sweep(config(per_class=4, optimise=OptimiseSettings(steps=5)), 3, out, workers=1)
    assert lines(out) == lines(swept)


def test_a_foreign_or_input_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ChainxError, match="holds no sweep"):
        run_sweep(config(), 1, tmp_path, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ChainxError, match="inside the input"):
        run_sweep(config(), 1, SAMPLE_HOLDOUT / "results", workers=1)


def test_failed_trials_are_reported_and_not_recorded(tmp_path: Path) -> None:
    data = unreadable_images(tmp_path / "data")
    result = run_sweep(config(data=data, holdout_per_class=1), 2, tmp_path / "out", workers=2)
    assert result.done == 0 and sorted(f.index for f in result.failures) == [0, 1]
    assert all("could be read" in f.message for f in result.failures)
    log = tmp_path / "out" / "trials.jsonl"
    assert not log.exists() or log.read_text() == ""


def test_a_killed_sweep_keeps_its_finished_trials_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = sweep_command(out, 3)
    process = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "trials.jsonl").exists() and lines(out):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    survived = lines(out)
    assert 1 <= len(survived) < 3
    result = run_sweep(config(), 3, out, workers=1)
    assert result.ran == 3 - len(survived)
    assert lines(out)[: len(survived)] == survived
    assert sorted(json.loads(line)["trial"] for line in lines(out)) == [0, 1, 2]


def _interruptible() -> None:
    """Ctrl-C as in a terminal, even when this test runs in a background job: such a job
    inherits SIGINT ignored, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_workers_at_once_and_keeps_the_finished_trials(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    # Many more trials than can finish between the first line and the signal.
    command = sweep_command(out, 40)
    process = subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not ((out / "trials.jsonl").exists() and lines(out)):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "rerun the same command to resume" in " ".join(output.split())
    assert "Traceback" not in output
    kept = lines(out)
    assert 1 <= len(kept) < 40
    assert json.loads((out / "summary.json").read_text())["trials"] == len(kept)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    assert not _group_alive(process.pid)  # no worker of the sweep is left running


def test_sigterm_stops_the_workers_too(tmp_path: Path) -> None:
    """`kill` reaches the sweep alone; its workers must not run on as orphans."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        sweep_command(out, 40), cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not ((out / "trials.jsonl").exists() and lines(out)):
        time.sleep(0.2)
    process.terminate()  # SIGTERM to the sweep's own process only
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    assert "rerun the same command to resume" in " ".join(output.split())
    assert json.loads((out / "summary.json").read_text())["trials"] == len(lines(out))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    assert not _group_alive(process.pid)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> str:
    """A Ray instance of its own, as `ray start --head --block` runs it: stopping that
    process stops its cluster only (`ray stop` would stop every Ray cluster here)."""
    pytest.importorskip("ray")
    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert head.poll() is None, "ray start --head failed"
            time.sleep(0.5)
    yield f"127.0.0.1:{port}"
    head.send_signal(signal.SIGINT)
    try:
        head.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def test_ray_runs_the_same_trials_into_the_same_log(
    ray_cluster: str, swept: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_sweep(config(), 2, out, workers=1, ray_address=ray_cluster)
    assert result.failures == [] and result.ran == 2
    records = {json.loads(line)["trial"]: json.loads(line) for line in lines(out)}
    local = {json.loads(line)["trial"]: json.loads(line) for line in lines(swept)}
    assert sorted(records) == [0, 1]
    for index, record in records.items():
        assert record["region"] == local[index]["region"]
        assert all(entry["verified"] for entry in record["methods"].values())
    # Resuming under Ray skips what is recorded, like the local pool.
    assert run_sweep(config(), 2, out, workers=1, ray_address=ray_cluster).ran == 0


def test_an_unreachable_ray_address_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(ChainxError, match="cannot connect to a Ray cluster"):
        run_sweep(config(), 1, tmp_path / "out", workers=1, ray_address=f"127.0.0.1:{_free_port()}")


def test_finetuned_baselines_keep_their_selection_and_say_so() -> None:
    from chainx.sweep.trial import run_trial

    settings = config(baselines=("random", "unscaled"), finetune_baselines=True)
    record = run_trial(plan_trials(settings, 1)[0])
    methods = record["methods"]
    assert {m: e["scores_finetuned"] for m, e in methods.items()} == {
        CHAIN: True,
        "random": True,
        "unscaled": False,
    }
    budget = methods[CHAIN]["layer_scored"]
    assert methods["unscaled"]["layer_scored"] == budget
    assert all(a <= b for a, b in zip(methods["random"]["layer_scored"], budget, strict=True))
    assert all(entry["verified"] for entry in methods.values())


def test_an_unreadable_image_is_skipped_and_named_or_with_strict_fails_the_trial(
    tmp_path: Path,
) -> None:
    from chainx.sweep.trial import run_trial

    data = tmp_path / "data"
    for label in ("3", "8"):
        (data / label).mkdir(parents=True)
        for path in sorted((SAMPLE_HOLDOUT / label).iterdir())[: 4 if label == "3" else 5]:
            shutil.copy(path, data / label / path.name)
    broken = data / "3" / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    spec = plan_trials(config(data=data, per_class=5), 1)[0]
    assert broken in [path for path, _ in spec.region]
    record = run_trial(spec)
    assert len(record["skipped_images"]) == 1 and str(broken) in record["skipped_images"][0]
    assert record["methods"][CHAIN]["region"]["images"] == 9
    strict = plan_trials(config(data=data, per_class=5, strict=True), 1)[0]
    with pytest.raises(ChainxError, match="broken.png: not a readable image"):
        run_trial(strict)


def test_workers_and_threads_follow_the_cores_the_process_may_use() -> None:
    """Under taskset (or a container's CPU set) to one core, one worker of one thread,
    not one per machine core."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from chainx.sweep.engines import usable_cores; print(usable_cores())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "1"
