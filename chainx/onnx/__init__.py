"""ONNX in: loading with safety checks, normalisation passes, score points, one runtime."""
