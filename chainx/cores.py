"""How many threads torch should take: the cores this process may use, less those other
jobs keep busy when it starts.

Why: OpenMP threads spin while they wait for each other. Two jobs that each take every
core of a 2-core machine ran 2.4 times slower each than alone on the MNIST sample, worse
than running them one after the other; sized to the free cores, with passive waiting, they
ran as fast as alone (docs/performance.md). Niced work (a background sweep) yields to us,
so it counts as free.
"""

from __future__ import annotations

import os
import time

SAMPLE_S = 0.2  # how long /proc/stat is watched


def usable_cores() -> int:
    """The cores this process may run on: fewer than the machine's under taskset or a
    container's CPU set, where a thread per machine core would oversubscribe them."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def busy_cores() -> float:
    """Cores kept busy by un-niced work over a short look at /proc/stat (0 where there is
    none to read)."""
    try:
        first = _cpu_times()
        time.sleep(SAMPLE_S)
        second = _cpu_times()
    except (OSError, ValueError, IndexError):
        return 0.0
    delta = [b - a for a, b in zip(first, second, strict=True)]
    total = sum(delta)
    if total <= 0:
        return 0.0
    # user, nice, system, idle, iowait, irq, softirq, steal: niced, idle and iowait are free.
    busy = delta[0] + delta[2] + delta[5] + delta[6] + delta[7]
    return (os.cpu_count() or 1) * busy / total


def _cpu_times() -> list[int]:
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return [int(value) for value in fields[1:9]]


def thread_count(requested: int = 0) -> tuple[int, str]:
    """Threads for torch, and why: `requested` if given, else the usable cores not busy.
    On a busy machine OpenMP is also told to wait passively (before torch loads)."""
    usable = usable_cores()
    if requested:
        return requested, "--threads"
    busy = round(busy_cores())
    if busy == 0:
        return usable, f"one per core ({usable})"
    threads = max(1, usable - busy)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return threads, f"{busy} of {usable} cores busy with other jobs; --threads to choose"
