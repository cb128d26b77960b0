"""Checks of an exported chain in onnxruntime: exactness, exact copies, fidelity and cost."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from chainx.chain.copies import CopyCheck, check_exact_copies
from chainx.chain.exactness import (
    ROUNDING_FACTOR,
    Exactness,
    check_exactness,
)
from chainx.channels.emitter import WeightSlice
from chainx.onnx.macs import count_macs
from chainx.onnx.passes.float16 import float16_form
from chainx.onnx.runtime import as_input, batches, run, session
from chainx.scoring.settings import MaskedOutputs


def log_softmax(values: np.ndarray, kind: str) -> np.ndarray:
    values = values.astype(np.float64)
    if kind == "probabilities":
        return np.log(np.clip(values, 1e-12, None))
    if kind == "log-probabilities":
        return values
    shifted = values - values.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def region_classes(original_output: np.ndarray) -> list[int]:
    """The classes the original predicts on the region."""
    return sorted({int(c) for c in original_output.argmax(1)})


@dataclass
class Fidelity:
    images: int
    agree: int
    agreement: float
    class_agree: int
    class_agreement: float
    mean_kl: float


def fidelity(
    chain_output: np.ndarray, original_output: np.ndarray, kind: str, classes: list[int]
) -> Fidelity:
    """Top-1 agreement and mean KL(original ‖ chain); also agreement over `classes` only."""
    log_p = log_softmax(original_output, kind)
    log_q = log_softmax(chain_output, kind)
    kl = float((np.exp(log_p) * (log_p - log_q)).sum(axis=1).mean())
    agree = int((log_p.argmax(1) == log_q.argmax(1)).sum())
    restricted = np.asarray(classes)
    class_agree = int(
        (
            restricted[log_p[:, restricted].argmax(1)] == restricted[log_q[:, restricted].argmax(1)]
        ).sum()
    )
    count = len(original_output)
    return Fidelity(count, agree, agree / count, class_agree, class_agree / count, kl)


@dataclass
class Outputs:
    """The outputs of the chain and of the original model on the region and the holdout."""

    chain_region: np.ndarray
    original_region: np.ndarray
    chain_holdout: np.ndarray | None
    original_holdout: np.ndarray | None


@dataclass
class ChainVerification:
    exactness: Exactness
    copies: CopyCheck
    classes: list[int]
    region: Fidelity
    holdout: Fidelity | None
    outputs: Outputs

    @property
    def passed(self) -> bool:
        return self.exactness.passed and self.copies.passed

    def failure(self) -> str:
        problems = []
        exact = self.exactness
        if not exact.passed:
            against = (
                f"its float64 form, beyond {ROUNDING_FACTOR:g} × float32's own rounding there "
                f"({exact.noise:.3g})"
                if exact.reference == "float64"
                else "it"
            )
            problems.append(
                f"chain.onnx differs from the masked scoring model: max |Δ| "
                f"{exact.max_abs_diff:.3g} against {against}, over the tolerance "
                f"{exact.tolerance:.3g}"
                + (f"; it first parts from it at {exact.parts_at}" if exact.parts_at else "")
            )
        return "verification failed: " + "; ".join(problems + self.copies.mismatched)

    def to_json(self) -> dict[str, object]:
        return {
            "exactness": asdict(self.exactness),
            "exact_copies": {"checked": self.copies.checked, "mismatched": self.copies.mismatched},
            "region_classes": self.classes,
            "region": asdict(self.region),
            "holdout": asdict(self.holdout) if self.holdout else None,
        }


class Reference:
    """The original model's output, as the user's file computes it.

    It runs on the image input and class output chainx worked on; a model with other inputs
    cannot run on the image alone, so its normalised form stands in, as it does for a model
    that has no file (`original_path` None: a control built in memory).
    """

    def __init__(
        self,
        chain: onnx.ModelProto,
        original_path: Path | None,
        original: onnx.ModelProto,
        normalised: onnx.ModelProto,
    ) -> None:
        constants = {init.name for init in original.graph.initializer}
        reads_one_input = sum(i.name not in constants for i in original.graph.input) <= 1
        use_file = reads_one_input and original_path is not None
        self.session = session(original_path if use_file else normalised)
        self.names = {
            "input_name": chain.graph.input[0].name,
            "output_name": chain.graph.output[0].name,
        }

    def run(self, images: np.ndarray) -> np.ndarray:
        return run(self.session, images, **self.names)


def verify_chain(
    chain: onnx.ModelProto,
    original_path: Path | None,
    original: onnx.ModelProto,
    normalised: onnx.ModelProto,
    slices: list[WeightSlice],
    expected: MaskedOutputs,
    region: np.ndarray,
    holdout: np.ndarray | None,
    kind: str,
    original_outputs: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> ChainVerification:
    """Every check of a chain: exactness against `expected` (the masked scoring model's
    output on `region`, `chain.exactness`), exact copies, and fidelity to the original on
    region and holdout.

    `original_outputs` (region, holdout) saves rerunning the original when several chains
    of one model are checked on the same images.
    """
    chain_session = session(chain)
    if original_outputs is None:
        reference = Reference(chain, original_path, original, normalised)
        original_outputs = (
            reference.run(region),
            reference.run(holdout) if holdout is not None else None,
        )
    original_out, original_held = original_outputs
    chain_out = run(chain_session, region)
    classes = region_classes(original_out)
    held, chain_held = None, None
    if holdout is not None and original_held is not None:
        chain_held = run(chain_session, holdout)
        held = fidelity(chain_held, original_held, kind, classes)
    return ChainVerification(
        exactness=check_exactness(chain_out, expected, bool(float16_form(chain))),
        copies=check_exact_copies(chain, original, slices, normalised),
        classes=classes,
        region=fidelity(chain_out, original_out, kind, classes),
        holdout=held,
        outputs=Outputs(chain_out, original_out, chain_held, original_held),
    )


@dataclass
class ModelCost:
    parameters: int
    file_bytes: int
    macs: int  # multiply–accumulates per image (onnx/macs.py)
    latency_ms: float  # of one run of `latency_images` images
    latency_images: int = 1  # more where the model fixes its batch (it then runs no fewer)


def model_cost(model: Path | onnx.ModelProto, image: np.ndarray, repeats: int = 30) -> ModelCost:
    """Parameters, file size, MACs and CPU latency of a file or a model not yet written (its
    size is that of its serialised bytes): the median of `repeats` runs of `image`, on one
    thread with onnxruntime's full graph optimisations, as a deployment would run it."""
    if isinstance(model, Path):
        proto, size = onnx.load(str(model)), model.stat().st_size
    else:
        proto, size = model, model.ByteSize()
    parameters = int(sum(np.prod(init.dims) for init in proto.graph.initializer))
    sess = session(model, optimised=True, cpu=True, threads=1)
    latency = median_latency_ms(sess, image, repeats)
    fixed = sess.get_inputs()[0].shape[0]
    images = max(len(image), fixed if isinstance(fixed, int) else 0)
    return ModelCost(parameters, size, count_macs(proto, image), latency, images)


def median_latency_ms(sess: ort.InferenceSession, images: np.ndarray, repeats: int) -> float:
    """The median of `repeats` timed runs of `images` (N, C, H, W), after 3 to warm up."""
    model_input = sess.get_inputs()[0]
    # A model with a fixed batch runs its batch at a time: the first, padded if need be.
    batch, _ = next(batches(model_input, images, len(images)))
    feed = {model_input.name: as_input(model_input, batch)}
    for _ in range(3):
        sess.run(None, feed)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        sess.run(None, feed)
        timings.append(time.perf_counter() - started)
    return 1000 * float(np.median(timings))
