"""The scoring device end to end: a chain optimised on it, exported and verified exact.

Runs on the CPU everywhere; `CHAINX_TEST_DEVICE=cuda` (tools/gpu_check.sh on a GPU
machine) runs it on the GPU, and it skips where torch sees none.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import SAMPLE_MODEL, SAMPLE_REGION

import chainx
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.model import ScoringModel

DEVICE = os.environ.get("CHAINX_TEST_DEVICE", "cpu")


@pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="torch sees no CUDA device"
)
def test_a_chain_scored_on_the_device_is_exact_in_onnxruntime() -> None:
    result = chainx.extract(
        SAMPLE_MODEL,
        SAMPLE_REGION,
        resize=28,
        steps=40,
        finetune_steps=10,
        filter_images=0,
        device=DEVICE,
    )
    assert result.record["settings"]["device"] == DEVICE
    assert result.verification.passed
    assert result.metrics["exact_copies"]["mismatched"] == []
    assert result.metrics["deploy"]["passed"]


def test_moving_the_scoring_model_moves_its_masks() -> None:
    # The first GPU run failed here: the masks stayed on the CPU under `.to("cuda")`.
    # The meta device shows the same on any machine.
    model = normalise(load_model(SAMPLE_MODEL))
    scoring = ScoringModel(model, find_score_points(model)).to("meta")
    assert {mask.device.type for mask in scoring.masks} == {"meta"}
    assert {mask.dtype for mask in scoring.masks} == {torch.bool}
    assert {score.device.type for score in scoring.scores} == {"meta"}
