"""Rebuild the scored graph with only the channels that can matter: the ONNX chain."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from chainx.channels.analysis import analyse_channels
from chainx.channels.emitter import Emitter, WeightSlice
from chainx.channels.states import Masks
from chainx.onnx.graph import GraphIndex, live_nodes


@dataclass
class SurgeryResult:
    model: onnx.ModelProto
    slices: list[WeightSlice]
    frozen: list[tuple[str, str]]
    refilled: int = 0
    # Original tensor → the chain's tensor that holds it and the original channels it holds
    # (on the tensor's unit axis), for every tensor a node of the chain computes.
    layouts: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


def shrink(model: onnx.ModelProto, carried: Masks | None = None) -> SurgeryResult:
    """The smallest graph that computes what `model` computes on every needed channel, and
    on the `carried` channels (tensor → mask) whatever their value."""
    g = GraphIndex.build(model)
    analysis = analyse_channels(g, carried)
    em = Emitter(analysis.states)
    for node in g.nodes:
        if analysis.states.is_dead(node):
            for name in node.output:
                em.set(name, "", np.arange(0))
            continue
        analysis.rules[node.name].emit(node, em)
    outputs = []
    for info in model.graph.output:
        name = em.remapped(info.name, np.arange(g.width[info.name]))
        if name != info.name:
            # The copied producer still writes the output's name: give it a fresh one.
            inner = em.fresh(f"{info.name}_chainx_inner")
            for node in em.nodes:
                for names in (node.input, node.output):
                    for i, used in enumerate(names):
                        if used == info.name:
                            names[i] = inner
            em.nodes.append(
                helper.make_node("Identity", [name], [info.name], name=em.fresh(info.name))
            )
        outputs.append(info)
    graph = helper.make_graph(
        live_nodes(em.nodes, [o.name for o in outputs]),
        model.graph.name,
        list(model.graph.input),
        outputs,
        initializer=[],
    )
    used = {name for node in graph.node for name in node.input}
    graph.initializer.extend(init for name, init in em.initializers.items() if name in used)
    result = helper.make_model(
        graph, opset_imports=list(model.opset_import), ir_version=model.ir_version
    )
    result.producer_name = "chainx"
    used_slices = [s for s in em.slices if any(n.name == s.node for n in graph.node)]
    computed = {name for node in graph.node for name in node.output}
    layouts = {t: placed for t, placed in em.placed().items() if placed[0] in computed}
    return SurgeryResult(result, used_slices, em.frozen, em.refilled, layouts)


def present_units(
    chain: onnx.ModelProto, slices: list[WeightSlice], layers: dict[str, int]
) -> dict[str, np.ndarray]:
    """Per scored layer (node name → unit count), the units the chain physically computes.

    A sliced layer computes the rows of its slice (a Gemm without transB holds its units in
    the weight's columns); a layer left whole computes all; a layer gone computes none.
    """
    nodes = {node.name: node for node in chain.graph.node}
    rows: dict[str, np.ndarray] = {}
    for piece in slices:
        node = nodes.get(piece.node)
        if node is None:
            continue
        by_row = node.op_type == "Conv" or any(a.name == "transB" and a.i for a in node.attribute)
        rows[piece.node] = np.asarray(piece.axes[0] if by_row else piece.axes[1], np.int64)
    return {
        layer: rows.get(layer, np.arange(total if layer in nodes else 0))
        for layer, total in layers.items()
    }
