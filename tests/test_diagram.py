import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chainx.chain.result import LayerGraph, LayerResult
from chainx.errors import ChainxError
from chainx.render.diagram import DiagramError, chain_diagram, render_chain_diagram

SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")


def layer(node, display, total, kept=()):
    """A layer keeping filters `kept`, scored so that later filters score lower."""
    kept = list(kept)
    return LayerResult(
        node=node,
        display=display,
        total=total,
        gate=0.5,
        kept_indices=kept,
        kept_scores=[1.0 / (1 + i) for i in range(len(kept))],
    )


def small_residual() -> LayerGraph:
    """stem -> block(C1 -> C2 -> C3, plus identity skip) -> block(C1 -> C2, with D)."""
    layers = [
        layer("/conv1/Conv", "Stem", 16, [3, 7]),
        layer("/layer1/layer1.0/conv1/Conv", "L1B1C1", 16, [0, 5, 9]),
        layer("/layer1/layer1.0/conv2/Conv", "L1B1C2", 16),
        layer("/layer1/layer1.0/conv3/Conv", "L1B1C3", 16),
        layer("/layer2/layer2.0/conv1/Conv", "L2B1C1", 32, [1]),
        layer("/layer2/layer2.0/conv2/Conv", "L2B1C2", 32, [2, 4, 6, 8, 10, 12, 14]),
        layer("/layer2/layer2.0/downsample/Conv", "L2B1D", 32),
    ]
    n = [x.node for x in layers]
    edges = [
        ("input", n[0]),
        (n[0], n[1]),
        (n[1], n[2]),
        (n[2], n[3]),
        (n[3], n[4]),
        (n[0], n[4]),  # identity skip around block 1
        (n[3], n[6]),
        (n[0], n[6]),
        (n[4], n[5]),
        (n[5], "output"),
        (n[6], "output"),
    ]
    return LayerGraph(layers=layers, edges=edges)


def resnet50_like(retained: set[int]) -> LayerGraph:
    """53 convs wired like ResNet-50, with adds/pools collapsed into direct edges."""
    layers = [layer("/conv1/Conv", "Stem", 64)]
    edges = [("input", "/conv1/Conv")]
    stream = ["/conv1/Conv"]  # layers whose output reaches the current residual stream
    for s, (blocks, width) in enumerate(
        zip([3, 4, 6, 3], [64, 128, 256, 512], strict=True), start=1
    ):
        for b in range(1, blocks + 1):
            base = f"/layer{s}/layer{s}.{b - 1}"
            names = [f"{base}/conv{k}/Conv" for k in (1, 2, 3)]
            totals = [width, width, 4 * width]
            for k, (name, total) in enumerate(zip(names, totals, strict=True), start=1):
                layers.append(layer(name, f"L{s}B{b}C{k}", total))
            edges += [(src, names[0]) for src in stream]
            edges += [(names[0], names[1]), (names[1], names[2])]
            if b == 1:
                down = f"{base}/downsample/downsample.0/Conv"
                layers.append(layer(down, f"L{s}B{b}D", 4 * width))
                edges += [(src, down) for src in stream]
                stream = [names[2], down]
            else:
                stream = [*stream, names[2]]
    edges += [(src, "output") for src in stream]
    for i in retained:
        old = layers[i]
        kept = list(range(0, min(old.total, 5 + 3 * i), 3))
        layers[i] = LayerResult(
            node=old.node,
            display=old.display,
            total=old.total,
            gate=0.7,
            kept_indices=kept,
            kept_scores=[(i % 7 + 1) * (1 + j % 5) / 10 for j in range(len(kept))],
        )
    return LayerGraph(layers=layers, edges=edges)


# 13 retained layers, leaving the 40 removed ones in runs of various lengths.
RESNET_RETAINED = {0, 1, 5, 10, 17, 21, 22, 30, 38, 44, 47, 50, 52}


def svg_nodes(svg_path: Path) -> list[ET.Element]:
    root = ET.parse(svg_path).getroot()
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]


def node_texts(node: ET.Element) -> str:
    return " ".join(t.text or "" for t in node.iter(f"{SVG}text"))


def edge_pairs(svg_path: Path) -> list[str]:
    root = ET.parse(svg_path).getroot()
    return [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g") if g.get("class") == "edge"]


def write_chain_diagram(
    graph: LayerGraph, title: str, folder: Path, stem: str = "chain"
) -> tuple[Path, Path]:
    """The DOT source and SVG on disk, where the SVG parser and the assertions read them."""
    source, svg = render_chain_diagram(graph, title)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.gv").write_text(source)
    (folder / f"{stem}.svg").write_bytes(svg)
    return folder / f"{stem}.gv", folder / f"{stem}.svg"


@needs_dot
def test_small_residual_svg(tmp_path):
    gv, svg = write_chain_diagram(small_residual(), "demo chain", tmp_path / "out")
    assert gv.read_text().startswith("digraph")
    nodes = svg_nodes(svg)
    text = {n.find(f"{SVG}title").text: node_texts(n) for n in nodes}

    for node_id, expected in [
        ("layer0", ["Stem", "2/16"]),
        ("layer1", ["L1B1C1", "3/16"]),
        ("layer4", ["L2B1C1", "1/32"]),
        ("layer5", ["L2B1C2", "7/32"]),
    ]:
        assert all(e in text[node_id] for e in expected)
    # Kept filter indices are drawn as cells.
    assert {"2", "4", "14"} <= set(text["layer5"].split())
    assert "input" in text and "output" in text and "legend" in text

    # C2 and C3 of block 1 collapse into one grey node; the lone D keeps its name.
    assert "2 layers removed" in text["removed2"] and "L1B1C2" in text["removed2"]
    assert "L2B1D removed" in text["removed6"]
    assert not any(k in text["removed2"] for k in ("/16", "/32"))
    for node in nodes:
        if node.find(f"{SVG}title").text.startswith("removed"):
            outline = node.find(f".//{SVG}path")  # rounded box: drawn as a path
            assert outline.get("stroke") == "#9e9e9e" and outline.get("stroke-dasharray")

    edges = edge_pairs(svg)
    assert len(edges) == len(set(edges))  # two edges leave the run for L2B1C1/L2B1D: merged
    assert set(edges) == {
        "input->layer0",
        "layer0->layer1",
        "layer1->removed2",
        "removed2->layer4",
        "layer0->layer4",  # the residual skip stays visible
        "removed2->removed6",  # stem -> L2B1D jumps 5 boxes and is implied by it: dropped
        "layer4->layer5",
        "layer5->output",
        "removed6->output",
    }
    title = ET.parse(svg).getroot().find(f"{SVG}g/{SVG}text")
    assert title is not None and title.text == "demo chain"
    assert "layers kept 4/7" in svg.read_text() and "filters kept 13/160" in svg.read_text()


def test_diagram_source_styles_removed_and_skip_edges():
    source = chain_diagram(small_residual(), "t").source
    assert "removed2 [label=" in source and "dashed" in source
    assert 'layer1 -> removed2 [color="#9e9e9e" style=dashed weight=4]' in source
    assert "\tlayer0 -> layer4\n" in source  # a skip between retained layers: plain, solid


def test_long_edges_implied_by_the_stream_are_dropped():
    graph = resnet50_like(retained={0, 5, 12, 30, 52})
    source = chain_diagram(graph, "t").source
    edge_lines = [line for line in source.splitlines() if " -> " in line]
    # 53 layers feed each other through the residual stream; drawn in full that would be
    # hundreds of edges. Only short skips and the spine remain.
    assert len(edge_lines) < 3 * 15


def test_colour_cells_capped_and_ordered_by_score():
    big = LayerResult(
        node="/big/Conv",
        display="Big",
        total=64,
        gate=1.0,
        kept_indices=list(range(20)),
        kept_scores=[float(i) for i in range(20)],  # filter 19 scores highest
    )
    graph = LayerGraph(layers=[big], edges=[("input", "/big/Conv"), ("/big/Conv", "output")])
    source = chain_diagram(graph, "cap").source
    assert "+4 more" in source
    assert source.count("<TD BGCOLOR") == 16 + 10  # 16 filter cells, 10 legend steps
    assert source.index(">19<") < source.index(">4<")
    assert ">3<" not in source  # the four lowest-scored filters are folded into "+4 more"
    # Top score: viridis yellow with black text; lowest shown: darker with white text.
    assert '<TD BGCOLOR="#fde725" WIDTH="24"><FONT POINT-SIZE="8" COLOR="black">19<' in source


@needs_dot
def test_resnet50_like_stays_small_and_fast(tmp_path):
    graph = resnet50_like(RESNET_RETAINED)
    assert len(graph.layers) == 53 and sum(x.total for x in graph.layers) > 26_000
    start = time.perf_counter()
    _, svg = write_chain_diagram(graph, "resnet50", tmp_path, stem="r50")
    assert time.perf_counter() - start < 10
    nodes = svg_nodes(svg)
    removed = [n for n in nodes if n.find(f"{SVG}title").text.startswith("removed")]
    # 13 layers + input/output/legend + one node per run of removed layers (10 runs here).
    assert len(removed) == 10 and len(nodes) == 13 + 3 + 10
    assert sum("7 layers removed" in node_texts(n) for n in removed) == 2
    edges = edge_pairs(svg)
    assert len(edges) == len(set(edges))
    assert "layers kept 13/53" in svg.read_text()


@needs_dot
def test_special_characters_are_escaped(tmp_path):
    weird = 'a/b.c:0<&>"\\x'
    graph = LayerGraph(
        layers=[
            layer(weird, "<B&amp>", 8, [1, 2]),
            layer("<removed>", "R&D", 8),
        ],
        edges=[("input", weird), (weird, "<removed>"), ("<removed>", "output")],
    )
    _, svg = write_chain_diagram(graph, 'Title <with> & "quotes"', tmp_path)
    root = ET.parse(svg).getroot()
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "<B&amp>" in texts and "R&D removed" in texts
    assert 'Title <with> & "quotes"' in texts
    assert weird in [a.get(XLINK_TITLE) for a in root.iter(f"{SVG}a")]


def test_missing_dot_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DiagramError, match="apt-get install graphviz") as raised:
        render_chain_diagram(small_residual(), "t")
    assert isinstance(raised.value, ChainxError) and raised.value.exit_code == 2


def test_unknown_edge_endpoint_is_rejected():
    graph = small_residual()
    graph.edges.append(("/nowhere/Conv", "output"))
    with pytest.raises(ValueError, match="/nowhere/Conv"):
        chain_diagram(graph, "t")


@needs_dot
def test_empty_chain_renders_without_legend(tmp_path):
    graph = resnet50_like(set())
    _, svg = write_chain_diagram(graph, "nothing kept", tmp_path)
    text = {n.find(f"{SVG}title").text: node_texts(n) for n in svg_nodes(svg)}
    assert set(text) == {"input", "removed0", "output"}
    assert "53 layers removed" in text["removed0"]
    assert "filters kept 0/26,560 (0.0%)" in svg.read_text()
