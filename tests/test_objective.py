"""The fidelity term of the objective on hand-made outputs: temperature and the region's
classes."""

from __future__ import annotations

import pytest
import torch
from conftest import SAMPLE_MODEL, SAMPLE_REGION

from chainx.images import load_images, make_preprocessing
from chainx.onnx.load import load_model
from chainx.onnx.normalise import normalise
from chainx.onnx.score_points import find_score_points
from chainx.scoring.model import ScoringModel
from chainx.scoring.objective import Objective

MODEL = normalise(load_model(SAMPLE_MODEL))


def _objective(**options: float) -> Objective:
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    region = torch.zeros(2, 1, 28, 28)
    return Objective(scoring, region, "logits", 32, False, 0, **options)


def _log_softmax(*rows: list[float]) -> torch.Tensor:
    return torch.log_softmax(torch.tensor(rows), dim=-1)


def test_the_plain_fidelity_is_the_kl_summed_over_the_batch() -> None:
    p = _log_softmax([2.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    q = _log_softmax([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    expected = float((p[0].exp() * (p[0] - q[0])).sum())  # the second row agrees exactly
    assert float(_objective().fidelity(p, q)) == pytest.approx(expected)


def test_a_higher_temperature_weighs_the_other_classes() -> None:
    # The chain keeps the top-1 class and its probability but swaps the two others.
    p = _log_softmax([5.0, 2.0, 0.0])
    q = torch.stack([p[0, 0], p[0, 2], p[0, 1]])[None]
    plain = float(_objective().fidelity(p, q))
    soft = float(_objective(temperature=4.0).fidelity(p, q))
    assert 0 < plain < soft
    t = 4.0
    ps, qs = torch.log_softmax(p / t, -1), torch.log_softmax(q / t, -1)
    assert soft == pytest.approx(float((ps.exp() * (ps - qs)).sum()) * t * t)


def test_the_class_term_is_the_kl_between_the_region_classes_only() -> None:
    objective = _objective(class_weight=2.0)
    objective.classes = torch.tensor([0, 2])  # as the original's top-1 on a region
    p = _log_softmax([3.0, 5.0, 1.0])
    q = _log_softmax([1.0, 5.0, 1.0])  # the same except between the region's classes
    restricted_p = torch.log_softmax(torch.tensor([3.0, 1.0]), -1)
    restricted_q = torch.log_softmax(torch.tensor([1.0, 1.0]), -1)
    within = float((restricted_p.exp() * (restricted_p - restricted_q)).sum())
    total = float(_objective().fidelity(p, q)) + 2.0 * within
    assert float(objective.fidelity(p, q)) == pytest.approx(total)


def test_the_region_classes_are_the_ones_the_original_predicts_on_the_region() -> None:
    # The sample's region: digits 3 and 8, which the trained sample model recognises.
    images = load_images(SAMPLE_REGION, make_preprocessing([None, 1, 28, 28], None, 28, None, None))
    scoring = ScoringModel(MODEL, find_score_points(MODEL))
    region = torch.from_numpy(images.array)
    objective = Objective(scoring, region, "logits", 32, False, 0, class_weight=1.0)
    assert objective.region_classes().tolist() == [3, 8]
