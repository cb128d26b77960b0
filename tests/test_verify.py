"""Verification: exactness, bit-for-bit copies and fidelity, including failures."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from conftest import export, inputs_for, random_multipliers, tiny_model
from onnx import numpy_helper

from chainx.chain.copies import check_exact_copies
from chainx.chain.exactness import (
    EXACTNESS_TOLERANCE,
    ROUNDING_FACTOR,
    check_exactness,
    first_parting,
    within,
)
from chainx.chain.verify import fidelity
from chainx.channels.surgery import shrink
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, session
from chainx.onnx.score_points import find_score_points, scored_model
from chainx.scoring.model import ScoringModel, masked_outputs
from chainx.scoring.settings import MaskedOutputs


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
    exactness = check_exactness(
        run(session(result.model), x), MaskedOutputs(run(session(scored), x))
    )
    assert exactness.passed
    assert exactness.max_abs_diff <= exactness.tolerance
    copies = check_exact_copies(result.model, model, result.slices)
    assert copies.passed
    assert copies.checked == sum(n.op_type in {"Conv", "Gemm"} for n in result.model.graph.node)


def test_a_corrupted_export_fails_exactness_and_copies() -> None:
    model, scored, result = _chain()
    corrupted = _corrupt_first_conv(result.model, 10.0)
    x = inputs_for(model, count=6)
    exactness = check_exactness(run(session(corrupted), x), MaskedOutputs(run(session(scored), x)))
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


def _checked_chain(model: onnx.ModelProto, keep: float = 0.4, seed: int = 0) -> tuple:
    """(scored model, surgery result, inputs, the masked model's outputs in float32 and
    float64) for random multipliers."""
    points = find_score_points(model)
    multipliers = random_multipliers(points, keep, seed)
    scored = scored_model(model, points, multipliers)
    result = shrink(scored)
    x = inputs_for(model, count=6)
    return scored, result, x, masked_outputs(ScoringModel(model, points), x, multipliers)


def _insert_before(model: onnx.ModelProto, consumer: str, node: onnx.NodeProto) -> None:
    """Insert `node` so that `consumer` reads its output instead of its input."""
    target = next(n for n in model.graph.node if n.name == consumer)
    position = list(model.graph.node).index(target)
    target.input[0] = node.output[0]
    model.graph.node.insert(position, node)


def test_a_kept_filter_reading_the_wrong_channel_is_refused_and_located() -> None:
    scored, result, x, expected = _checked_chain(tiny_model("projection"))
    chain = onnx.ModelProto.FromString(result.model.SerializeToString())
    conv = next(n for n in chain.graph.node if n.name == "/block1/conv2/Conv")
    weight = next(i for i in chain.graph.initializer if i.name == conv.input[1])
    channels = weight.dims[1]
    assert channels >= 2
    order = numpy_helper.from_array(np.arange(channels)[::-1].copy(), "reversed")
    chain.graph.initializer.append(order)
    swap = onnx.helper.make_node("Gather", [conv.input[0], "reversed"], ["swapped"], axis=1)
    _insert_before(chain, conv.name, swap)
    exactness = check_exactness(run(session(chain), x), expected)
    assert exactness.reference == "float64" and not exactness.passed
    assert first_parting(chain, scored, result.layouts, x) == "/block1/conv2/Conv (Conv)"
    # Its weights are still exact copies: only the numeric check sees the error.
    assert check_exact_copies(chain, scored, result.slices).passed


def test_a_removed_channel_that_is_not_zero_is_refused_and_located() -> None:
    scored, result, x, expected = _checked_chain(tiny_model("projection"))
    chain = onnx.ModelProto.FromString(result.model.SerializeToString())
    # The Pad that brings block 1's removed channels back, as zeros, to its residual Add.
    pad = next(n for n in chain.graph.node if n.op_type == "Pad" and "block1/bn2" in n.name)
    chain.graph.initializer.append(numpy_helper.from_array(np.array(1e-3, np.float32), "one"))
    pad.input.append("one")
    exactness = check_exactness(run(session(chain), x), expected)
    assert not exactness.passed
    assert first_parting(chain, scored, result.layouts, x) == "/block1/Add (Add)"


class CancellingHead(torch.nn.Module):
    """Three convs, then every pooled feature offset by 10⁴ and a classifier whose rows sum
    to zero: the offset cancels, so the outputs are ~10⁴ times smaller than the terms
    summed into them, and float32 rounds away ~10⁻³ of them."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
        )
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            self.fc.weight -= self.fc.weight.mean(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.convs(x).mean(dim=(2, 3))
        return self.fc(pooled + 1e4)


def test_float32_rounding_of_a_small_output_network_passes() -> None:
    model = normalise(export(CancellingHead(), (1, 3, 8, 8)))
    _, result, x, expected = _checked_chain(model, keep=0.5)
    output = run(session(result.model), x)
    # A fixed 1e-4 of max |output| is below float32's own rounding here …
    assert not within(output, expected.float32.astype(np.float64), EXACTNESS_TOLERANCE).passed
    assert expected.float64 is not None
    noise = np.abs(expected.float32 - expected.float64).max() / np.abs(expected.float64).max()
    assert noise > EXACTNESS_TOLERANCE
    # … and the chain is exact up to that rounding.
    exactness = check_exactness(output, expected)
    assert exactness.passed and exactness.noise is not None
    assert exactness.max_abs_diff <= ROUNDING_FACTOR * exactness.noise
