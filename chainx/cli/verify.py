"""`chainx verify`: check a saved chain against its source model in onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chainx.cli.printers import console, fail, print_chain_summary
from chainx.errors import ChainxError


def verify_command(
    target: Annotated[
        Path, typer.Argument(exists=True, help="A chainx output folder, or chain.onnx.")
    ],
    model: Annotated[
        Path | None, typer.Argument(help="The source model (with chain.onnx).")
    ] = None,
    images: Annotated[Path | None, typer.Argument(help="Region images (with chain.onnx).")] = None,
    holdout: Annotated[
        Path | None, typer.Option(exists=True, file_okay=False, help="Unseen images.")
    ] = None,
) -> None:
    """Verify a chain against its source model in onnxruntime.

    Give an output folder of `chainx extract`, or chain.onnx with the model and images.
    """
    from chainx.chain.saved import ChainSources, verify_saved_chain

    try:
        sources = ChainSources.resolve(target, model, images, holdout)
        data = verify_saved_chain(sources)
    except ChainxError as error:
        fail(error)
    print_chain_summary(data)
    for warning in data["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if not data["passed"]:
        console.print("[bold red]verification failed[/]")
        raise typer.Exit(1)
