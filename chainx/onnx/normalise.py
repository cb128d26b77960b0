"""Load an ONNX model and normalise it so that every later stage sees one clean form."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.external_data_helper
import onnx.version_converter
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnx import numpy_helper, shape_inference
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding
from onnxscript.rewriter.rules.common import _fuse_batchnorm

from chainx.errors import ChainxError
from chainx.onnx.channel_shuffle import shuffles_to_gather
from chainx.onnx.graph import live_nodes, with_nodes


def _name_unnamed_nodes(graph: onnx.GraphProto) -> None:
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


def _explicit_auto_pad(model: onnx.ModelProto) -> None:
    """Rewrite auto_pad=SAME_* into explicit pads, which onnx2torch can convert."""
    shapes = _static_shapes(model)
    for node in model.graph.node:
        if node.op_type not in {"Conv", "MaxPool", "AveragePool"}:
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if mode in {"NOTSET", "VALID"}:
            if mode == "VALID":
                node.attribute.remove(attrs["auto_pad"])
            continue
        in_shape = shapes.get(node.input[0])
        if in_shape is None or any(d is None for d in in_shape[2:]):
            raise ChainxError(
                f"node {node.name!r} ({node.op_type}) uses auto_pad={mode} on an input of "
                "unknown spatial size. Export the model with a fixed input size."
            )
        kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else None
        if kernel is None:
            weight = _initializer(model, node.input[1])
            kernel = list(weight.shape[2:])
        rank = len(kernel)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * rank
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * rank
        begins, ends = [], []
        for size, k, s, d in zip(in_shape[2:], kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if mode == "SAME_UPPER" else large)
            ends.append(large if mode == "SAME_UPPER" else small)
        node.attribute.remove(attrs["auto_pad"])
        if "pads" in attrs:
            node.attribute.remove(attrs["pads"])
        node.attribute.append(onnx.helper.make_attribute("pads", begins + ends))
        if "kernel_shape" not in attrs:
            node.attribute.append(onnx.helper.make_attribute("kernel_shape", kernel))


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise ChainxError(f"{name!r} is not a constant weight; chainx needs constant Conv weights.")


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            ]
    return shapes


def normalise(
    model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None
) -> onnx.ModelProto:
    """Fold constants, drop Identity nodes, make padding explicit and infer every shape.

    A model with several inputs or outputs is cut down to the image input and the class
    output that `input_name` and `output_name` choose.
    """
    model = _select_io(
        onnx.ModelProto.FromString(model.SerializeToString()), input_name, output_name
    )
    model = _at_least_opset(model, OLDEST_OPSET)
    model = _at_most_opset(model, TORCH_OPSET)
    # Initializers listed as graph inputs are overridable; as plain constants they fold.
    names = _initializer_names(model)
    kept_inputs = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    try:
        model = _optimize(model)
    except Exception as exc:
        raise ChainxError(
            f"the model could not be normalised ({type(exc).__name__}: {exc}). "
            "Re-export it with a recent exporter."
        ) from None
    _explicit_auto_pad(model)
    _name_unnamed_nodes(model.graph)
    model = _infer_shapes(model)
    if _complete_shapes(model):
        # With every size known, shape arithmetic (Shape → Gather → Div → Slice) folds.
        model = _infer_shapes(_optimize(model))
        _complete_shapes(model)
    _drop_needless_allowzero(model)
    shuffled = shuffles_to_gather(model)
    if shuffled is not model:
        model = _infer_shapes(shuffled)
    return model


# The newest opset whose ops onnx2torch converts (its Reduce*/Reshape stop at 17).
TORCH_OPSET = 17
# Older models are upgraded to this one first: before it, Pad, Slice, Clip and friends
# carried their parameters as attributes that the channel rules do not read.
OLDEST_OPSET = 11


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in {"", "ai.onnx"}), 0)


def _at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    if _opset(model) >= opset:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, 13)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises bare RuntimeErrors
        raise ChainxError(
            f"the model uses opset {_opset(model)}, and onnx's version converter cannot "
            f"upgrade it ({type(exc).__name__}: {str(exc)[:200]}). Export it again with "
            "opset 11 or newer."
        ) from None
    return converted


def _select_io(
    model: onnx.ModelProto, input_name: str | None, output_name: str | None
) -> onnx.ModelProto:
    """Keep one output (the class scores) and the one input it reads (the image)."""
    outputs = [o.name for o in model.graph.output]
    if output_name is not None and output_name not in outputs:
        raise ChainxError(
            f"--output {output_name!r} is not an output of the model; its outputs are "
            f"{', '.join(outputs)}."
        )
    if output_name is None and len(outputs) > 1:
        raise ChainxError(
            f"the model has {len(outputs)} outputs ({', '.join(outputs)}): say which one holds "
            "the class scores with --output NAME."
        )
    chosen = output_name or outputs[0]
    kept = [o for o in model.graph.output if o.name == chosen]
    nodes = live_nodes(list(model.graph.node), [chosen])
    initializers = _initializer_names(model)
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    read = {name for node in nodes for name in node.input} | {chosen}
    used = [name for name in inputs if name in read]
    if input_name is not None and input_name not in inputs:
        raise ChainxError(
            f"--input {input_name!r} is not an input of the model; its inputs are "
            f"{', '.join(inputs)}."
        )
    if input_name is None and len(used) > 1:
        raise ChainxError(
            f"the output {chosen!r} reads {len(used)} inputs ({', '.join(used)}): say which "
            "one is the image with --input NAME."
        )
    image = input_name or (used[0] if used else inputs[0])
    others = [name for name in used if name != image]
    if others:
        raise ChainxError(
            f"the output {chosen!r} also reads the inputs {', '.join(others)}; chainx feeds "
            "only the image input. Export the classifier with a single input."
        )
    if len(outputs) == 1 and len(inputs) == 1:
        return model
    graph_inputs = [i for i in model.graph.input if i.name == image or i.name in initializers]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.output[:]
    model.graph.output.extend(kept)
    del model.graph.input[:]
    model.graph.input.extend(graph_inputs)
    return model


def _at_most_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert a newer model down to `opset` with onnx's version converter.

    The converter leaves Reduce*-18's `noop_with_empty_axes=0` behind, which opset 17 only
    knows on ReduceSum; it is the default there, so it goes. A model the converter cannot
    take stays as it is, and onnx2torch names what it cannot convert.
    """
    if _opset(model) <= opset:
        return model
    try:
        older = _gelu_expanded(_splits_as_slices(model))
        converted = onnx.version_converter.convert_version(older, opset)
    except Exception:  # the converter raises bare RuntimeErrors for unsupported adapters
        return model
    for node in converted.graph.node:
        if node.op_type.startswith("Reduce") and node.op_type != "ReduceSum":
            for attribute in list(node.attribute):
                if attribute.name == "noop_with_empty_axes" and attribute.i == 0:
                    node.attribute.remove(attribute)
    try:
        onnx.checker.check_model(converted)
    except onnx.checker.ValidationError:
        return model
    return converted


def _splits_as_slices(model: onnx.ModelProto) -> onnx.ModelProto:
    """Split-18 (num_outputs) as one Slice per output: onnx has no adapter down to 17."""
    shapes = _static_shapes(model)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    for node in model.graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "Split" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        size = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
        if size is None:
            nodes.append(node)
            continue
        if len(node.input) > 1 and node.input[1]:
            if node.input[1] not in constants:
                nodes.append(node)
                continue
            sizes = [int(v) for v in constants[node.input[1]]]
        else:
            count = len(node.output)
            step = -(-size // count)
            sizes = [min(step, size - i * step) for i in range(count)]
        bounds = np.cumsum([0, *sizes])
        for index, output in enumerate(node.output):
            names = [f"{node.name}_{output}_{part}" for part in ("starts", "ends", "axes")]
            values = ([bounds[index]], [bounds[index + 1]], [axis])
            added.extend(
                numpy_helper.from_array(np.array(v, np.int64), n)
                for n, v in zip(names, values, strict=True)
            )
            nodes.append(
                onnx.helper.make_node(
                    "Slice", [node.input[0], *names], [output], name=f"{node.name}/{output}"
                )
            )
    return with_nodes(model, nodes, added)


def _gelu_expanded(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gelu-20 in the ops of its definition, which older opsets and onnx2torch know."""
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []

    def constant(name: str, value: float) -> str:
        added.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    make = onnx.helper.make_node
    for node in model.graph.node:
        if node.op_type != "Gelu":
            nodes.append(node)
            continue
        x, y, base = node.input[0], node.output[0], f"{node.name or node.output[0]}/gelu"
        tanh = any(a.name == "approximate" and a.s == b"tanh" for a in node.attribute)
        if tanh:  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            nodes += [
                make("Mul", [x, x], [f"{base}/x2"], name=f"{base}/x2"),
                make("Mul", [f"{base}/x2", x], [f"{base}/x3"], name=f"{base}/x3"),
                make(
                    "Mul",
                    [f"{base}/x3", constant(f"{base}/c", 0.044715)],
                    [f"{base}/cx3"],
                    name=f"{base}/cx3",
                ),
                make("Add", [x, f"{base}/cx3"], [f"{base}/inner"], name=f"{base}/inner"),
                make(
                    "Mul",
                    [f"{base}/inner", constant(f"{base}/k", float(np.sqrt(2 / np.pi)))],
                    [f"{base}/scaled"],
                    name=f"{base}/scaled",
                ),
                make("Tanh", [f"{base}/scaled"], [f"{base}/t"], name=f"{base}/t"),
            ]
        else:  # 0.5·x·(1 + erf(x/√2))
            nodes += [
                make(
                    "Div",
                    [x, constant(f"{base}/sqrt2", float(np.sqrt(2)))],
                    [f"{base}/s"],
                    name=f"{base}/s",
                ),
                make("Erf", [f"{base}/s"], [f"{base}/t"], name=f"{base}/t"),
            ]
        nodes += [
            make(
                "Add", [f"{base}/t", constant(f"{base}/one", 1.0)], [f"{base}/p"], name=f"{base}/p"
            ),
            make("Mul", [x, f"{base}/p"], [f"{base}/xp"], name=f"{base}/xp"),
            make("Mul", [f"{base}/xp", constant(f"{base}/half", 0.5)], [y], name=node.name),
        ]
    return with_nodes(model, nodes, added)


def _drop_needless_allowzero(model: onnx.ModelProto) -> None:
    """Reshape with allowzero=1 and a constant shape free of zeros means allowzero=0.

    onnxscript's folding writes allowzero=1, which onnx2torch cannot convert.
    """
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in constants:
            continue
        shape = numpy_helper.to_array(constants[node.input[1]])
        for attribute in list(node.attribute):
            if attribute.name == "allowzero" and attribute.i and not (shape == 0).any():
                node.attribute.remove(attribute)


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    return shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def _complete_shapes(model: onnx.ModelProto) -> bool:
    """Fill in the non-batch dims that shape inference left unknown, by running the model.

    Exporters compute some shapes at run time (e.g. a flatten that reads the batch size),
    and the channel analysis needs every channel count. True when a shape was filled in.
    """
    graph = model.graph
    model_input = graph.input[0].type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model_input]
    if any(d is None for d in dims[1:]):
        return False
    infos = {info.name: info for info in [*graph.value_info, *graph.output]}
    known = set(infos)
    for node in graph.node:
        for name in node.output:
            if name and name not in known:
                info = graph.value_info.add()
                info.name = name
                infos[name] = info
    unknown = [
        name
        for name, info in infos.items()
        if not info.type.tensor_type.HasField("shape")
        or any(not d.HasField("dim_value") for d in info.type.tensor_type.shape.dim[1:])
    ]
    if not unknown:
        return False
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in unknown)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feed = np.zeros([1, *dims[1:]], np.float32)
        values = sess.run(None, {graph.input[0].name: feed})
    except Exception:  # the analysis then freezes what it cannot size
        return False
    for name, value in zip(unknown, values, strict=True):
        tensor = infos[name].type.tensor_type
        if not isinstance(value, np.ndarray) or value.ndim < 2:
            continue
        if not tensor.elem_type:
            tensor.elem_type = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
        shape = tensor.shape
        old = list(shape.dim)
        del shape.dim[:]
        for axis, size in enumerate(value.shape):
            dim = shape.dim.add()
            if axis == 0 and old and not old[0].HasField("dim_value"):
                dim.CopyFrom(old[0])
            elif axis == 0 and not old:
                dim.dim_param = "batch"
            else:
                dim.dim_value = size
    return True


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {init.name for init in model.graph.initializer}


def _optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's optimizer without BatchNorm fusion.

    Fusing BN would rewrite the Conv weights, and the chain must hold exact copies of the
    user's filters. ConstantOfShape of a constant shape is folded too: exporters build pad
    sizes with it, and the channel analysis needs them as constants.
    """
    fused = set(_fuse_batchnorm.rules.rules)
    rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if rule not in fused]
    ir_model = ir.serde.deserialize_model(model)
    passes = ir.passes.Sequential(
        common_passes.InlinePass(),
        ir.passes.PassManager(
            [
                _constant_folding.FoldConstantsPass(
                    shape_inference=True,
                    input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                    output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                    should_fold=lambda node: True if node.op_type == "ConstantOfShape" else None,
                ),
                rewriter.RewritePass(rules),
                common_passes.RemoveUnusedNodesPass(),
            ],
            steps=2,
            early_stop=True,
        ),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.DeduplicateInitializersPass(),
        common_passes.NameFixPass(),
    )
    passes(ir_model)
    return ir.serde.serialize_model(ir_model)
