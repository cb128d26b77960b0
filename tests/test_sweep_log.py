"""trials.jsonl: finished trials survive; a line torn by a kill is dropped and cut."""

from __future__ import annotations

import json
from pathlib import Path

from chainx.sweep.log import TrialLog


def test_records_are_read_back_in_trial_order_first_record_wins(tmp_path: Path) -> None:
    log = TrialLog(tmp_path / "trials.jsonl")
    assert log.records() == []
    for index, value in [(2, "a"), (0, "b"), (2, "c")]:
        log.append({"trial": index, "value": value})
    assert [(r["trial"], r["value"]) for r in log.records()] == [(0, "b"), (2, "a")]


def test_a_torn_last_line_is_not_a_trial_and_repair_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    whole = json.dumps({"trial": 0, "value": 1}) + "\n"
    path.write_text(whole + '{"trial": 1, "val')
    log = TrialLog(path)
    assert [r["trial"] for r in log.records()] == [0]
    log.repair()
    assert path.read_text() == whole
    log.append({"trial": 1, "value": 2})
    assert [r["trial"] for r in log.records()] == [0, 1]


def test_lines_that_are_not_trial_records_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "trials.jsonl"
    path.write_text('[1, 2]\n{"trial": "x"}\n\n{"trial": 3}\n')
    assert TrialLog(path).records() == [{"trial": 3}]
