"""One rule per op type: how channels flow through it, and how to rebuild it smaller.

Every rule answers three questions about a node, each on per-channel boolean arrays over
the channel axis (axis 1) of its activations:

- `zeros`: which output channels are identically zero, given which input channels are;
- `consts`: which output channels are a known constant (the same value at every pixel and
  image), given the constants of the inputs;
- `needs`: which input channels can change a needed output channel;
- `emit`: how to write the node into the smaller graph, given the *layout* of each input
  (the original channel indices that the emitted tensor still carries). A channel missing
  from a layout is a known constant (zero, most often), or not needed by anything downstream.

An op without a rule, or with attributes a rule does not understand, is frozen: it sees
every channel of its inputs in the original order, and all its outputs are needed and live.
That keeps the export exact; it only makes it less small.
"""

from __future__ import annotations

import numpy as np
import onnx

from chainx.channels.emitter import Emitter
from chainx.channels.states import Masks, Values
from chainx.onnx.graph import GraphIndex


class Rule:
    """The frozen behaviour, which is also the default for every op.

    A rule reads channels on axis 1 unless it sets `any_axis`: then its `accepts` checks
    the channel axes (`GraphIndex.axis`) itself.
    """

    frozen = True
    any_axis = False

    def accepts(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        return True

    def applies(self, node: onnx.NodeProto, g: GraphIndex) -> bool:
        """Whether this rule answers for the node: its axes are understood and it accepts."""
        if not self.any_axis:
            names = [*g.activation_inputs(node), *node.output]
            if any(g.axis.get(name, 1) != 1 for name in names):
                return False
        return self.accepts(node, g)

    def zeros(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks) -> None:
        for name in node.output:
            if g.is_activation(name):
                zero[name] = np.zeros(g.width[name], bool)

    def consts(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, const: Values) -> None:
        for name in node.output:
            if g.is_activation(name):
                const[name] = np.full(g.width[name], np.nan)

    def needs(self, node: onnx.NodeProto, g: GraphIndex, zero: Masks, need: Masks) -> None:
        for name in g.activation_inputs(node):
            need[name] |= True

    def emit(self, node: onnx.NodeProto, em: Emitter) -> None:
        g = em.g
        for name in g.activation_inputs(node):
            em.refilled += g.width[name] - int(
                np.isin(np.arange(g.width[name]), em.layout(name)).sum()
            )
        inputs = [
            em.remapped(name, np.arange(g.width[name])) if g.is_activation(name) else em.src(name)
            for name in node.input
        ]
        em.copy(node, inputs)
        for name in node.output:
            if g.is_activation(name):
                em.set(name, name, np.arange(g.width[name]))
        if g.activation_inputs(node):
            em.frozen.append((node.name, node.op_type))


FROZEN = Rule()


class Cases:
    """One op type, several rules: the first that applies answers for a node."""

    def __init__(self, *cases: Rule) -> None:
        self.cases = cases

    def case(self, node: onnx.NodeProto, g: GraphIndex) -> Rule:
        return next((case for case in self.cases if case.applies(node, g)), FROZEN)


def single_io(node: onnx.NodeProto, g: GraphIndex) -> tuple[str, str]:
    return node.input[0], node.output[0]


def one_activation_in_out(node: onnx.NodeProto, g: GraphIndex) -> bool:
    outputs = [name for name in node.output if name]
    return (
        len(outputs) == 1
        and g.is_activation(node.input[0])
        and g.is_activation(outputs[0])
        and g.width[node.input[0]] == g.width[outputs[0]]
        and g.axis[node.input[0]] == g.axis[outputs[0]]
        and all(name == "" or name in g.constants for name in node.input[1:])
    )
