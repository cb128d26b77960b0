"""trials.jsonl: one line per finished trial, appended and synced as each trial ends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class TrialLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        """The finished trials, one per index (the first record of an index wins).

        A line cut short by a kill mid-write is not a finished trial; it is dropped and
        the trial runs again.
        """
        if not self.path.exists():
            return []
        records: dict[int, dict[str, Any]] = {}
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("trial"), int):
                records.setdefault(record["trial"], record)
        return [records[index] for index in sorted(records)]

    def repair(self) -> None:
        """Cut a torn last line, so that the next record starts on a line of its own."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as file:
                file.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()
            os.fsync(file.fileno())
