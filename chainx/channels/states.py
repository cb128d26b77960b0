"""What channel analysis finds, per activation: zero, constant, needed, live.

Forward, every channel of every activation gets a state: identically zero (`zero`), a known
constant k at every pixel and image (`const`, NaN where not constant; zero channels are 0),
or live. Backward, `need` marks the channels that can change a model output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from chainx.onnx.graph import GraphIndex

Masks = dict[str, np.ndarray]
Values = dict[str, np.ndarray]


@dataclass
class ChannelStates:
    g: GraphIndex
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
