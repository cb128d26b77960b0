"""Fine-tuning's shrunk network (`scoring.reduced`): the masked network's outputs and score
gradients, on the tiny architectures and the samples, with fewer channels computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    MODELS,
    REPO,
    SAMPLE_MODEL,
    SAMPLE_REGION,
    inputs_for,
    random_multipliers,
    tiny_model,
)

from chainx.images import load_images, make_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.model import ScoringModel
from chainx.scoring.optimise import OptimiseSettings, optimise
from chainx.scoring.reduced import ReducedNetwork, reduce, reduced_model, shrunk_to_masks

SAMPLES = {
    "sample": SAMPLE_MODEL,
    "zoo-style (fixed batch)": REPO / "sample_models" / "mnist_zoo_style.onnx",
    "vit (heads, neurons)": REPO / "sample_models" / "cifar_vit.onnx",
}


def _scoring(model: object, keep: float, seed: int = 0) -> ScoringModel:
    """A scoring model with random scores, masked to about `keep` of its filters."""
    points = find_score_points(model)
    scoring = ScoringModel(model, points)
    values = random_multipliers(points, keep, seed)
    with torch.no_grad():
        for score, point in zip(scoring.scores, points, strict=True):
            score.copy_(torch.from_numpy(values[point.layer]))
    scoring.masks = [torch.from_numpy(values[p.layer] != 0) for p in points]
    return scoring


def _step(scoring: ScoringModel, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The outputs and the gradients into scores and gates of a loss that reads every logit."""
    for parameter in scoring.learnt():
        parameter.grad = None
    out = scoring(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).square().sum().backward()
    return out.detach(), [p.grad.clone() for p in (*scoring.scores, scoring.gates)]


def _compare(scoring: ScoringModel, x: torch.Tensor) -> None:
    full_out, full_grads = _step(scoring, x)
    with shrunk_to_masks(scoring) as shrunk:
        assert shrunk
        out, grads = _step(scoring, x)
    scale = float(full_out.abs().max())
    assert scale > 0
    assert float((out - full_out).abs().max()) <= 1e-4 * scale
    for got, want in zip(grads, full_grads, strict=True):
        assert float((got - want).abs().max()) <= 1e-4 * max(float(want.abs().max()), 1e-6)
    assert scoring.reduced is None  # the whole network is back after the block


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_shrunk_network_has_the_masked_outputs_and_gradients(name: str) -> None:
    model = tiny_model(name)
    _compare(_scoring(model, keep=0.4), torch.from_numpy(inputs_for(model, count=3)))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_shrunk_sample_has_the_masked_outputs_and_gradients(name: str) -> None:
    model = normalise(load_model(SAMPLES[name]))
    _compare(_scoring(model, keep=0.3), torch.from_numpy(inputs_for(model, count=4)))


def test_each_multiplier_input_carries_the_kept_filters_only() -> None:
    model = normalise(load_model(SAMPLE_MODEL))
    points = find_score_points(model)
    masks = [np.asarray(random_multipliers(points, 0.3, 1)[p.layer] != 0) for p in points]
    masks[1][:] = False  # a whole layer off
    shrunk, layouts = reduced_model(model, points, masks)
    assert layouts[1] is None or len(layouts[1]) == 0
    for mask, layout in zip(masks, layouts, strict=True):
        if layout is not None:
            assert set(layout.tolist()) <= set(np.flatnonzero(mask).tolist())
    inputs = [i.name for i in shrunk.graph.input[1:]]
    assert inputs == [
        p.multiplier for p, lay in zip(points, layouts, strict=True) if lay is not None
    ]
    widths = [
        d.dim_value for i in shrunk.graph.input[1:] for d in i.type.tensor_type.shape.dim[1:2]
    ]
    assert widths == [len(lay) for lay in layouts if lay is not None]
    assert sum(widths) < sum(len(m) for m in masks) / 2


def test_a_mask_that_keeps_most_filters_runs_the_whole_network() -> None:
    scoring = _scoring(normalise(load_model(SAMPLE_MODEL)), keep=0.9)
    with shrunk_to_masks(scoring) as shrunk:
        assert not shrunk
        assert scoring.reduced is None


def test_fine_tuning_runs_shrunk_and_its_chain_is_the_masked_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole optimisation on the sample at a 10 % budget: both fine-tunings run on a
    shrunk network, and the chain's multipliers give the same outputs there as on the
    whole masked network, which is what chain.onnx is verified against."""
    model = normalise(load_model(SAMPLE_MODEL))
    images = load_images(SAMPLE_REGION, make_preprocessing([None, 1, 28, 28], None, 28, None, None))
    scoring = ScoringModel(model, find_score_points(model))
    used: list[ReducedNetwork | None] = []
    original = ScoringModel.use_reduced
    monkeypatch.setattr(
        ScoringModel, "use_reduced", lambda self, r: (used.append(r), original(self, r))[1]
    )
    settings = OptimiseSettings(steps=100, finetune_steps=20, keep_ratio=0.1, gradual=False)
    result = optimise(scoring, images.array, "logits", settings)
    assert [r is not None for r in used] == [True, False, True, False]
    kept = [torch.from_numpy(result.multipliers[p.layer] != 0) for p in scoring.points]
    assert 0 < sum(int(k.sum()) for k in kept) <= 0.1 * sum(scoring.channels) + 1
    values = [torch.from_numpy(result.multipliers[p.layer]) for p in scoring.points]
    reduced = reduce(model, scoring.points, kept)
    with torch.no_grad():
        shrunk = scoring.shrunk_run(reduced, torch.from_numpy(images.array), values)
    whole = torch.from_numpy(scoring.masked(images.array, result.multipliers))
    assert float((shrunk - whole).abs().max()) <= 1e-4 * float(whole.abs().max())
    assert torch.equal(shrunk.argmax(-1), whole.argmax(-1))


def test_a_mask_whose_filters_reach_no_output_fine_tunes_the_whole_network() -> None:
    """Every later layer masked: the kept filters of the first cannot change the outputs,
    the shrunk network would have no multiplier input, and a gradient step must still run."""
    model = tiny_model("plain")
    scoring = _scoring(model, keep=1.0)
    scoring.masks = [torch.zeros_like(mask) for mask in scoring.masks]
    scoring.masks[0][:2] = True
    x = torch.from_numpy(inputs_for(model, count=2))
    with shrunk_to_masks(scoring) as shrunk:
        assert not shrunk
        _, grads = _step(scoring, x)
    assert all(float(g.abs().max()) == 0 for g in grads)


def test_a_graph_that_cannot_shrink_fine_tunes_the_whole_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import chainx.scoring.reduced as reduced

    def refuse(*args: object) -> None:
        raise ValueError("a graph the surgery cannot take")

    monkeypatch.setattr(reduced, "reduce", refuse)
    model = normalise(load_model(SAMPLE_MODEL))
    scoring = _scoring(model, keep=0.3)
    x = torch.from_numpy(inputs_for(model, count=2))
    want, _ = _step(scoring, x)
    with shrunk_to_masks(scoring) as shrunk:
        assert not shrunk
        got, grads = _step(scoring, x)
    assert torch.equal(got, want)
    assert any(float(g.abs().max()) > 0 for g in grads)
