"""`chainx compare`: the layers and filters two chains of one model share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from chainx.chain.compare import Comparison, compare
from chainx.cli.options import ForceOption
from chainx.cli.printers import console, fail, print_comparison
from chainx.errors import ChainxError
from chainx.outputs import COMPARE_OUTPUT, OutputStage, check_output_dir, write_atomic
from chainx.render.compare_diagram import render_comparison_diagram


def compare_command(
    first: Annotated[Path, typer.Argument(exists=True, help="A chainx output folder.")],
    second: Annotated[Path, typer.Argument(exists=True, help="Another, of the same model.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write compare.json and the diagram (default: not written)."),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Compare two chains of one model: shared and distinct layers and filters."""
    label_a, label_b = first.name or "A", second.name or "B"
    try:
        comparison = compare(first, second)
        if out is not None:
            check_output_dir(out, force, [first, second], COMPARE_OUTPUT)
            _write_comparison(comparison, label_a, label_b, out)
    except ChainxError as error:
        fail(error)
    print_comparison(comparison, label_a, label_b)
    if out is not None:
        console.print(f"written: {out / 'compare.json'}, {out / 'compare.svg'}")


def _write_comparison(comparison: Comparison, label_a: str, label_b: str, out: Path) -> None:
    """compare.json, .gv and .svg, staged and swapped into `out` together."""
    source, svg = render_comparison_diagram(comparison, label_a, label_b)
    stage = OutputStage(out, COMPARE_OUTPUT)
    try:
        write_atomic(
            stage.path / "compare.json", json.dumps(comparison.to_json(), indent=2).encode()
        )
        write_atomic(stage.path / "compare.gv", source.encode())
        write_atomic(stage.path / "compare.svg", svg)
        stage.publish()
    except BaseException:
        stage.discard()
        raise
