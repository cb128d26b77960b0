"""torch.compile for long optimisations: when it is used, what it computes, and the fallback."""

from __future__ import annotations

import pytest
import torch
from conftest import SAMPLE_MODEL, SAMPLE_REGION

from chainx.images import load_images, make_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.compiled import (
    COMPILE_WORTH_S,
    ConstantReshape,
    compiled_network,
    worth_compiling,
)
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import OptimiseSettings, optimise

MODEL = normalise(load_model(SAMPLE_MODEL))
IMAGES = load_images(SAMPLE_REGION, make_preprocessing([None, 1, 28, 28], None, 28, None, None))
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_compiles_on_the_cpu_only_when_the_steps_left_outlast_compilation() -> None:
    assert worth_compiling("auto", CPU, 0.5, int(COMPILE_WORTH_S / 0.5) + 1)
    assert not worth_compiling("auto", CPU, 0.5, int(COMPILE_WORTH_S / 0.5) - 1)
    assert not worth_compiling("auto", CUDA, 10.0, 1000)
    assert worth_compiling("always", CUDA, 0.0, 0)
    assert not worth_compiling("never", CPU, 10.0, 1000)


def test_a_constant_reshape_becomes_python_ints_and_computes_the_same() -> None:
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    images = torch.from_numpy(IMAGES.array)
    before = scoring.unscored(images)
    scoring.use_compiled(compiled_network(scoring.net))
    modules = [type(m) for m in scoring.net.modules()]
    assert ConstantReshape in modules
    assert "OnnxReshape" not in {m.__name__ for m in modules}
    torch.testing.assert_close(scoring.unscored(images), before, rtol=0, atol=0)


def _optimise(compile: str) -> tuple[object, ScoringModel]:
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    settings = OptimiseSettings(steps=40, finetune_steps=10, keep_ratio=0.2, compile=compile)
    return optimise(scoring, IMAGES.array, "logits", settings), scoring


def test_a_compiled_optimisation_follows_the_eager_one() -> None:
    compiled, scoring = _optimise("always")
    eager, _ = _optimise("never")
    assert compiled.compiled.startswith("compiled in ") and scoring.compiled is not None
    assert eager.compiled == "eager"
    # The same function with sums in another order: the same losses to float precision
    # over the first steps, before thresholds amplify the last bits.
    for ours, theirs in zip(compiled.history[:10], eager.history[:10], strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=1e-4)
    # The scored network runs compiled; eager, it computes the same on the region.
    region, multipliers = torch.from_numpy(IMAGES.array), scoring.multipliers()
    torch.testing.assert_close(
        scoring.run(region, multipliers, scoring.compiled),
        scoring.run(region, multipliers),
        rtol=1e-4,
        atol=1e-5,
    )


def test_without_a_cpp_compiler_the_steps_run_eagerly_and_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CXX", raising=False)
    result, scoring = _optimise("always")
    assert result.compiled.startswith("eager: no C++ compiler")
    assert scoring.compiled is None
