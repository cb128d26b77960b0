"""SMOE-scale featuremaps computed from the chain itself."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from conftest import inputs_for, random_multipliers, tiny_model
from PIL import Image

from chainx.channels.surgery import shrink
from chainx.images import Preprocessing
from chainx.onnx.score_points import find_score_points, scored_model
from chainx.render.featuremaps import featuremap_strips, layer_activations, normalised, smoe_scale


def test_smoe_scale_is_zero_where_channels_agree_and_high_where_one_fires() -> None:
    activation = np.ones((4, 3, 3))
    activation[0, 1, 1] = 9.0  # one channel fires at the centre
    scale = smoe_scale(activation)
    assert scale.shape == (3, 3)
    assert np.allclose(np.delete(scale.reshape(-1), 4), 0.0, atol=1e-9)
    assert scale[1, 1] > 0.5
    assert np.isfinite(smoe_scale(np.zeros((4, 3, 3)))).all()  # dead layers stay finite


def test_normalisation_maps_into_the_unit_interval() -> None:
    values = normalised(np.random.default_rng(0).standard_normal((5, 5)) ** 2)
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.std() > 0
    assert (normalised(np.full((4, 4), 3.0)) == 0).all()


def test_one_strip_per_retained_layer_from_the_chain(tmp_path: Path) -> None:
    model = tiny_model("projection")
    points = find_score_points(model)
    multipliers = random_multipliers(points, 0.5, seed=2)
    chain = shrink(scored_model(model, points, multipliers)).model
    images = inputs_for(model, count=3)
    activations = layer_activations(chain, images)
    kept = {p.layer for p in points if multipliers[p.layer].any()}
    assert set(activations) <= kept and activations
    for layer, values in activations.items():
        assert values.shape[0] == 3 and values.shape[1] <= (multipliers[layer] != 0).sum()
    prep = Preprocessing(size=8, resize=8, mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)
    strips = featuremap_strips(activations, images, prep, {})
    assert set(strips) == set(activations)
    for name, png in strips.values():
        assert name.endswith(".png")
        pixels = np.asarray(Image.open(io.BytesIO(png)), np.float64)
        assert pixels.shape == (112, 3 * 112, 3)
        assert np.isfinite(pixels).all() and pixels.std() > 1.0  # not blank
