"""The rule registry: which rule answers for each op type (chainx/rules/ holds the rules).

An op type without an entry, or a node its rule does not accept, is frozen (`FROZEN`).
"""

from __future__ import annotations

import onnx

from chainx.channels.rules.base import FROZEN, Cases, Rule
from chainx.channels.rules.channelwise import (
    AveragePoolRule,
    BatchNormRule,
    ClipRule,
    NonZeroPreservingRule,
    ReduceRule,
    ResizeRule,
    SoftmaxRule,
    SqueezeRule,
    ZeroPreservingRule,
)
from chainx.channels.rules.heads import (
    HeadMatMulRule,
    HeadMergeRule,
    HeadSplitRule,
    OffAxisRule,
    TransposeRule,
    UnitAxesRule,
)
from chainx.channels.rules.mixing import BinaryRule, ConvRule, GemmRule
from chainx.channels.rules.reindex import (
    ConcatRule,
    GatherRule,
    PadRule,
    ShapeRule,
    SliceRule,
    SplitRule,
)
from chainx.channels.rules.reshape import FlattenRule, UnitReshapeRule
from chainx.channels.states import Masks, Values
from chainx.onnx.axes import ELEMENTWISE_OPS
from chainx.onnx.graph import GraphIndex

__all__ = ["FROZEN", "RULES", "Masks", "Rule", "Values", "rule_for"]

ZERO_PRESERVING_OPS = (
    "Relu LeakyRelu HardSwish Tanh Identity Neg Abs Erf Gelu Elu Selu Softsign Mish "
    "MaxPool GlobalAveragePool GlobalMaxPool LpPool Dropout"
).split()
NON_ZERO_PRESERVING_OPS = "Sigmoid HardSigmoid Softplus Exp Cos".split()

RULES: dict[str, Rule | Cases] = {
    **{op: ZeroPreservingRule(any_axis=op in ELEMENTWISE_OPS) for op in ZERO_PRESERVING_OPS},
    **{op: NonZeroPreservingRule(any_axis=op in ELEMENTWISE_OPS) for op in NON_ZERO_PRESERVING_OPS},
    "PRelu": ZeroPreservingRule(params=(1,)),
    "AveragePool": AveragePoolRule(),
    **{op: ReduceRule() for op in "ReduceMean ReduceMax ReduceMin ReduceSum".split()},
    "Squeeze": Cases(SqueezeRule(), OffAxisRule()),
    "Unsqueeze": OffAxisRule(),
    "Transpose": TransposeRule(),
    "Softmax": SoftmaxRule(),
    "Resize": ResizeRule(),
    "Upsample": ResizeRule(),
    "Clip": ClipRule(any_axis=True),
    "BatchNormalization": BatchNormRule(),
    "InstanceNormalization": NonZeroPreservingRule(params=(1, 2), vectors=True),
    "Pad": PadRule(),
    "Slice": Cases(SliceRule(), OffAxisRule()),
    "Gather": GatherRule(),
    "Split": Cases(SplitRule(), OffAxisRule()),
    "Add": BinaryRule(),
    "Sub": BinaryRule(),
    "Mul": BinaryRule(),
    "Div": BinaryRule(),
    "Pow": BinaryRule(),
    "Concat": ConcatRule(),
    "Conv": ConvRule(),
    "Gemm": GemmRule(),
    "MatMul": Cases(GemmRule(), HeadMatMulRule()),
    "Flatten": FlattenRule(),
    "Shape": ShapeRule(),
    "Reshape": Cases(
        UnitReshapeRule(), FlattenRule(), HeadSplitRule(), HeadMergeRule(), UnitAxesRule()
    ),
}


def rule_for(node: onnx.NodeProto, g: GraphIndex) -> Rule:
    rule = RULES.get(node.op_type, FROZEN)
    if isinstance(rule, Cases):
        return rule.case(node, g)
    return rule if rule.applies(node, g) else FROZEN
