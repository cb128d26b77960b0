"""Fidelity metrics, frontier AUC and paired statistics on hand-made logits and numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from chainx.chain.metrics import fidelity_metrics, frontier_auc, mean_ci, paired_test
from chainx.chain.verify import fidelity, log_softmax

T_975_3 = 3.182446  # Student t, 97.5 % quantile, 3 degrees of freedom (from a table)
T_975_4 = 2.776445  # the same, 4 degrees of freedom


def test_within_class_agreement_counts_only_the_region_classes() -> None:
    original = np.array([[5.0, 1, 0, 0], [0, 5, 0, 0], [4, 0, 0, 0]])
    # Image 0: the chain's top-1 is class 3, but over classes {0, 1} it still says 0.
    # Image 2: it prefers 1 over 0 inside the region classes.
    chain = np.array([[1.0, 0, 0, 6], [0, 4, 0, 0], [1, 3, 0, 0]])
    metrics = fidelity_metrics(chain, original, "logits", [0, 1])
    assert metrics["images"] == 3
    assert metrics["agreement"] == pytest.approx(1 / 3)
    assert metrics["class_agreement"] == pytest.approx(2 / 3)
    assert metrics["folder_class_agreement"] is None


def test_folder_class_agreement_restricts_both_sides_to_the_folder_classes() -> None:
    original = np.array([[5.0, 0, 1, 2], [5, 2, 1, 0]])
    chain = np.array([[5.0, 0, 2, 1], [5, 2, 1, 0]])
    metrics = fidelity_metrics(chain, original, "logits", [0], folder_classes=[2, 3])
    # Over {2, 3} the original says 3 then 2; the chain says 2 then 2.
    assert metrics["agreement"] == 1.0
    assert metrics["folder_class_agreement"] == 0.5


def test_agreement_and_kl_match_verify_fidelity() -> None:
    rng = np.random.default_rng(0)
    original = rng.normal(size=(12, 5))
    chain = original + rng.normal(scale=1.5, size=(12, 5))
    metrics = fidelity_metrics(chain, original, "logits", [1, 3])
    reference = fidelity(chain, original, "logits", [1, 3])
    assert metrics["agreement"] == pytest.approx(reference.agreement)
    assert metrics["class_agreement"] == pytest.approx(reference.class_agreement)
    assert metrics["mean_kl"] == pytest.approx(reference.mean_kl)
    json.dumps(metrics)  # JSON-ready: plain floats, ints, dicts and None


def test_mean_kl_by_hand_on_probabilities() -> None:
    original = np.array([[0.5, 0.5]])
    chain = np.array([[0.25, 0.75]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    metrics = fidelity_metrics(chain, original, "probabilities", [0, 1])
    assert metrics["mean_kl"] == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["logits", "probabilities", "log-probabilities"])
def test_halved_margins_retain_half_in_every_output_kind(kind: str) -> None:
    rng = np.random.default_rng(1)
    original_logits = rng.normal(scale=3, size=(9, 6))
    halved_logits = original_logits / 2  # every log-probability difference halves

    def as_kind(logits: np.ndarray) -> np.ndarray:
        log_probs = log_softmax(logits, "logits")
        return {"logits": logits, "probabilities": np.exp(log_probs)}.get(kind, log_probs)

    metrics = fidelity_metrics(as_kind(halved_logits), as_kind(original_logits), kind, [0])
    assert metrics["margin_retention"] == pytest.approx(0.5)
    assert metrics["agreement"] == 1.0


def test_margin_retention_is_negative_where_the_chain_disagrees() -> None:
    original = np.array([[2.0, 0, 0]])
    chain = np.array([[0.0, 2, 0]])
    # Chain margin at class 0: 0 − 2; original margin: 2 − 0.
    assert fidelity_metrics(chain, original, "logits", [0])["margin_retention"] == -1.0


def test_margin_retention_is_the_median_over_images() -> None:
    original = np.array([[2.0, 0], [2, 0], [2, 0]])
    chain = np.array([[1.0, 0], [0, 2], [2, 0]])  # retentions 0.5, -1, 1
    assert fidelity_metrics(chain, original, "logits", [0, 1])["margin_retention"] == 0.5


def test_confident_and_borderline_split_at_the_median_original_margin() -> None:
    # Original top-2 margins 1, 2, 3, 4: median 2.5, so images 2 and 3 are confident.
    original = np.array([[1.0, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]])
    # The chain flips image 0 to class 1 (a region class) and image 3 to class 2 (not one).
    chain = np.array([[0.0, 1, 0], [2, 0, 0], [3, 0, 0], [1, 0, 4]])
    metrics = fidelity_metrics(chain, original, "logits", [0, 1])
    assert metrics["borderline"] == {"images": 2, "agreement": 0.5, "class_agreement": 0.5}
    assert metrics["confident"] == {"images": 2, "agreement": 0.5, "class_agreement": 1.0}
    assert metrics["agreement"] == 0.5 and metrics["class_agreement"] == 0.75


def test_an_empty_confident_half_has_no_agreement() -> None:
    original = np.array([[1.0, 0], [1.0, 0]])  # equal margins: none above the median
    metrics = fidelity_metrics(original, original, "logits", [0, 1])
    assert metrics["confident"] == {"images": 0, "agreement": None, "class_agreement": None}
    assert metrics["borderline"]["images"] == 2


def test_the_chance_floor_is_the_share_of_the_most_frequent_within_class_prediction() -> None:
    # Within {0, 1} the original says 0, 0, 1, 0 (image 3's top-1 is class 2, outside).
    original = np.array([[3.0, 1, 0], [2, 1, 0], [0, 3, 0], [1, 0, 5]])
    metrics = fidelity_metrics(original, original, "logits", [0, 1], folder_classes=[1, 2])
    # Within {1, 2} the original says 1, 1, 1, 2.
    assert metrics["chance"] == {"class_agreement": 0.75, "folder_class_agreement": 0.75}
    assert metrics["class_agreement"] == 1.0
    balanced = fidelity_metrics(original[1:3], original[1:3], "logits", [0, 1])
    assert balanced["chance"] == {"class_agreement": 0.5, "folder_class_agreement": None}


def test_accuracy_counts_only_the_images_with_a_known_label() -> None:
    original = np.eye(3)[[0, 1, 2, 0]]
    chain = np.eye(3)[[0, 1, 0, 1]]
    metrics = fidelity_metrics(chain, original, "logits", [0, 1, 2], labels=[0, None, 2, None])
    assert metrics["accuracy"] == 0.5  # right on image 0, wrong on image 2
    unknown = fidelity_metrics(chain, original, "logits", [0], labels=[None] * 4)
    assert unknown["accuracy"] is None
    assert fidelity_metrics(chain, original, "logits", [0])["accuracy"] is None


def test_fidelity_metrics_refuses_no_images() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        fidelity_metrics(np.zeros((0, 3)), np.zeros((0, 3)), "logits", [0])


CURVE = [(0.9, 0.2), (0.5, 1.0), (0.7, 0.8)]  # out of order on purpose


def test_auc_is_the_mean_of_the_piecewise_linear_curve() -> None:
    # Two segments 0.2 wide, of mean height 0.9 and 0.5: (0.18 + 0.10) / 0.4
    assert frontier_auc(CURVE, 0.5, 0.9) == pytest.approx(0.7)
    # Cut at 0.6 (0.9) and 0.8 (0.5): (0.1 · 0.85 + 0.1 · 0.65) / 0.2
    assert frontier_auc(CURVE, 0.6, 0.8) == pytest.approx(0.75)
    assert frontier_auc(CURVE, 0.55, 0.65) == pytest.approx(0.9)


def test_auc_adds_no_area_at_a_vertical_step() -> None:
    step = [(0.5, 1.0), (0.7, 0.8), (0.7, 0.4), (0.9, 0.2)]
    assert frontier_auc(step, 0.5, 0.9) == pytest.approx((0.2 * 0.9 + 0.2 * 0.3) / 0.4)


@pytest.mark.parametrize(("low", "high"), [(0.4, 0.9), (0.5, 0.95), (0.7, 0.7), (0.8, 0.6)])
def test_auc_is_none_outside_the_measured_range_or_on_an_empty_one(low: float, high: float) -> None:
    assert frontier_auc(CURVE, low, high) is None


def test_auc_of_one_point_is_none() -> None:
    assert frontier_auc([(0.5, 1.0)], 0.5, 0.5) is None


def test_mean_ci_by_hand() -> None:
    half = T_975_3 * np.std([1, 2, 3, 4], ddof=1) / 2  # sd 1.291, √4 = 2
    result = mean_ci([1, 2, 3, 4])
    assert result["mean"] == 2.5 and result["n"] == 4
    assert result["low"] == pytest.approx(2.5 - half, rel=1e-5)
    assert result["high"] == pytest.approx(2.5 + half, rel=1e-5)
    assert result["low"] == pytest.approx(0.44574, abs=1e-5)


def test_mean_ci_of_one_value_is_that_value() -> None:
    assert mean_ci([0.3]) == {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}
    with pytest.raises(ValueError):
        mean_ci([])


def test_paired_test_by_hand() -> None:
    a, b = [3, 5, 4, 7, 2], [1, 2, 4, 3, 3]
    # Differences 2, 3, 0, 4, −1: mean 1.6, sd √(17.2 / 4) = 2.0736.
    result = paired_test(a, b)
    half = T_975_4 * math.sqrt(17.2 / 4) / math.sqrt(5)
    assert result["difference"]["mean"] == pytest.approx(1.6)
    assert result["difference"]["low"] == pytest.approx(1.6 - half, rel=1e-5)
    assert result["difference"]["high"] == pytest.approx(1.6 + half, rel=1e-5)
    assert result["difference"]["n"] == 5
    assert (result["wins"], result["losses"], result["ties"]) == (3, 1, 1)
    # The zero dropped, ranks of |2, 3, 4, −1| are 2, 3, 4, 1: W− = 1. Of the 16 equally
    # likely sign patterns, 2 give W− ≤ 1 (and 2 give W+ ≤ 1): p = 4 / 16.
    assert result["wilcoxon_p"] == pytest.approx(0.25)


def test_paired_test_has_no_p_value_with_fewer_than_two_non_zero_differences() -> None:
    result = paired_test([1.0, 1.0, 2.0], [1.0, 1.0, 1.0])
    assert result["wilcoxon_p"] is None
    assert (result["wins"], result["losses"], result["ties"]) == (1, 0, 2)
    with pytest.raises(ValueError, match="pairs"):
        paired_test([1.0], [1.0, 2.0])
