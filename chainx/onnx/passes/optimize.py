"""onnxscript's optimiser: fold constants, drop Identity nodes and dead code, lift constants."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import rewriter
from onnxscript.optimizer import _constant_folding
from onnxscript.rewriter.rules.common import _fuse_batchnorm

from chainx.onnx.passes.base import ModelPass, PassResult


class Optimize(ModelPass):
    """onnxscript's optimizer without BatchNorm fusion.

    Fusing BN would rewrite the Conv weights, and the chain must hold exact copies of the
    user's filters. ConstantOfShape of a constant shape is folded too: exporters build pad
    sizes with it, and the channel analysis needs them as constants. Every constant ends up
    an initializer, with duplicates merged and names made unique.
    """

    def call(self, model: onnx.ModelProto) -> PassResult:
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
                        should_fold=_fold_constant_of_shape,
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
        result = passes(ir_model)
        return PassResult(ir.serde.serialize_model(result.model), result.modified)


def _fold_constant_of_shape(node: ir.Node) -> bool | None:
    """True folds the node whatever its size; None leaves the decision to the folder."""
    return True if node.op_type == "ConstantOfShape" else None
