"""Lower onnxruntime's fused ops back to standard ONNX; name the ones that cannot be."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chainx.errors import ChainxError
from chainx.onnx.passes.base import ModelPass, PassResult, default_opset, describe

STANDARD_DOMAINS = {"", "ai.onnx"}
MICROSOFT = "com.microsoft"
# Defaults of the activation parameters, as onnxruntime's fused kernels read them.
_GEMM_ACTIVATION_ATTRIBUTES = {
    "activation",
    "activation_alpha",
    "activation_beta",
    "activation_gamma",
}
ACTIVATION_DEFAULTS = {"LeakyRelu": [0.01], "HardSigmoid": [0.2, 0.5], "Clip": [-np.inf, np.inf]}


class LowerFusedOps(ModelPass):
    """A file onnxruntime saved after its own graph optimisation (`optimized_model_filepath`
    at the extended level) holds com.microsoft FusedConv and FusedGemm: a Conv or Gemm,
    an optional residual input added, and an activation, in one node. Written out again as
    those standard ops, the model is the one every later stage reads. Any other op outside
    the standard domain is refused, all of them named at once."""

    def call(self, model: onnx.ModelProto) -> PassResult:
        graph = model.graph
        opset = default_opset(model)
        nodes: list[onnx.NodeProto] = []
        modified = False
        for node in graph.node:
            lowered = None
            if node.domain == MICROSOFT and node.op_type == "FusedConv":
                lowered = _lower(node, "Conv", {"activation", "activation_params"}, graph, opset)
            elif node.domain == MICROSOFT and node.op_type == "FusedGemm":
                lowered = _lower(node, "Gemm", _GEMM_ACTIVATION_ATTRIBUTES, graph, opset)
            nodes.extend(lowered or [node])
            modified |= lowered is not None
        foreign = [describe(n) for n in nodes if n.domain not in STANDARD_DOMAINS]
        if foreign:
            raise ChainxError(
                f"{len(foreign)} nodes use ops outside the ONNX standard, such as "
                "onnxruntime writes when it saves a model after its graph optimisation: "
                f"{', '.join(foreign[:10])}"
                + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
                + ". chainx lowers FusedConv and FusedGemm only. Use the model file the "
                "optimised one was made from, or save it with "
                "graph_optimization_level=ORT_ENABLE_BASIC."
            )
        used = {n.domain for n in nodes} | STANDARD_DOMAINS
        imports = [o for o in model.opset_import if o.domain in used]
        if modified or len(imports) != len(model.opset_import):
            del graph.node[:]
            graph.node.extend(nodes)
            del model.opset_import[:]
            model.opset_import.extend(imports)
            modified = True
        return PassResult(model, modified)


def _lower(
    node: onnx.NodeProto, op: str, fused: set[str], graph: onnx.GraphProto, opset: int
) -> list[onnx.NodeProto]:
    """The base op, `+ Z` where FusedConv has a fourth input, then the activation."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    activation = attributes.get("activation", b"").decode() or None
    if op == "Conv":
        params = list(attributes.get("activation_params", []))
    else:
        params = [
            attributes[name]
            for name in ("activation_alpha", "activation_beta")
            if name in attributes
        ]
    inputs = list(node.input)
    residual = inputs[3] if op == "Conv" and len(inputs) > 3 and inputs[3] else None
    base_inputs = inputs[:3]
    while base_inputs and not base_inputs[-1]:
        base_inputs.pop()
    kept = [a for a in node.attribute if a.name not in fused]
    result = node.output[0]
    prefix = node.name or result  # unique where names are; output names always are
    stages = [op] + (["Add"] if residual else []) + ([activation] if activation else [])
    names = [f"{result}_{stage.lower()}" for stage in stages[:-1]] + [result]
    base = helper.make_node(op, base_inputs, [names[0]], name=node.name)  # the scored layer
    base.attribute.extend(kept)
    lowered = [base]
    if residual:
        lowered.append(
            helper.make_node("Add", [names[0], residual], [names[1]], name=f"{prefix}_add")
        )
    if activation:
        lowered.append(
            _activation(
                activation,
                params,
                names[-2],
                result,
                f"{prefix}_{activation.lower()}",
                graph,
                opset,
            )
        )
    return lowered


def _activation(
    kind: str,
    params: list[float],
    source: str,
    result: str,
    name: str,
    graph: onnx.GraphProto,
    opset: int,
) -> onnx.NodeProto:
    values = params or ACTIVATION_DEFAULTS.get(kind, [])
    if kind in {"Relu", "Tanh", "Sigmoid"}:
        return helper.make_node(kind, [source], [result], name=name)
    if kind == "LeakyRelu":
        return helper.make_node(kind, [source], [result], name=name, alpha=values[0])
    if kind == "HardSigmoid":
        return helper.make_node(
            kind, [source], [result], name=name, alpha=values[0], beta=values[1]
        )
    if kind == "Clip" and opset >= 11:
        bounds = [f"{name}_min", f"{name}_max"]
        for bound, value in zip(bounds, values, strict=True):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), bound))
        return helper.make_node(kind, [source, *bounds], [result], name=name)
    if kind == "Clip":
        return helper.make_node(kind, [source], [result], name=name, min=values[0], max=values[1])
    raise ChainxError(
        f"the fused node that writes {result!r} ends in the activation {kind!r}, which chainx "
        "cannot lower. Use the model file the optimised one was made from."
    )
