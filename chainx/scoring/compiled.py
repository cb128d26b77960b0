"""torch.compile for the scored network, where the optimisation is long enough to pay for it.

Why: in eager torch every score Mul is one more pass over its activation forward and two
backward (the input's gradient, and the product summed for the score's), and the ReLU6 after
it another; on a memory-bound network (EfficientNet-Lite0's depthwise layers) those passes
are most of what a scored step adds to a plain one. Inductor fuses them into the kernels
around them: a Lite0 step at batch 20 on the 2-core CPU went from about 555 ms to 362 ms,
after about 20 s of compilation (docs/performance.md). The compilation only pays on long
optimisations, hence `worth_compiling`.

The compiled network computes the same function; its sums run in another order, so the
scores may differ from an eager run's in the last bits. The chain is cut from the original's
weights either way and verified in onnxruntime as always.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable

import torch
from torch import fx, nn

from chainx.scoring.model import ScoringModel, replace_modules
from chainx.scoring.objective import Objective
from chainx.scoring.reduced import worth_reducing
from chainx.scoring.settings import OptimiseSettings, StepReport

# Compile when the eager optimisation is projected to take longer than this: compilation
# costs 20–40 s on Lite0 and then saves about a fifth of every step there (0.475 → 0.38 s).
COMPILE_WORTH_S = 120.0


def compiler_missing() -> str | None:
    """Why inductor cannot build CPU kernels here, or None: it needs a C++ compiler."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        return f"no C++ compiler ({compiler!r} or g++) on PATH, which torch.compile needs"
    return None


def worth_compiling(mode: str, device: torch.device, step_s: float, steps_left: int) -> bool:
    """`mode` "always", "never" or "auto": compile on the CPU when the steps left would take
    longer than COMPILE_WORTH_S eagerly. Auto leaves GPUs alone: untested there."""
    if mode != "auto":
        return mode == "always"
    return device.type == "cpu" and step_s * steps_left > COMPILE_WORTH_S


class ConstantReshape(nn.Module):
    """onnx2torch's Reshape with its shape as Python ints.

    onnx2torch reads the shape tensor when it runs (`torch.any(shape == 0)`), which
    torch.compile cannot trace; a shape that is an initializer is known before.
    """

    def __init__(self, shape: list[int]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor, _shape: torch.Tensor) -> torch.Tensor:
        return x.reshape([x.shape[i] if size == 0 else size for i, size in enumerate(self.shape)])


def constant_reshapes(net: fx.GraphModule) -> int:
    """Replace every onnx2torch Reshape whose shape is an initializer by a ConstantReshape;
    returns how many."""
    return replace_modules(
        net, "OnnxReshape", lambda _, shape: ConstantReshape([int(v) for v in shape.tolist()])
    )


def compiled_network(net: fx.GraphModule) -> nn.Module:
    """The network for torch.compile: its shapes never change within an optimisation
    (`dynamic=False`), and a new batch size compiles once more."""
    constant_reshapes(net)
    # Inductor's C++ builder warns, on every CPU-only machine, that it found no CUDA runtime.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(net, dynamic=False)


def compile_if_worth(
    scoring: ScoringModel,
    objective: Objective,
    settings: OptimiseSettings,
    step_s: float,
    kept: int,
    on_step: Callable[[StepReport], None],
) -> str:
    """Compile the scored network when the steps left are worth it (`worth_compiling`);
    returns how the steps run: "compiled in N s", "eager", or why not compiled."""
    phases = 2 if settings.keep_ratio is not None and not settings.gradual else 1
    if settings.keep_ratio is not None and worth_reducing(settings.keep_ratio):
        phases -= 1  # the budget's fine-tuning runs on the shrunk network, eagerly
    steps_left = settings.steps - 2 + phases * settings.finetune_steps
    device = torch.device(settings.device)
    if not worth_compiling(settings.compile, device, step_s, steps_left):
        return "eager"
    if missing := compiler_missing() if device.type == "cpu" else None:
        return f"eager: {missing}"
    started = time.perf_counter()
    on_step(StepReport("compile", 0, 1, 0.0, 0.0, kept, 0.0))
    try:
        scoring.use_compiled(compiled_network(scoring.net))
        # Compile forward and backward now, so that a failure falls back here, not mid-step.
        for batch, _ in objective.clean():
            scoring(batch).sum().backward()
    except Exception as exc:  # inductor raises many types; any of them means eager
        scoring.use_compiled(None)
        return f"eager: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]})"
    finally:
        for parameter in scoring.learnt():
            parameter.grad = None
    on_step(StepReport("compile", 1, 1, 0.0, 0.0, kept, 0.0))
    return f"compiled in {time.perf_counter() - started:.1f} s"
