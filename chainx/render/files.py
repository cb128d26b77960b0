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

if TYPE_CHECKING:
    from chainx.scoring.activation_max import Target


@dataclass
class DrawnFiles:
    files: dict[str, bytes]  # relative path in the output folder → content
    featuremaps: dict[str, str]  # layer node name → its strip's relative path
    filter_sheets: dict[str, str]  # layer node name → its sheet's relative path


def render_files(
    chain: onnx.ModelProto,
    graph: LayerGraph,
    title: str,
    images: np.ndarray,
    prep: Preprocessing,
    kept: dict[str, np.ndarray],
    multipliers: dict[str, np.ndarray],
    filter_images: int,
    filter_layers: set[str] | None = None,
) -> DrawnFiles:
    """The diagram, the featuremaps and (with `filter_images` > 0) the filter sheets.

    `kept` holds, per layer, the original indices of the filters the chain computes with a
    non-zero score, in the chain's channel order. Featuremaps and sheets are drawn for the
    `filter_layers` (Conv layers; all scored layers when None) that are spatial.
    """
    names = {layer.node: layer.display for layer in graph.layers}
    source, svg = render_chain_diagram(graph, title)
    files = {"chain.gv": source.encode("utf-8"), "chain.svg": svg}
    activations = layer_activations(chain, images, filter_layers)
    featuremaps = {}
    for layer, (name, png) in featuremap_strips(activations, images, prep, names).items():
        featuremaps[layer] = f"featuremaps/{name}"
        files[featuremaps[layer]] = png
    filter_sheets = {}
    if filter_images:
        from chainx.scoring.activation_max import filter_sheets as draw_sheets  # torch

        targets = _top_filters(activations, kept, multipliers, filter_images)
        sheets = draw_sheets(chain, targets, activations, images, prep, names)
        for layer, (name, png) in sheets.items():
            filter_sheets[layer] = f"filters/{name}"
            files[filter_sheets[layer]] = png
    return DrawnFiles(files, featuremaps, filter_sheets)


def _top_filters(
    activations: dict[str, np.ndarray],
    kept: dict[str, np.ndarray],
    multipliers: dict[str, np.ndarray],
    count: int,
) -> list[Target]:
    """The `count` highest-scored kept filters of every retained spatial layer."""
    from chainx.scoring.activation_max import Target

    targets = []
    for layer, activation in activations.items():
        units = kept[layer]
        if activation.shape[1] != len(units):
            continue
        order = np.argsort(-multipliers[layer][units], kind="stable")[:count]
        targets += [Target(layer, int(i), int(units[i])) for i in order]
    return targets
