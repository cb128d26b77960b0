"""Where trials run: a local process pool, or Ray tasks on an existing Ray cluster.

Both run the same function, `run_trial`, and yield each record as its trial finishes; the
caller writes it down before asking for the next.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from chainx.cores import usable_cores
from chainx.errors import ChainxError
from chainx.sweep.plan import TrialSpec
from chainx.sweep.trial import run_trial


@dataclass
class TrialFailure:
    """A trial that raised: reported, not recorded, so that a rerun tries it again."""

    index: int
    message: str


Outcome = dict[str, Any] | TrialFailure


def gpu_count() -> int:
    from chainx.scoring.device import gpu_count as torch_gpu_count  # torch loads here

    return torch_gpu_count()


def default_workers() -> int:
    """One worker per GPU, or else one per usable core (each trial then runs on one thread)."""
    return gpu_count() or usable_cores()


def _start_worker(gpus: Any, threads: int) -> None:
    # Runs in each fresh worker before torch loads: pin one GPU, size the thread pools.
    # Ctrl-C reaches the whole process group; the parent handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from chainx.scoring.device import set_threads  # torch loads here, after the environment

    set_threads(threads)


def _failure(spec: TrialSpec, error: BaseException) -> TrialFailure:
    return TrialFailure(spec.index, f"{type(error).__name__}: {error}")


def _attempt(spec: TrialSpec) -> Outcome:
    """`run_trial` in a pool worker, its exception returned as the trial's failure."""
    try:
        return run_trial(spec)
    except Exception as error:
        return _failure(spec, error)


def run_local(specs: list[TrialSpec], workers: int) -> Iterator[Outcome]:
    """Trials in a pool of `workers` spawned processes (spawn: torch does not survive fork).

    When the caller stops early (an interrupt), the workers are terminated at once rather
    than left to finish trials whose results would not be recorded.
    """
    context = multiprocessing.get_context("spawn")
    gpus = gpu_count()
    queue = None
    if gpus:
        queue = context.Manager().Queue()
        for index in range(workers):
            queue.put(index % gpus)
    threads = max(1, usable_cores() // workers)
    pool = context.Pool(workers, initializer=_start_worker, initargs=(queue, threads))
    finished = False
    try:
        yield from pool.imap_unordered(_attempt, specs, chunksize=1)
        finished = True
    finally:
        if finished:
            pool.close()
        else:
            pool.terminate()
        pool.join()


def _check_reachable(address: str) -> None:
    """Fail at once on a HOST:PORT nobody listens on; ray.init would retry for minutes."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise ChainxError(
            f"--ray {address}: cannot connect to a Ray cluster there ({exc.strerror or exc}). "
            "Start one with `ray start --head`, or give the address it printed."
        ) from None


def run_ray(specs: list[TrialSpec], address: str) -> Iterator[Outcome]:
    """Trials as Ray tasks on the cluster at `address` ("auto": the one this machine runs),
    one GPU per task where the cluster has GPUs."""
    try:
        import ray
    except ImportError:
        raise ChainxError(
            "--ray: the ray package is not installed. Install it with `pip install ray`, "
            "or leave out --ray to use the local process pool."
        ) from None
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ChainxError(
            f"--ray {address}: cannot connect to a Ray cluster ({exc}). Start one with "
            "`ray start --head`, or give its address as HOST:PORT."
        ) from None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(run_trial).options(num_cpus=1, num_gpus=1 if gpus else 0)
        pending = {task.remote(spec): spec for spec in specs}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    spec = pending.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield _failure(spec, getattr(exc, "cause", None) or exc)
        finally:
            for ref in pending:
                ray.cancel(ref)
    finally:
        ray.shutdown()
