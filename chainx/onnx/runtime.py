"""One onnxruntime runner for every stage: sessions with graph optimisations off (so that a
difference in the graph cannot hide behind a rewrite), batched runs, and runs that read
inner tensors as well as the outputs."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

# What onnxruntime raises for a model it cannot load or run (an unknown op, a type or shape
# it rejects, a kernel that fails on the data), as opposed to a fault in the calling code.
MODEL_ERRORS = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def providers() -> list[str]:
    """CUDA first where onnxruntime can really load it, else the CPU.

    Asking for CUDA where it cannot load makes onnxruntime log errors, and onnxruntime-gpu
    lists CUDA as available even on a machine without a GPU, so it is probed once.
    """
    return list(_providers())


@functools.cache
def _providers() -> tuple[str, ...]:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ("CPUExecutionProvider",)
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        sess = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CUDAExecutionProvider"]
        )
    except Exception:  # noqa: BLE001 - any failure to load CUDA means the CPU
        return ("CPUExecutionProvider",)
    if "CUDAExecutionProvider" not in sess.get_providers():
        return ("CPUExecutionProvider",)
    return ("CUDAExecutionProvider", "CPUExecutionProvider")


# Intra-op threads of a session that does not choose (0: onnxruntime's choice, every core).
_process_threads = 0


def use_threads(threads: int) -> None:
    """Give later sessions `threads` intra-op threads, the count torch was given: onnxruntime's
    threads spin while they wait, as OpenMP's do, so on a busy machine (a sweep's workers,
    --threads 1) taking every core slows this job and the others."""
    global _process_threads
    _process_threads = threads


def session(
    model: onnx.ModelProto | Path,
    optimised: bool = False,
    cpu: bool = False,
    quiet: bool = False,
    threads: int | None = None,
) -> ort.InferenceSession:
    """`quiet` for a probe that may fail: onnxruntime then logs nothing, not even errors;
    `threads` intra-op threads (None: the process's, `use_threads`; 0: onnxruntime's choice)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4 if quiet else 3
    options.intra_op_num_threads = _process_threads if threads is None else threads
    if not optimised:
        # With fusions off a difference in the graph cannot hide behind a rewrite.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    chosen = ["CPUExecutionProvider"] if cpu else providers()
    return ort.InferenceSession(source, options, providers=chosen)


# onnxruntime's names of the input types chainx feeds; images are float32 until fed.
INPUT_TYPES = {"tensor(float16)": np.float16, "tensor(double)": np.float64}


def as_input(model_input: ort.NodeArg, images: np.ndarray) -> np.ndarray:
    """`images` (N, C, H, W) float32, in the element type and layout the input wants: a
    float16 model reads float16, a channels-last one (N, H, W, C)."""
    dtype = INPUT_TYPES.get(model_input.type)
    shape = model_input.shape
    if images.ndim == 4 and len(shape) == 4 and shape[3] == images.shape[1] != shape[1]:
        images = images.transpose(0, 2, 3, 1)
    return images.astype(dtype) if dtype is not None else images


def _as_float32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) if values.dtype == np.float16 else values


def batches(
    model_input: ort.NodeArg, images: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, int]]:
    """`images` in batches of `batch_size`, or of the model's fixed batch where its input
    has one, the last then padded with copies of the last image: (batch, images in it)."""
    fixed = model_input.shape[0]
    if not (isinstance(fixed, int) and fixed > 0):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size], len(images[start : start + batch_size])
        return
    for start in range(0, len(images), fixed):
        yield pad_batch(images[start : start + fixed], fixed), len(images[start : start + fixed])


def pad_batch(images: np.ndarray, size: int) -> np.ndarray:
    """`images` padded to `size` with copies of the last: a model with a fixed batch takes
    no fewer."""
    missing = size - len(images)
    return np.concatenate([images, np.repeat(images[-1:], missing, axis=0)]) if missing else images


def run(
    sess: ort.InferenceSession,
    images: np.ndarray,
    batch_size: int = 32,
    input_name: str | None = None,
    output_name: str | None = None,
) -> np.ndarray:
    """The model's output for `images` (its first input and output unless named)."""
    model_input = next(i for i in sess.get_inputs() if input_name in (None, i.name))
    wanted = [output_name] if output_name else None
    outputs = [
        _as_float32(sess.run(wanted, {model_input.name: as_input(model_input, batch)})[0])[:count]
        for batch, count in batches(model_input, images, batch_size)
    ]
    return np.concatenate(outputs).reshape(len(images), -1)


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` that also outputs the inner tensors `names`, after its own outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {output.name for output in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_empty_tensor_value_info(name)
        for name in dict.fromkeys(names)
        if name not in present
    )
    return probe


def tensor_batches(
    sess: ort.InferenceSession, images: np.ndarray, names: list[str], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """The tensors `names` for `images`, one batch at a time (the model's own batch size
    where its input fixes one), for callers that reduce them as they go."""
    if not names:  # onnxruntime would read an empty list as every output
        return
    model_input = sess.get_inputs()[0]
    for batch, count in batches(model_input, images, batch_size):
        feed = {model_input.name: as_input(model_input, batch)}
        values = [_padded_off(_as_float32(v), count, len(batch)) for v in sess.run(names, feed)]
        yield dict(zip(names, values, strict=True))


def _padded_off(value: np.ndarray, count: int, size: int) -> np.ndarray:
    """A tensor of a batch of `size` images, padded after `count`, without the padding
    (where its first axis is the batch; a shape or a token-first tensor as it is)."""
    padded = isinstance(value, np.ndarray) and value.ndim and count < size == len(value)
    return value[:count] if padded else value


def run_tensors(
    model: onnx.ModelProto,
    images: np.ndarray,
    names: Iterable[str],
    batch_size: int = 32,
    cpu: bool = False,
) -> dict[str, np.ndarray]:
    """Tensor name → its value on `images`: inner tensors as well as outputs, in one run."""
    wanted = list(dict.fromkeys(names))
    sess = session(with_outputs(model, wanted), cpu=cpu)
    batches = list(tensor_batches(sess, images, wanted, batch_size))
    if len(batches) == 1:  # as onnxruntime gave it: a scalar or a sequence cannot be joined
        return batches[0]
    return {name: np.concatenate([batch[name] for batch in batches]) for name in wanted}
