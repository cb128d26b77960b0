"""Normalise a loaded model so that every later stage sees one clean form.

Each step is a pass in `chainx.onnx.passes`; this module fixes their order.
"""

from __future__ import annotations

import onnx

from chainx.errors import ChainxError
from chainx.onnx.passes.allowzero import DropNeedlessAllowzero
from chainx.onnx.passes.channel_shuffle import ShuffleToGather
from chainx.onnx.passes.channels_last import ChannelsFirstInput
from chainx.onnx.passes.complete_shapes import CompleteShapes
from chainx.onnx.passes.contrib_ops import LowerFusedOps
from chainx.onnx.passes.explicit_auto_pad import ExplicitAutoPad
from chainx.onnx.passes.float16 import Float16AsFloat32
from chainx.onnx.passes.free_batch import FreeFixedBatch
from chainx.onnx.passes.head_batch import UnmergeHeadBatch
from chainx.onnx.passes.head_bias import BiasBeforeHeadSplit
from chainx.onnx.passes.infer_shapes import InferShapes
from chainx.onnx.passes.initializer_inputs import InitializerInputsAsConstants
from chainx.onnx.passes.name_nodes import NameNodes
from chainx.onnx.passes.opset_down import DowngradeOpset
from chainx.onnx.passes.opset_up import UpgradeOpset
from chainx.onnx.passes.optimize import Optimize
from chainx.onnx.passes.packed_projection import SplitPackedProjection
from chainx.onnx.passes.quantised import RefuseQuantised
from chainx.onnx.passes.reshape_shapes import ConstantReshapeShapes
from chainx.onnx.passes.select_io import SelectIO
from chainx.onnx.passes.shape_reads import FoldStaticShapeReads
from chainx.onnx.passes.token_matmul import FoldTokenFlatten


def normalise(
    model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None
) -> onnx.ModelProto:
    """Fold constants, drop Identity nodes, make padding explicit and infer every shape.

    A model with several inputs or outputs is cut down to the image input and the class
    output that `input_name` and `output_name` choose. The caller's model is not changed.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model = RefuseQuantised()(model).model
    model = LowerFusedOps()(model).model
    model = Float16AsFloat32()(model).model
    model = SelectIO(input_name, output_name)(model).model
    model = ChannelsFirstInput()(model).model
    model = UpgradeOpset()(model).model
    model = DowngradeOpset()(model).model
    model = InitializerInputsAsConstants()(model).model
    # Before the optimiser, which would call unnamed nodes "node", "node_1", …
    model = NameNodes()(model).model
    try:
        model = Optimize()(model).model
    except Exception as exc:  # onnxscript raises many unrelated types for a model it rejects
        raise ChainxError(
            f"the model could not be normalised ({type(exc).__name__}: {exc}). "
            "Re-export it with a recent exporter."
        ) from None
    model = ExplicitAutoPad()(model).model
    model = NameNodes()(model).model
    model = InferShapes()(model).model
    completed = CompleteShapes()(model)
    reads = FoldStaticShapeReads()(completed.model)
    reshapes = ConstantReshapeShapes()(reads.model)
    if completed.modified or reads.modified or reshapes.modified:
        # With every size known, shape arithmetic (Shape → Gather → Div → Slice) folds.
        model = InferShapes()(Optimize()(reshapes.model).model).model
        model = CompleteShapes()(model).model
    model = DropNeedlessAllowzero()(model).model
    # tf2onnx's attention: Linear layers on tokens flattened, heads merged into the batch,
    # projection biases added per head.
    for step in (FoldTokenFlatten(), UnmergeHeadBatch(), BiasBeforeHeadSplit()):
        changed = step(model)
        if changed.modified:
            model = InferShapes()(changed.model).model
    split = SplitPackedProjection()(model)
    if split.modified:
        model = InferShapes()(split.model).model
    shuffled = ShuffleToGather()(model)
    if shuffled.modified:
        model = InferShapes()(shuffled.model).model
    freed = FreeFixedBatch()(model)
    if freed.modified:
        model = InferShapes()(freed.model).model
    return model


def float32_channels_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """A chain as torch and chainx's probes read it: float32 and channels-first. The chain
    itself keeps the source's element type and layout."""
    twin = onnx.ModelProto.FromString(model.SerializeToString())
    return ChannelsFirstInput()(Float16AsFloat32()(twin).model).model
