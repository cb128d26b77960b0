"""A sweep from start (or resume) to summary: plan, skip the finished, run, record, sum up."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chainx.errors import ChainxError
from chainx.outputs import write_atomic
from chainx.sweep.engines import Outcome, TrialFailure, run_local, run_ray
from chainx.sweep.log import TrialLog
from chainx.sweep.plan import SweepConfig, plan_trials
from chainx.sweep.summary import SUMMARY_FILES, write_summary

CONFIG_FILE = "sweep.json"
LOG_FILE = "trials.jsonl"


@dataclass
class SweepResult:
    out: Path
    done: int
    ran: int
    failures: list[TrialFailure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _check_out(out: Path, config: SweepConfig) -> None:
    """A new folder, an empty one, or an earlier sweep with the same settings (resumed)."""
    if out.exists() and not out.is_dir():
        raise ChainxError(f"--out {out}: exists and is not a folder. Choose another --out.")
    resolved = out.resolve()
    for source in [config.data, config.holdout_data]:
        if source is not None and source.resolve() in [resolved, *resolved.parents]:
            raise ChainxError(
                f"--out {out}: is inside the input {source}. Choose a folder outside the inputs."
            )
    recorded_path = out / CONFIG_FILE
    if recorded_path.exists():
        try:
            recorded = json.loads(recorded_path.read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ChainxError(
                f"--out {out}: its {CONFIG_FILE} cannot be read, so the sweep there cannot "
                "be resumed safely. Choose another --out."
            ) from None
        changed = config.differences(recorded)
        if changed:
            raise ChainxError(
                f"--out {out}: holds a sweep with other settings ({', '.join(changed)}), so "
                "its trials cannot be resumed with these. Choose another --out, or rerun "
                "with the settings in its sweep.json."
            )
        return
    if out.is_dir() and any(out.iterdir()):
        raise ChainxError(
            f"--out {out}: the folder is not empty and holds no sweep ({CONFIG_FILE}). "
            "Choose another --out."
        )


def run_sweep(
    config: SweepConfig,
    trials: int,
    out: Path,
    workers: int,
    ray_address: str | None = None,
    on_outcome: Callable[[Outcome, int, int], None] = lambda outcome, done, total: None,
    on_start: Callable[[int, int], None] = lambda pending, total: None,
) -> SweepResult:
    """Run the trials not yet in `out/trials.jsonl` and write the summary of all of them.

    Each trial's record is appended as it finishes, so an interrupt loses only the trials
    still running; the summary is rewritten from the log even then.
    """
    if trials < 1:
        raise ChainxError("--trials must be at least 1.")
    _check_out(out, config)
    specs = plan_trials(config, trials)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / CONFIG_FILE,
        json.dumps({"config": config.to_json(), "trials": trials}, indent=2).encode(),
    )
    log = TrialLog(out / LOG_FILE)
    log.repair()
    finished = {record["trial"] for record in log.records()}
    pending = [spec for spec in specs if spec.index not in finished]
    on_start(len(pending), trials)
    result = SweepResult(out=out, done=len(finished & {s.index for s in specs}), ran=0)
    try:
        if pending:
            outcomes = (
                run_ray(pending, ray_address)
                if ray_address
                else run_local(pending, min(workers, len(pending)))
            )
            for outcome in outcomes:
                if isinstance(outcome, TrialFailure):
                    result.failures.append(outcome)
                else:
                    log.append(outcome)
                    result.done += 1
                    result.ran += 1
                on_outcome(outcome, result.done, trials)
    finally:
        records = [r for r in log.records() if r["trial"] < trials]
        result.summary = write_summary(records, out)
    return result


OUTPUT_FILES = (CONFIG_FILE, LOG_FILE, *SUMMARY_FILES)
