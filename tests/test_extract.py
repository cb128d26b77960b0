"""End to end on the bundled sample: the README's default run, checked on its outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import onnx
import pytest
from conftest import SAMPLE_HOLDOUT, SAMPLE_MODEL, SAMPLE_REGION

import chainx
from chainx.images import load_images, make_preprocessing
from chainx.onnx.runtime import run, session


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> chainx.ExtractResult:
    out = tmp_path_factory.mktemp("e2e") / "mnist_resnet.chain"
    return chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, SAMPLE_HOLDOUT, out=out, resize=28)


def test_the_chain_is_small_and_keeps_the_region_predictions(report: chainx.ExtractResult) -> None:
    # The default budget: the sparsest chain that keeps ≥ 95 % (19 of 20) of the region.
    data = report.to_json()
    assert data["summary"]["filters_removed_fraction"] >= 0.9
    assert data["metrics"]["region"]["images"] == 20
    assert data["metrics"]["region"]["agree"] >= 19
    assert data["budget"]["mode"] == "auto" and data["budget"]["holds"]
    assert data["metrics"]["holdout"]["images"] == 80
    assert data["metrics"]["holdout"]["agreement"] >= 0.6  # 3s and 8s: chance is about 0.5
    assert data["metrics"]["exactness"]["passed"]
    assert data["metrics"]["exact_copies"]["mismatched"] == []
    assert data["frozen_ops"] == []


def test_chain_onnx_runs_alone_with_the_original_interface(report: chainx.ExtractResult) -> None:
    chain = onnx.load(str(report.out / "chain.onnx"))
    original = onnx.load(str(SAMPLE_MODEL))
    onnx.checker.check_model(chain, full_check=True)
    assert [i.name for i in chain.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in chain.graph.output] == [o.name for o in original.graph.output]
    prep = make_preprocessing([None, 1, 28, 28], None, 28, None, None)
    images = load_images(SAMPLE_REGION, prep).array
    chain_top1 = run(session(chain), images).argmax(1)
    original_top1 = run(session(original), images).argmax(1)
    assert (chain_top1 == original_top1).mean() == report.to_json()["metrics"]["region"][
        "agreement"
    ]
    assert (chain_top1 == original_top1).mean() >= 0.95
    # Kept Conv nodes carry their original names.
    original_convs = {n.name for n in original.graph.node if n.op_type == "Conv"}
    chain_convs = {n.name for n in chain.graph.node if n.op_type == "Conv"}
    assert chain_convs and chain_convs <= original_convs


def test_chain_json_describes_every_layer(report: chainx.ExtractResult) -> None:
    data = json.loads((report.out / "chain.json").read_text())
    assert len(data["layers"]) == 9
    for layer in data["layers"]:
        assert {"node", "display", "kept", "total", "gate", "filters"} <= set(layer)
        assert layer["kept"] == len(layer["filters"]) <= layer["total"]
        assert all(f["score"] > 0 for f in layer["filters"])
    kept = sum(layer["kept"] for layer in data["layers"])
    assert kept == data["summary"]["filters_kept"]
    assert set(data["timings"]) >= {"optimise_s", "total_s"}
    assert data["settings"]["preprocessing"]["size"] == 28
    # A trained 10-class model: its region loses about ln 10 nats with every filter off.
    assert 1.0 < data["metrics"]["optimisation"]["region_signal"] < 10.0


def test_the_diagram_names_the_retained_layers(report: chainx.ExtractResult) -> None:
    data = json.loads((report.out / "chain.json").read_text())
    svg = (report.out / "chain.svg").read_text()
    ET.fromstring(svg)
    for layer in data["layers"]:
        if layer["kept"]:
            assert layer["display"] in svg
            assert f"{layer['kept']}/{layer['total']}" in svg
    assert (report.out / "chain.gv").read_text().startswith("digraph")


def test_a_rerun_with_the_same_seed_gives_the_same_chain(report: chainx.ExtractResult) -> None:
    again = chainx.extract(SAMPLE_MODEL, SAMPLE_REGION, resize=28)
    assert again.to_json()["layers"] == report.to_json()["layers"]
    assert again.chain.SerializeToString() == report.chain.SerializeToString()


def test_paths_and_featuremaps_come_from_the_chain(report: chainx.ExtractResult) -> None:
    data = json.loads((report.out / "chain.json").read_text())
    kept = {(layer["node"], f["index"]) for layer in data["layers"] for f in layer["filters"]}
    assert data["paths"]
    strengths = [path["strength"] for path in data["paths"]]
    assert strengths == sorted(strengths, reverse=True) and strengths[0] > 0
    for path in data["paths"]:
        assert len(path["filters"]) >= 2
        assert all((f["node"], f["index"]) in kept for f in path["filters"])
    diagram = (report.out / "chain.gv").read_text()
    assert "strongest inference paths" in diagram
    assert diagram.count("#d62728") >= 2  # the strongest path drawn over the layers
    assert data["paths"][0]["text"].split(" → ")[0] in (report.out / "chain.gv").read_text()
    retained = {layer["node"] for layer in data["layers"] if layer["kept"]}
    assert set(data["featuremaps"]) == retained
    for name in data["featuremaps"].values():
        assert (report.out / name).stat().st_size > 1000
