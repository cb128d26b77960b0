"""Errors that chainx reports to the user as a message, never as a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager


class ChainxError(Exception):
    """A user error: the message names the bad input and the fix. Exit code 2."""

    exit_code = 2


class VerificationError(Exception):
    """The exported chain does not match what it must reproduce. Exit code 1."""

    exit_code = 1


class UnfaithfulChainError(ChainxError):
    """The optimisation ended with a chain that keeps half or fewer of the region's
    predictions: it explains nothing, so none is written. Exit code 1."""

    exit_code = 1


class NodeFault(Exception):
    """An op failed while a graph ran (in torch or onnxruntime): which node, and why."""

    def __init__(self, node: str, op_type: str, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.node = node
        self.op_type = op_type
        self.cause = cause


class InternalError(Exception):
    """A fault in chainx, not in the input: the message names the stage and, where known,
    the node it was at. Exit code 1."""

    exit_code = 1

    def __init__(self, stage: str, cause: BaseException) -> None:
        node = _node_of(cause)
        where = f"in stage {stage!r}" + (f", at node {node}" if node else "")
        detail = str(cause) if isinstance(cause, NodeFault) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{where}: {detail}")
        self.stage = stage


# How onnxruntime names the node in a run-time failure.
_ORT_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def _node_of(cause: BaseException) -> str | None:
    if isinstance(cause, NodeFault):
        return f"{cause.node!r} ({cause.op_type})"
    found = _ORT_NODE.search(str(cause))
    return f"{found.group(2)!r} ({found.group(1)})" if found else None


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Run a pipeline stage: a failure that is not a user's error becomes an InternalError
    that names the stage (and the node, where the cause knows it)."""
    try:
        yield
    except (ChainxError, VerificationError, InternalError):
        raise
    except Exception as exc:  # noqa: BLE001 - every other failure is chainx's own
        raise InternalError(name, exc) from exc
