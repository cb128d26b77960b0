"""The chain: export with metadata, verification in onnxruntime, and the result records."""
