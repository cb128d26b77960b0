"""`chainx extract`: the chain of a model on a region of images, written to a folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chainx.cli.options import (
    ExistingDir,
    ExistingFile,
    ForceOption,
    FrontierOption,
    extract_settings,
    with_extract_options,
)
from chainx.cli.printers import console, fail, print_chain_summary, progress, step_printer
from chainx.errors import ChainxError, VerificationError

if TYPE_CHECKING:
    from chainx.cores import ThreadGovernor
    from chainx.scoring.settings import StepReport


@with_extract_options
def extract_command(
    model: Annotated[Path, ExistingFile],
    images: Annotated[Path, ExistingDir],
    out: Annotated[
        Path | None, typer.Option(help="Output folder \\[default: <model stem>.chain/]")
    ] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Unseen images of the same region."),
    ] = None,
    force: ForceOption = False,
    strict: Annotated[
        bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")
    ] = False,
    filter_images: Annotated[
        int,
        typer.Option(
            min=0, help="Visualise this many top filters per layer (activation maximisation)."
        ),
    ] = 4,
    frontier: FrontierOption = None,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="Threads for torch's work; 0: the cores this process may use that other "
            "jobs do not keep busy (docs/performance.md).",
        ),
    ] = 0,
    options: dict[str, object] | None = None,
) -> None:
    """Extract the inference chain of MODEL on the region IMAGES."""
    from chainx.cores import ThreadGovernor, thread_count

    chosen = threads
    threads, why = thread_count(threads)  # before torch loads: it may set OMP_WAIT_POLICY
    from chainx.extraction import extract
    from chainx.pipeline import Listener
    from chainx.scoring.device import set_threads

    set_threads(threads)
    console.print(f"threads: {threads} ({why})")
    governor = None if chosen else ThreadGovernor(threads)

    try:
        settings = extract_settings(
            options, strict=strict, filter_images=filter_images, frontier=frontier
        )
        with progress() as bar:
            result = extract(
                model,
                images,
                holdout,
                settings=settings,
                out=out or Path(f"{model.stem}.chain"),
                force=force,
                listener=Listener(
                    message=console.print, step=governed(step_printer(bar), governor)
                ),
            )
    except ChainxError as error:
        fail(error)
    if not result.verification.passed:  # the folder is written, for a look at what differs
        fail(VerificationError(result.verification.failure()))
    failed = [entry["chain"] for entry in result.frontier if not entry["verified"]]
    if failed:
        fail(VerificationError(f"frontier chains failed verification: {', '.join(failed)}"))
    print_chain_summary(result.to_json())


def governed(
    on_step: Callable[[StepReport], None], governor: ThreadGovernor | None
) -> Callable[[StepReport], None]:
    """`on_step`, after following the load other jobs put on the machine (`--threads 0`)."""
    if governor is None:
        return on_step

    def step(report: StepReport) -> None:
        before = governor.threads
        threads = governor.check()
        if threads is not None:
            from chainx.scoring.device import set_threads

            set_threads(threads)
            busy = governor.usable - threads
            console.print(
                f"threads: {before} → {threads} ({busy} of {governor.usable} cores busy with "
                "other jobs now)"
            )
        on_step(report)

    return step
