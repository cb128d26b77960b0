"""End to end on a tiny vision transformer (timm's ViT layout, random weights): the chain
of heads and MLP neurons is extracted, exact, named by block, drawn on the patch grid."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import chainx
from chainx.channels.surgery import shrink
from chainx.cli.printers import print_chain_summary
from chainx.images import Preprocessing
from chainx.onnx.graph import GraphIndex
from chainx.onnx.normalise import normalise
from chainx.onnx.runtime import run, run_tensors, session
from chainx.onnx.score_points import find_score_points, score_muls, scored_model
from chainx.render.featuremaps import THUMBNAIL
from chainx.scoring.activation_max import TILE, Target, unit_view, visualise
from chainx.scoring.importance import weight_l1
from tools.zoo import build, export_keras, tf_python

BLOCKS, HEADS, NEURONS = 4, 4, 64


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vit")
    model = build("timm/vit_small")
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.zeros(1, 3, 64, 64),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    path = folder / "vit.onnx"
    path.write_bytes(buffer.getvalue())
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / "images" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "images" / label / f"{i}.png")
    return path, folder / "images"


def test_a_vit_chain_is_exact_and_named_by_block(
    vit: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, images = vit
    result = chainx.extract(model, images, steps=40, finetune_steps=10, keep_ratio=0.2, tau=0)
    record = result.to_json()
    assert result.verification.passed
    units = record["summary"]["units"]
    assert units["head"]["total"] == BLOCKS * HEADS
    assert units["neuron"]["total"] == BLOCKS * NEURONS
    assert units["filter"]["total"] == 32  # the patch embedding's filters
    kept = sum(entry["kept"] for entry in units.values())
    assert kept == record["summary"]["filters_kept"] < 0.5 * record["summary"]["filters_total"]
    displays = [layer["display"] for layer in record["layers"]]
    expected = [f"B{b}.{kind}" for b in range(BLOCKS) for kind in "HM"]
    assert displays == ["patch_embed.proj", *expected]
    for path in record["paths"]:
        for unit in path["filters"]:
            if unit["display"].startswith("B"):
                assert f"{unit['display']}{unit['index']}" in path["text"]
    # Every retained layer has featuremaps on the patch grid; a heads layer one row per
    # kept head (the class token's attention). Every retained layer has a unit sheet, one
    # row per top unit (4 by default).
    retained = {layer["node"]: layer["kept"] for layer in record["layers"] if layer["kept"]}
    assert set(record["featuremaps"]) == set(retained)
    assert set(record["filters"]) == set(retained)
    result.save(tmp_path / "out")
    for node, kept in retained.items():
        with Image.open(tmp_path / "out" / record["filters"][node]) as sheet:
            assert sheet.size[1] == (TILE + 2) * min(kept, 4)
    print_chain_summary(record)
    line = next(line for line in capsys.readouterr().out.splitlines() if "units kept" in line)
    for kind, plural in (("filter", "filters"), ("head", "heads"), ("neuron", "neurons")):
        assert f"{units[kind]['kept']}/{units[kind]['total']} {plural}" in line
    for layer in record["layers"]:
        if layer["kept"] and layer["display"].endswith(".H"):
            with Image.open(tmp_path / "out" / record["featuremaps"][layer["node"]]) as sheet:
                assert sheet.size == (THUMBNAIL * 6, THUMBNAIL * layer["kept"])
    chain = onnx.load(str(tmp_path / "out" / "chain.onnx"))
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    assert run(session(chain), x).shape == (3, 10)  # the batch stays free


def test_weight_l1_ranks_a_head_by_its_output_projection_columns(vit: tuple[Path, Path]) -> None:
    model = normalise(onnx.load(str(vit[0])))
    points = find_score_points(model)
    ranks = weight_l1(model, points)
    g = GraphIndex.build(model)
    proj = next(node for node in g.nodes if node.name == "/blocks/blocks.0/attn/proj/MatMul")
    weight = np.abs(g.constants[proj.input[1]].astype(np.float64))  # (heads · Dh, D)
    expected = weight.sum(1).reshape(HEADS, -1).sum(1)
    head = next(p for p in points if p.kind == "head")
    np.testing.assert_allclose(ranks[head.layer], expected)


def test_activation_maximisation_excites_a_head_and_an_mlp_neuron(vit: tuple[Path, Path]) -> None:
    # A head by its output norm, a neuron by its value, each averaged over the tokens:
    # the optimised image excites each more than the random image it starts from.
    model = normalise(onnx.load(str(vit[0])))
    points = find_score_points(model)
    multipliers = {p.layer: np.ones(p.channels, np.float32) for p in points}
    chain = shrink(scored_model(model, points, multipliers)).model
    head = next(p for p in points if p.kind == "head")
    neuron = next(p for p in points if p.kind == "neuron")
    targets = [Target(head.layer, 2, 2, "head"), Target(neuron.layer, 5, 5, "neuron")]
    prep = Preprocessing(size=64, resize=64, mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)
    start = visualise(chain, targets, prep, steps=0)  # the random image it starts from
    pictures = visualise(chain, targets, prep, steps=64)
    muls = score_muls(chain)

    def responses(images: np.ndarray) -> list[float]:
        x = ((images.astype(np.float32) / 255.0 - 0.5) / 0.25).transpose(0, 3, 1, 2)
        names = [muls[t.layer].output[0] for t in targets]
        values = run_tensors(chain, x, names, batch_size=1)
        units = [
            unit_view(torch.from_numpy(values[name][i : i + 1]), t.kind)[0, t.position]
            for i, (t, name) in enumerate(zip(targets, names, strict=True))
        ]
        return [float(unit.mean()) for unit in units]

    excited, initial = responses(pictures), responses(start)
    assert all(e > 1.2 * i for e, i in zip(excited, initial, strict=True)), (excited, initial)


@pytest.mark.skipif(tf_python() is None, reason="no TensorFlow Python (setup.sh)")
def test_a_keras_vit_chain_through_tf2onnx(vit: tuple[Path, Path], tmp_path: Path) -> None:
    # Heads merged into the batch by tf2onnx, mean-pooled tokens (no class token), an NHWC
    # input: extracted, verified, and every retained layer drawn on the patch grid.
    model = tmp_path / "keras_vit.onnx"
    onnx.save(export_keras("keras/ViT"), str(model))
    result = chainx.extract(model, vit[1], steps=40, finetune_steps=10, keep_ratio=0.2, tau=0)
    record = result.to_json()
    assert result.verification.passed
    units = record["summary"]["units"]
    assert (units["head"]["total"], units["neuron"]["total"]) == (BLOCKS * HEADS, BLOCKS * 64)
    retained = {layer["node"] for layer in record["layers"] if layer["kept"]}
    assert set(record["featuremaps"]) == retained
    assert any(layer["display"].endswith(".H") for layer in record["layers"] if layer["kept"])
