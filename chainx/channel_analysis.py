"""Which channels are constant (forward) and which can matter (backward).

Forward, every channel of every activation gets a state: identically zero (`zero`), a known
constant k at every pixel and image (`const`, NaN where not constant; zero channels are 0),
or live. Backward, `need` marks the channels that can change a model output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from chainx.channel_rules import Masks, Rule, Values, rule_for
from chainx.onnx_graph import GraphIndex


@dataclass
class ChannelAnalysis:
    g: GraphIndex
    rules: dict[str, Rule]
    zero: Masks
    const: Values
    need: Masks

    def live(self, name: str) -> np.ndarray:
        """Needed channels whose values are not known constants: those a tensor must carry."""
        return self.need[name] & np.isnan(self.const[name])

    def is_dead(self, node: onnx.NodeProto) -> bool:
        """True when no output of the node carries a needed, non-constant channel."""
        outputs = [name for name in node.output if name]
        return all(self.g.is_activation(name) for name in outputs) and not any(
            self.live(name).any() for name in outputs
        )


def analyse_channels(g: GraphIndex) -> ChannelAnalysis:
    rules = {node.name: rule_for(node, g) for node in g.nodes}
    zero: Masks = {g.input_name: np.zeros(g.width[g.input_name], bool)}
    const: Values = {g.input_name: np.full(g.width[g.input_name], np.nan)}
    for node in g.nodes:
        rules[node.name].zeros(node, g, zero)
        rules[node.name].consts(node, g, zero, const)
        for name in node.output:
            if name in const:
                # A zero channel is the constant 0, whatever the rule knows.
                values = np.where(np.isfinite(const[name]), const[name], np.nan)
                const[name] = np.where(zero[name], 0.0, values)
    need: Masks = {name: np.zeros(width, bool) for name, width in g.width.items()}
    for name in g.output_names:
        need[name] |= True
    for node in reversed(g.nodes):
        rules[node.name].needs(node, g, zero, need)
    return ChannelAnalysis(g=g, rules=rules, zero=zero, const=const, need=need)
