"""The chainx command line: thin commands over the pipeline, inputs checked at the edge."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from chainx.cli.compare import compare_command
from chainx.cli.extract import extract_command
from chainx.cli.printers import console, out_console
from chainx.cli.sweep import sweep_command
from chainx.cli.verify import verify_command
from chainx.errors import InternalError
from chainx.version import __version__

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Extract the local inference chain of a network as a standalone ONNX sub-network.",
)


def _print_version(value: bool) -> None:
    if value:
        out_console.print(f"chainx {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Extract the local inference chain of a network as a standalone ONNX sub-network."""


app.command("extract")(extract_command)
app.command("sweep")(sweep_command)
app.command("verify")(verify_command)
app.command("compare")(compare_command)


def run() -> None:
    """Entry point that never shows a traceback for an unexpected failure."""
    try:
        app()
    except InternalError as error:  # names its stage and node
        console.print(f"[bold red]internal error[/] {error}")
        sys.exit(1)
    except Exception as error:  # an internal failure: say so plainly, exit 1
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}")
        sys.exit(1)
