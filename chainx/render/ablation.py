"""The part of a chain that switching one filter off changes, as a model of its own.

Why: a link a → b is measured by running the chain again with filter a off, but only the
nodes between a's scored tensor and its targets can change, so only they run again, fed
the chain's own values for everything else. And until the first node that mixes channels,
the change stays in a's channel: elementwise ops, pooling, a depthwise convolution map
each channel to itself. A convolution that mixes them is linear in its input, so where it
reads such a tensor its ablated output is its output on the chain plus the convolution of
the one changed channel with the one column of weights that reads it: a 1/C-th of the
convolution, exactly the same change up to the order of the sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from chainx.onnx.graph import attributes, live_nodes

# Ops that map each channel of their inputs to the same channel of their output.
ELEMENTWISE = {
    "Abs", "Add", "Clip", "Div", "Elu", "Erf", "Exp", "Gelu", "HardSigmoid", "HardSwish",
    "Identity", "LeakyRelu", "Max", "Min", "Mul", "Neg", "Relu", "Selu", "Sigmoid", "Softplus",
    "Sub", "Sum", "Tanh",
}  # fmt: skip
POOLING = {"AveragePool", "MaxPool"}
INDEX = "ablation/index"


@dataclass
class AblationPart:
    """The nodes that read a source layer's scored tensor, directly or not, and that a
    target depends on; each Conv among them that mixes the channels of a tensor changed
    only in the ablated channel is replaced by its chain output plus that channel's share.

    Fed per run: the chain's values of `inputs` and of `conv_references`' tensors (the
    replaced Convs' outputs); the part's own unablated values of `local_references`'
    tensors, so that an ablation that changes nothing changes no bit; and, per ablated
    channel, its index and its column of each replaced Conv's weights (`columns`).
    """

    model: onnx.ModelProto
    source: str
    inputs: list[str]
    outputs: list[str]
    conv_references: dict[str, str] = field(default_factory=dict)  # part input → chain tensor
    local_references: dict[str, str] = field(default_factory=dict)  # part input → its tensor
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # part input → Conv weight
    # Every target keeps the change in the ablated channel: channels switched off together
    # then change each its own target channel as it would alone, so one run ablates them all.
    confined: bool = False

    def reads(self) -> list[str]:
        """The chain tensors the runs are fed."""
        locals_ = [name for name in self.local_references.values() if name != self.source]
        return list(dict.fromkeys([*self.inputs, *self.conv_references.values(), *locals_]))

    def unablated(
        self, session: ort.InferenceSession, values: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """The feed of every run, the source unablated, from the chain's `values`; and the
        targets' values from it."""
        feed = {name: values[name] for name in [*self.inputs, self.source]}
        feed.update({name: values[tensor] for name, tensor in self.conv_references.items()})
        if self.local_references:
            # The chain's values first, then the part's own: fused or not, its own ops give
            # the same bits in every run.
            feed.update(self.ablating(0))
            feed.update({name: values[tensor] for name, tensor in self.local_references.items()})
            inner = [name for name in self.local_references.values() if name != self.source]
            # An empty list of outputs would ask onnxruntime for all of them.
            own = dict(zip(inner, session.run(inner, feed), strict=True)) if inner else {}
            own[self.source] = values[self.source]
            feed.update({name: own[tensor] for name, tensor in self.local_references.items()})
        return feed, session.run(self.outputs, feed)

    def ablating(self, position: int) -> dict[str, np.ndarray]:
        """The index and weight columns that switch channel `position` off."""
        if not self.columns:
            return {}
        feed = {INDEX: np.array([position], np.int64)}
        for name, weight in self.columns.items():
            feed[name] = np.ascontiguousarray(weight[:, position : position + 1])
        return feed


def ablation_part(
    chain: onnx.ModelProto, source: str, targets: list[str], channel_axis: int = 1
) -> AblationPart:
    """The part between `source` and the `targets` it reaches (others are dropped); Convs
    are replaced by their channel's share only where the source's units are on axis 1."""
    downstream, nodes = {source}, []
    for node in chain.graph.node:
        if any(name in downstream for name in node.input):
            downstream.update(name for name in node.output if name)
            nodes.append(node)
    targets = [name for name in targets if name in downstream]
    nodes = live_nodes(nodes, targets)
    constants = {init.name: init for init in chain.graph.initializer}
    rewrite = _Rewrite(source, downstream, constants)
    if channel_axis == 1:
        nodes = rewrite.linearise(nodes)
    produced = {name for node in nodes for name in node.output}
    read = list(dict.fromkeys(name for node in nodes for name in node.input if name))
    fed = [name for name in read if name not in produced and name not in constants]
    added = {*rewrite.conv_references, *rewrite.local_references, *rewrite.columns, INDEX}
    inputs = [name for name in fed if name != source and name not in added]
    local_outputs = [name for name in rewrite.local_references.values() if name != source]
    graph = helper.make_graph(
        nodes,
        "ablation",
        [helper.make_tensor_value_info(name, _elem_type(name), None) for name in fed],
        [helper.make_empty_tensor_value_info(n) for n in dict.fromkeys([*targets, *local_outputs])],
        [constants[name] for name in read if name in constants],
    )
    model = helper.make_model(graph, opset_imports=chain.opset_import, ir_version=chain.ir_version)
    return AblationPart(
        model,
        source,
        inputs,
        targets,
        rewrite.conv_references,
        rewrite.local_references,
        rewrite.columns,
        confined=channel_axis == 1 and all(name in rewrite.local for name in targets),
    )


def _elem_type(name: str) -> int:
    return onnx.TensorProto.INT64 if name == INDEX else onnx.TensorProto.FLOAT


class _Rewrite:
    """Which tensors change in the ablated channel only, and the Convs that read them."""

    def __init__(
        self, source: str, downstream: set[str], constants: dict[str, onnx.TensorProto]
    ) -> None:
        self.downstream = downstream
        self.constants = constants
        self.local = {source}
        self.conv_references: dict[str, str] = {}
        self.local_references: dict[str, str] = {}
        self.columns: dict[str, np.ndarray] = {}

    def linearise(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        out: list[onnx.NodeProto] = []
        for node in nodes:
            changed = [name for name in node.input if name in self.downstream]
            if all(name in self.local for name in changed) and self._keeps_channels(node):
                self.local.update(name for name in node.output if name)
            elif self._mixes_local_channels(node):
                out += self._share(node)
                continue
            out.append(node)
        return out

    def _keeps_channels(self, node: onnx.NodeProto) -> bool:
        op = node.op_type
        if op in ELEMENTWISE:
            return True
        others = [name for name in node.input[1:] if name]
        if op == "BatchNormalization":
            return len(node.output) == 1 and all(name in self.constants for name in others)
        if op in POOLING:
            return len(node.output) == 1
        if op == "Pad":
            return self._pads_spatially(node)
        if op == "Conv":
            weight = self._weight(node)
            group = int(attributes(node).get("group", 1))
            return (
                weight is not None
                and weight.shape[1] == 1
                and group == weight.shape[0]
                and all(name in self.constants for name in others)
            )
        return False

    def _pads_spatially(self, node: onnx.NodeProto) -> bool:
        if len(node.input) < 2 or node.input[1] not in self.constants:
            return False
        if len(node.input) > 3 and node.input[3]:  # `axes`: not worth reading
            return False
        pads = numpy_helper.to_array(self.constants[node.input[1]])
        rank = len(pads) // 2
        return rank >= 2 and not pads[[0, 1, rank, rank + 1]].any()

    def _weight(self, node: onnx.NodeProto) -> np.ndarray | None:
        if len(node.input) < 2 or node.input[1] not in self.constants:
            return None
        weight = numpy_helper.to_array(self.constants[node.input[1]])
        return weight if weight.ndim >= 3 else None

    def _mixes_local_channels(self, node: onnx.NodeProto) -> bool:
        """A Conv of one group over a tensor changed in one channel, its weights constant."""
        if node.op_type != "Conv" or node.input[0] not in self.local:
            return False
        others = [name for name in node.input[1:] if name]
        weight = self._weight(node)
        group = int(attributes(node).get("group", 1))
        return weight is not None and group == 1 and all(n in self.constants for n in others)

    def _share(self, conv: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Conv(x') = Conv(x) + Conv(x'[c] − x[c], W[:, c]) without the bias, c the ablated
        channel, where x' and x differ in channel c only."""
        tensor, output = conv.input[0], conv.output[0]
        reference = f"{tensor}/unablated"
        self.local_references[reference] = tensor
        column, chain_output = f"{output}/column", f"{output}/chain"
        self.columns[column] = self._weight(conv)
        self.conv_references[chain_output] = output
        taken, untaken, change, share = (
            f"{output}/{suffix}" for suffix in ("ablated", "unablated_channel", "change", "share")
        )
        kept = {"auto_pad", "dilations", "kernel_shape", "pads", "strides"}
        kept_attributes = [a for a in conv.attribute if a.name in kept]
        one_column = helper.make_node("Conv", [change, column], [share], name=f"{conv.name}/share")
        one_column.attribute.extend(kept_attributes)
        return [
            helper.make_node("Gather", [tensor, INDEX], [taken], axis=1),
            helper.make_node("Gather", [reference, INDEX], [untaken], axis=1),
            helper.make_node("Sub", [taken, untaken], [change]),
            one_column,
            helper.make_node("Add", [chain_output, share], [output], name=conv.name),
        ]
