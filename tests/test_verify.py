"""Verification: exactness, bit-for-bit copies and fidelity, including failures."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import inputs_for, random_multipliers, tiny_model
from onnx import numpy_helper

from chainx.chain.copies import check_exact_copies
from chainx.chain.verify import check_exactness, fidelity
from chainx.channels.surgery import shrink
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points, scored_model


def _chain() -> tuple[onnx.ModelProto, onnx.ModelProto, object]:
    model = tiny_model("projection")
    points = find_score_points(model)
    scored = scored_model(model, points, random_multipliers(points, 0.4))
    return model, scored, shrink(scored)


def _corrupt_first_conv(chain: onnx.ModelProto, delta: float) -> onnx.ModelProto:
    corrupted = onnx.ModelProto()
    corrupted.CopyFrom(chain)
    conv = next(n for n in corrupted.graph.node if n.op_type == "Conv")
    init = next(i for i in corrupted.graph.initializer if i.name == conv.input[1])
    value = numpy_helper.to_array(init).copy()
    value.flat[0] += delta
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    return corrupted


def test_a_faithful_export_passes_both_checks() -> None:
    model, scored, result = _chain()
    x = inputs_for(model, count=6)
    exactness = check_exactness(run(session(result.model), x), run(session(scored), x))
    assert exactness.passed
    assert exactness.max_abs_diff <= exactness.tolerance
    copies = check_exact_copies(result.model, model, result.slices)
    assert copies.passed
    assert copies.checked == sum(n.op_type in {"Conv", "Gemm"} for n in result.model.graph.node)


def test_a_corrupted_export_fails_exactness_and_copies() -> None:
    model, scored, result = _chain()
    corrupted = _corrupt_first_conv(result.model, 10.0)
    x = inputs_for(model, count=6)
    exactness = check_exactness(run(session(corrupted), x), run(session(scored), x))
    assert not exactness.passed
    copies = check_exact_copies(corrupted, model, result.slices)
    assert not copies.passed
    assert "differs from its source slice" in copies.mismatched[0]


def test_a_one_ulp_change_is_caught_by_the_copy_check() -> None:
    model, _, result = _chain()
    conv = next(n for n in result.model.graph.node if n.op_type == "Conv")
    weight = next(
        numpy_helper.to_array(i) for i in result.model.graph.initializer if i.name == conv.input[1]
    )
    ulp = float(np.spacing(weight.flat[0]))
    copies = check_exact_copies(_corrupt_first_conv(result.model, ulp), model, result.slices)
    assert len(copies.mismatched) == 1


def test_fidelity_counts_agreement_and_kl() -> None:
    original = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0], [2.0, 2.5, 0.0]])
    chain = original.copy()
    chain[3] = [2.6, 2.5, 0.0]  # flips image 3 from class 1 to class 0
    result = fidelity(chain, original, "logits", classes=[0, 1])
    assert result.agree == 3 and result.images == 4
    assert result.class_agree == 3
    assert result.mean_kl > 0
    same = fidelity(original, original, "logits", classes=[0, 1, 2])
    assert same.agree == 4 and abs(same.mean_kl) < 1e-12


def test_copies_of_unnamed_original_nodes_are_checked_in_the_normalised_model() -> None:
    model, _, _ = _chain()
    unnamed = onnx.ModelProto()
    unnamed.CopyFrom(model)
    for node in unnamed.graph.node:
        node.name = ""
    normalised = normalise(unnamed)
    points = find_score_points(normalised)
    result = shrink(scored_model(normalised, points, random_multipliers(points, 0.5)))
    assert not check_exact_copies(result.model, unnamed, result.slices).passed
    assert check_exact_copies(result.model, unnamed, result.slices, normalised).passed
