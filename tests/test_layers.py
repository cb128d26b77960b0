"""Short layer names and the flow between scored layers."""

from __future__ import annotations

import pytest
from conftest import tiny_model

from chainx.onnx.graph import GraphIndex
from chainx.onnx.score_points import ScorePoint, find_score_points
from chainx.render.layers import (
    display_name,
    display_names,
    layer_edges,
    module_path,
    point_display_names,
    unit_name,
)


def test_torchvision_resnet_names_follow_the_paper() -> None:
    assert display_name("/layer4/layer4.1/conv2/Conv") == "L4B1C2"
    assert display_name("/layer2/layer2.0/downsample/downsample.0/Conv") == "L2B0SC"
    assert display_name("/layer3/layer3.0/shortcut/Conv") == "L3B0SC"


def test_other_names_fall_back_to_the_module_path() -> None:
    assert module_path("/_blocks.3/_expand_conv/Conv") == "_blocks.3._expand_conv"
    assert display_name("/_blocks.3/_expand_conv/Conv") == "blocks.3.expand_conv"
    assert display_name("Conv_12") == "Conv_12"


def test_duplicate_display_names_are_made_unique() -> None:
    # "_conv" and "conv" both display as "conv"; later ones are numbered from 2, in order.
    nodes = ["/layer1/layer1.0/conv1/Conv", "/_conv/Conv", "/conv/Conv", "/_conv/Conv_1"]
    assert display_names(nodes) == {
        "/layer1/layer1.0/conv1/Conv": "L1B0C1",
        "/_conv/Conv": "conv",
        "/conv/Conv": "conv#2",
        "/_conv/Conv_1": "conv#3",
    }


@pytest.mark.parametrize("existing_first", [True, False])
def test_numbered_names_do_not_take_an_existing_name(existing_first: bool) -> None:
    # A node whose own name is "conv#2" keeps it; the duplicate takes the next free number.
    duplicates = ["/conv/Conv", "/_conv/Conv"]
    nodes = ["conv#2", *duplicates] if existing_first else [*duplicates, "conv#2"]
    assert display_names(nodes) == {
        "/conv/Conv": "conv",
        "/_conv/Conv": "conv#3",
        "conv#2": "conv#2",
    }


def test_edges_follow_the_residual_structure() -> None:
    model = tiny_model("projection")
    convs = [p.layer for p in find_score_points(model)]
    edges = layer_edges(GraphIndex.build(model), convs)
    stem = next(c for c in convs if c.startswith("/stem/"))
    proj = next(c for c in convs if "/block2/proj/" in c)
    b2c1 = next(c for c in convs if "/block2/conv1/" in c)
    b2c2 = next(c for c in convs if "/block2/conv2/" in c)
    assert ("input", stem) in edges
    assert (b2c1, b2c2) in edges
    # Both the projection and block1's conv2 feed block2, through the residual adds.
    assert any(dst == proj for _, dst in edges)
    assert (b2c2, "output") in edges and (proj, "output") in edges


def test_transformer_units_are_named_by_block_in_graph_order() -> None:
    points = [
        ScorePoint("patch/Conv", "p", 32, 4),
        ScorePoint("attn0/MatMul_1", "a0", 4, 4, axis=1, kind="head"),
        ScorePoint("mlp0/fc1/MatMul", "m0", 64, 3, axis=2, kind="neuron"),
        ScorePoint("attn1/MatMul_1", "a1", 4, 4, axis=1, kind="head"),
        ScorePoint("mlp1/fc1/MatMul", "m1", 64, 3, axis=2, kind="neuron"),
        ScorePoint("classifier/fc/Gemm", "g", 16, 2, kind="neuron"),
    ]
    names = point_display_names(points)
    assert [names[p.layer] for p in points] == [
        "patch",
        "B0.H",
        "B0.M",
        "B1.H",
        "B1.M",
        "classifier.fc",
    ]
    assert unit_name("B1.H", 3) == "B1.H3"
    assert unit_name("B0.M", 127) == "B0.M127"
    assert unit_name("L4B1C2", 48) == "L4B1C2 48"
    assert unit_name("classifier.fc", 2) == "classifier.fc 2"
