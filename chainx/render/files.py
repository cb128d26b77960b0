"""Everything drawn beside chain.onnx, in memory: the diagram, the featuremap strips of every
retained layer and the filter sheets of its top filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx

from chainx.chain.result import LayerGraph
from chainx.images import Preprocessing
from chainx.render.diagram import render_chain_diagram
from chainx.render.featuremaps import featuremap_strips, layer_activations
from chainx.render.token_maps import token_maps, token_unit_maps

if TYPE_CHECKING:
    from chainx.scoring.activation_max import Target


@dataclass
class DrawnFiles:
    files: dict[str, bytes]  # relative path in the output folder → content
    featuremaps: dict[str, str]  # layer node name → its strip's relative path
    filter_sheets: dict[str, str]  # layer node name → its unit sheet's relative path


def render_files(
    chain: onnx.ModelProto,
    graph: LayerGraph,
    title: str,
    images: np.ndarray,
    prep: Preprocessing,
    kept: dict[str, np.ndarray],
    multipliers: dict[str, np.ndarray],
    filter_images: int,
    kinds: dict[str, str] | None = None,
) -> DrawnFiles:
    """The diagram, the featuremaps and (with `filter_images` > 0) the unit sheets.

    `kept` holds, per layer, the original indices of the filters the chain computes with a
    non-zero score, in the chain's channel order. `kinds` (layer → ScorePoint.kind) says
    which layers hold image-like filters; without it every spatial layer is taken for one.
    Featuremaps of a transformer's heads and MLP neurons are drawn on the patch grid
    (token_maps.py); so are their sheets' best crops.
    """
    names = {layer.node: layer.display for layer in graph.layers}
    source, svg = render_chain_diagram(graph, title)
    files = {"chain.gv": source.encode("utf-8"), "chain.svg": svg}
    filters = None if kinds is None else {k for k, kind in kinds.items() if kind == "filter"}
    activations = layer_activations(chain, images, filters)
    featuremaps = {}
    strips = featuremap_strips(activations, images, prep, names)
    if kinds is not None:
        strips |= token_maps(chain, images, prep, names, kinds)
    for layer, (name, png) in strips.items():
        featuremaps[layer] = f"featuremaps/{name}"
        files[featuremaps[layer]] = png
    filter_sheets = {}
    if filter_images:
        from chainx.scoring.activation_max import filter_sheets as draw_sheets  # torch

        units = activations | (token_unit_maps(chain, images, kinds) if kinds else {})
        targets = _top_units(units, kept, multipliers, filter_images, kinds or {})
        sheets = draw_sheets(chain, targets, units, images, prep, names)
        for layer, (name, png) in sheets.items():
            filter_sheets[layer] = f"filters/{name}"
            files[filter_sheets[layer]] = png
    return DrawnFiles(files, featuremaps, filter_sheets)


def _top_units(
    activations: dict[str, np.ndarray],
    kept: dict[str, np.ndarray],
    multipliers: dict[str, np.ndarray],
    count: int,
    kinds: dict[str, str],
) -> list[Target]:
    """The `count` highest-scored kept units of every retained layer drawn on a grid."""
    from chainx.scoring.activation_max import Target

    targets = []
    for layer, activation in activations.items():
        units = kept[layer]
        if activation.shape[1] != len(units):
            continue
        order = np.argsort(-multipliers[layer][units], kind="stable")[:count]
        kind = kinds.get(layer, "filter")
        targets += [Target(layer, int(i), int(units[i]), kind) for i in order]
    return targets
