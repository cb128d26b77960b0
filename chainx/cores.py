"""How many threads torch should take: the cores this process may use, less those other
jobs keep busy when it starts.

Why: OpenMP threads spin while they wait for each other. Two jobs that each take every
core of a 2-core machine ran 2.4 times slower each than alone on the MNIST sample, worse
than running them one after the other; sized to the free cores, with passive waiting, they
ran as fast as alone (docs/performance.md). Niced work (a background sweep) yields to us,
so it counts as free.

Why look again during a run: a look at the start sees a moment. A run begun as another
job ended kept one thread of two for its whole 10 minutes; `ThreadGovernor` looks at the
load other jobs put on the machine every few seconds of the optimisation and follows it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

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


# How often the governor looks, and how many looks in a row must agree before it acts.
LOOK_S = 10.0
AGREEING_LOOKS = 2


class ThreadGovernor:
    """The thread count for the usable cores that other jobs leave free, looked at again
    every LOOK_S seconds of a run: the cores busy with un-niced work, less this process's
    own use over the same time. A new count is taken once AGREEING_LOOKS looks in a row
    ask for it, so that a moment's load does not toggle it."""

    def __init__(
        self,
        threads: int,
        usable: int | None = None,
        read_times: Callable[[], list[int]] | None = None,
        own_seconds: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threads = threads
        self.usable = usable or usable_cores()
        self.read_times = read_times or _cpu_times
        self.own_seconds = own_seconds or _own_seconds
        self.clock = clock
        self.last = self._look()
        self.asked: list[int] = []

    def _look(self) -> tuple[float, list[int], float] | None:
        try:
            return self.clock(), self.read_times(), self.own_seconds()
        except (OSError, ValueError, IndexError):
            return None

    def check(self) -> int | None:
        """The new thread count where the load has changed for long enough, else None."""
        if self.last is None or self.clock() - self.last[0] < LOOK_S:
            return None
        look = self._look()
        if look is None:
            return None
        (then, before, own_before), (now, after, own_after) = self.last, look
        self.last = look
        delta = [b - a for a, b in zip(before, after, strict=True)]
        total = sum(delta)
        if total <= 0 or now <= then:
            return None
        busy = (os.cpu_count() or 1) * (delta[0] + delta[2] + sum(delta[5:8])) / total
        others = max(0.0, busy - (own_after - own_before) / (now - then))
        wanted = max(1, self.usable - round(others))
        self.asked = [*self.asked, wanted][-AGREEING_LOOKS:]
        if wanted == self.threads or self.asked.count(wanted) < AGREEING_LOOKS:
            return None
        self.threads = wanted
        return wanted


def _own_seconds() -> float:
    """CPU seconds this process has used, all its threads together."""
    times = os.times()
    return times.user + times.system
