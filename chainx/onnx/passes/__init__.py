"""Normalisation, one pass per concern: each takes a model and returns a PassResult.

`chainx.onnx.normalise` runs them in order; a pass may change the model it is given.
"""
