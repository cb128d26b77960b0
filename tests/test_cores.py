"""The thread policy on a shared machine, and the allocator setting for scoring steps."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import pytest

from chainx.cores import ThreadGovernor, busy_cores, thread_count, usable_cores
from chainx.scoring.memory import keep_freed_memory


def steady_busy_cores() -> float:
    """The median of three looks, against other jobs' bursts."""
    return statistics.median(busy_cores() for _ in range(3))


def test_asked_threads_are_taken_as_given() -> None:
    assert thread_count(3) == (3, "--threads")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat")
def test_a_spinning_job_counts_as_busy_and_a_niced_one_does_not() -> None:
    """Against what the machine does without it (a niced job's kernel time counts as
    busy in /proc/stat, but a spinning loop has none)."""
    spin = [sys.executable, "-c", "while True: pass"]
    for niceness, busy in ((0, True), (19, False)):
        before = steady_busy_cores()
        if before >= 0.5:
            pytest.skip(f"{before:.1f} cores already busy: the measure needs a quiet machine")
        job = subprocess.Popen(["nice", "-n", str(niceness), *spin])
        try:
            time.sleep(0.5)
            seen = steady_busy_cores()
        finally:
            job.kill()
            job.wait()
        assert (seen - before >= 0.5) is busy, (niceness, before, seen)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat")
def test_threads_leave_the_busy_cores_to_their_jobs() -> None:
    if usable_cores() < 2:
        pytest.skip("one core: nothing to leave")
    job = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        code = "from chainx.cores import thread_count; import os; t, why = thread_count();"
        code += "print(t, os.environ.get('OMP_WAIT_POLICY'), why)"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    finally:
        job.kill()
        job.wait()
    threads, policy, why = out.stdout.split(" ", 2)
    assert int(threads) < usable_cores(), out.stdout
    assert policy == "PASSIVE"
    assert "busy" in why


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_on_glibc() -> None:
    assert keep_freed_memory()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_come_from_the_heap_and_stay_there() -> None:
    """In a child process, as the settings are process-wide: a 256 MiB block is taken from
    the heap, not mapped on its own, and freeing it leaves the heap as large as before."""
    code = (
        "import ctypes, ctypes.util\n"
        "from chainx.scoring.memory import keep_freed_memory\n"
        "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
        "names = 'arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]\n"
        "libc.mallinfo2.restype = Info\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "assert keep_freed_memory()\n"
        "before = libc.mallinfo2()\n"
        "block = libc.malloc(256 << 20)\n"
        "taken = libc.mallinfo2()\n"
        "libc.free(block)\n"
        "freed = libc.mallinfo2()\n"
        "print(taken.hblks - before.hblks, taken.arena >= 256 << 20, freed.arena == taken.arena)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "mallinfo2" in out.stderr:
        pytest.skip("glibc older than 2.33: no mallinfo2")
    assert out.stdout.split() == ["0", "True", "True"], (out.returncode, out.stderr)


def test_one_thread_count_serves_torch_and_onnxruntime() -> None:
    """In a child process: the count changes process-wide state that later tests would see."""
    code = (
        "import onnx, torch\n"
        "from onnx import helper\n"
        "from chainx.onnx.runtime import session\n"
        "from chainx.scoring.device import set_threads\n"
        "x = helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])\n"
        "y = helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])\n"
        "graph = helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])\n"
        "model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])\n"
        "model.ir_version = 8\n"
        "before = session(model).get_session_options().intra_op_num_threads\n"
        "set_threads(1)\n"
        "after = session(model).get_session_options().intra_op_num_threads\n"
        "chosen = session(model, threads=2).get_session_options().intra_op_num_threads\n"
        "print(before, torch.get_num_threads(), after, chosen)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1", "1", "2"]


class Machine:
    """A 2-core machine's /proc/stat and this process's CPU time, advanced by hand."""

    def __init__(self) -> None:
        self.now, self.times, self.own = 0.0, [0] * 8, 0.0

    def run(self, seconds: float, others: float, mine: float) -> None:
        """`others` and `mine` cores busy for `seconds` (100 jiffies a second a core)."""
        self.now += seconds
        busy, total = (others + mine) * 100 * seconds, 2 * 100 * seconds
        self.times[0] += int(busy)  # user
        self.times[3] += int(total - busy)  # idle
        self.own += mine * seconds


def test_the_governor_follows_the_load_other_jobs_put_on_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    machine = Machine()
    governor = ThreadGovernor(
        1,
        usable=2,
        read_times=lambda: list(machine.times),
        own_seconds=lambda: machine.own,
        clock=lambda: machine.now,
    )
    machine.run(10, others=1.0, mine=1.0)
    assert governor.check() is None  # the other job still runs
    machine.run(3, others=0.0, mine=1.0)
    assert governor.check() is None  # too soon to look again
    machine.run(10, others=0.0, mine=1.0)
    assert governor.check() is None  # it ended: one look is not enough
    machine.run(10, others=0.0, mine=1.0)
    assert governor.check() == 2 and governor.threads == 2
    machine.run(10, others=1.0, mine=1.0)  # another job starts: two cores, one of them ours
    assert governor.check() is None
    machine.run(10, others=1.0, mine=1.0)
    assert governor.check() == 1


def test_extract_follows_the_load_while_it_optimises(monkeypatch) -> None:
    # The step listener asks the governor; a new count goes to torch and onnxruntime and
    # is printed.
    from chainx.cli import extract as extract_cli
    from chainx.scoring.settings import StepReport

    class Freed:
        usable, threads = 2, 1

        def check(self) -> int:
            self.threads = 2
            return 2

    seen: list[int] = []
    monkeypatch.setattr("chainx.scoring.device.set_threads", seen.append)
    steps: list[StepReport] = []
    step = extract_cli.governed(steps.append, Freed())
    step(StepReport("sparsify", 1, 10, 0.0, 0.0, 5, 1.0))
    assert seen == [2] and len(steps) == 1
