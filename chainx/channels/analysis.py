"""Channel analysis: run every node's rule forward (zero and constant channels), then
backward (needed channels), over the graph in topological order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chainx.channels.registry import rule_for
from chainx.channels.rules.base import Rule
from chainx.channels.states import ChannelStates, Masks, Values
from chainx.onnx.graph import GraphIndex


@dataclass
class ChannelAnalysis:
    states: ChannelStates
    rules: dict[str, Rule]  # node name → the rule that answers for it


def analyse_channels(g: GraphIndex, carried: Masks | None = None) -> ChannelAnalysis:
    """`carried` (tensor → channel mask) names channels to compute whatever their value:
    they count as live and needed (a deploy chain's zero padding filters)."""
    carried = carried or {}
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
            if name in carried:
                zero[name] = zero[name] & ~carried[name]
                const[name] = np.where(carried[name], np.nan, const[name])
    need: Masks = {name: np.zeros(width, bool) for name, width in g.width.items()}
    for name, channels in carried.items():
        need[name] |= channels
    for name in g.output_names:
        need[name] |= True
    for node in reversed(g.nodes):
        rules[node.name].needs(node, g, zero, need)
    return ChannelAnalysis(ChannelStates(g=g, zero=zero, const=const, need=need), rules)
