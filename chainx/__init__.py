"""chainx: extract the local inference chain of a deep network as a standalone ONNX graph."""

__version__ = "0.1.0"
