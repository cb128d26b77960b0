"""Filter visualisations by activation maximisation, on a tiny chain."""

from __future__ import annotations

import numpy as np
from conftest import inputs_for, tiny_model

from chainx.channels.surgery import shrink
from chainx.images import Preprocessing
from chainx.onnx.score_points import find_score_points, scored_model
from chainx.render.featuremaps import layer_activations
from chainx.scoring.activation_max import TILE, Target, dataset_examples, visualise

PREP = Preprocessing(size=8, resize=8, mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)


def _chain() -> tuple[object, list[str]]:
    model = tiny_model("plain")
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    return shrink(scored_model(model, points, multipliers)).model, [p.layer for p in points]


def _response(chain: object, layer: str, position: int, image: np.ndarray) -> float:
    preprocessed = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)
    preprocessed = (preprocessed - 0.5) / 0.25
    return float(layer_activations(chain, preprocessed[None])[layer][0, position].mean())


def test_the_visualisation_excites_its_filter_more_than_a_grey_image() -> None:
    chain, layers = _chain()
    targets = [Target(layers[1], 3, 3), Target(layers[0], 5, 5)]
    images = visualise(chain, targets, PREP, steps=48)
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
    grey = np.full((8, 8, 3), 128, np.uint8)
    for target, image in zip(targets, images, strict=True):
        assert image.std() > 1.0  # not blank
        excited = _response(chain, target.layer, target.position, image)
        assert excited > _response(chain, target.layer, target.position, grey)


def test_dataset_examples_are_the_best_image_and_the_crops_where_the_filter_peaks() -> None:
    chain, layers = _chain()
    images = inputs_for(tiny_model("plain"), count=5)
    activation = layer_activations(chain, images)[layers[0]][:, 2]
    crops = dataset_examples(activation, images, PREP)
    assert len(crops) == 4 and all(crop.size == (TILE, TILE) for crop in crops)


def test_a_densenet_chain_is_visualised() -> None:
    # The case that failed with "MKL FFT error: … Inconsistent configuration parameters":
    # torchvision's DenseNet-121, random weights, 64 px (pytorch#154477, torch < 2.8).
    from chainx.onnx.normalise import normalise
    from tools.zoo import export

    model = normalise(export("densenet121", "torchscript"))
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    chain = shrink(scored_model(model, points, multipliers)).model
    prep = Preprocessing(size=64, resize=73, mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)
    targets = [Target(points[0].layer, 0, 0), Target(points[-1].layer, 1, 1)]
    images = visualise(chain, targets, prep, steps=2)
    assert images.shape == (2, 64, 64, 3) and all(image.std() > 0 for image in images)
