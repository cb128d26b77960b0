"""Upgrade a model older than opset 11 with onnx's version converter."""

from __future__ import annotations

import onnx
import onnx.version_converter

from chainx.errors import ChainxError
from chainx.onnx.passes.base import ModelPass, PassResult, default_opset

# Before opset 11, Pad, Slice, Clip and friends carried their parameters as attributes that
# the channel rules do not read.
OLDEST_OPSET = 11
UPGRADE_TARGET = 13

# What onnx's converter raises for a model it cannot convert: a failed adapter assertion comes
# out of its C++ as a bare RuntimeError; ConvertError is the type it declares for the rest.
CONVERTER_ERRORS = (RuntimeError, onnx.version_converter.ConvertError)


class UpgradeOpset(ModelPass):
    """A model older than `oldest` is converted to opset `target`; newer ones stay as they are."""

    def __init__(self, oldest: int = OLDEST_OPSET, target: int = UPGRADE_TARGET) -> None:
        self.oldest = oldest
        self.target = target

    def call(self, model: onnx.ModelProto) -> PassResult:
        opset = default_opset(model)
        if opset >= self.oldest:
            return PassResult(model, modified=False)
        try:
            converted = onnx.version_converter.convert_version(model, self.target)
            onnx.checker.check_model(converted)
        except (*CONVERTER_ERRORS, onnx.checker.ValidationError) as exc:
            raise ChainxError(
                f"the model uses opset {opset}, older than the oldest chainx reads "
                f"({self.oldest}), and onnx's version converter cannot upgrade it "
                f"({type(exc).__name__}: {str(exc)[:200]}). Export it again with opset "
                f"{self.oldest} or newer."
            ) from None
        return PassResult(converted, modified=True)
