"""Which channels are identically zero (forward) and which can matter (backward)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from chainx.channel_rules import Masks, Rule, rule_for
from chainx.onnx_graph import GraphIndex


@dataclass
class ChannelAnalysis:
    """Per activation and channel: `zero` (always 0) and `need` (can change an output)."""

    g: GraphIndex
    rules: dict[str, Rule]
    zero: Masks
    need: Masks

    def live(self, name: str) -> np.ndarray:
        return self.need[name] & ~self.zero[name]

    def is_dead(self, node: onnx.NodeProto) -> bool:
        """True when no output of the node carries a needed, non-zero channel."""
        outputs = [name for name in node.output if name]
        return all(self.g.is_activation(name) for name in outputs) and not any(
            self.live(name).any() for name in outputs
        )


def analyse_channels(g: GraphIndex) -> ChannelAnalysis:
    rules = {node.name: rule_for(node, g) for node in g.nodes}
    zero: Masks = {g.input_name: np.zeros(g.width[g.input_name], bool)}
    for node in g.nodes:
        rules[node.name].zeros(node, g, zero)
    need: Masks = {name: np.zeros(width, bool) for name, width in g.width.items()}
    for name in g.output_names:
        need[name] |= True
    for node in reversed(g.nodes):
        rules[node.name].needs(node, g, zero, need)
    return ChannelAnalysis(g=g, rules=rules, zero=zero, need=need)
