"""`chainx sweep`: many trials, each chain against baselines at the same budget."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from chainx.cli.options import (
    ExistingFile,
    extract_settings,
    with_extract_options,
)
from chainx.cli.printers import (
    TrialProgress,
    console,
    fail,
    out_console,
    print_sweep_summary,
    progress,
)
from chainx.errors import ChainxError
from chainx.settings import frontier_budgets
from chainx.sweep.plan import BASELINES, CONTROLS


@with_extract_options
def sweep_command(
    model: Annotated[Path, ExistingFile],
    data: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Labelled images: one sub-folder per class."
        ),
    ],
    trials: Annotated[int, typer.Option(min=1, help="How many trials (regions) to run.")],
    out: Annotated[
        Path,
        typer.Option(help="Where trials.jsonl, the summary and the plots go; rerun to resume."),
    ],
    classes: Annotated[int, typer.Option(min=1, help="Classes per region.")] = 2,
    per_class: Annotated[int, typer.Option(min=1, help="Region images per class.")] = 10,
    holdout_per_class: Annotated[
        int | None,
        typer.Option(min=1, help="Holdout images per class \\[default: all the others]."),
    ] = None,
    holdout_data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            file_okay=False,
            help="Draw the holdout from this folder's same-named classes instead of DATA.",
        ),
    ] = None,
    baselines: Annotated[
        str,
        typer.Option(
            help="Comma-separated baselines and controls at the chain's per-layer budget: "
            "random, weight-l1, activation, taylor, relevance (LRP), unscaled, shuffle; or none."
        ),
    ] = ",".join(BASELINES),
    frontier: Annotated[
        str,
        typer.Option(
            help="The budgets (fractions of filters kept) at which every method is also built "
            "and measured, cut from one optimisation per trial: a list, 'default' "
            "(0.5,0.3,0.15,0.07,0.03,0.015) or 'none'."
        ),
    ] = "default",
    control: Annotated[
        list[str] | None,
        typer.Option(
            help="Also run NeuroChains on a control model: random-weights (every Conv/Gemm "
            "weight re-drawn at its layer's std). Repeatable."
        ),
    ] = None,
    stability: Annotated[
        bool,
        typer.Option(
            help="Per trial, extract again with two more seeds and on a re-drawn region of the "
            "same classes, and record the Jaccard overlap of the kept filters."
        ),
    ] = False,
    finetune_baselines: Annotated[
        bool,
        typer.Option(
            help="Fine-tune each baseline's kept scores as NeuroChains' are, so that only "
            "the choice of filters differs."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Local worker processes \\[default: one per GPU, or per core]."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(help="Fail a trial on an unreadable image instead of skipping it."),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the trials as Ray tasks on an existing cluster: auto, or its HOST:PORT."
        ),
    ] = None,
    options: dict[str, object] | None = None,
) -> None:
    """Run many trials: regions drawn from DATA, each chain against baselines at equal budget.

    Each trial's record is appended to OUT/trials.jsonl as it finishes; a rerun with the
    same settings skips the finished trials. OUT gets summary.md/.json and two PNG plots.
    """
    from chainx.sweep.engines import default_workers
    from chainx.sweep.plan import SweepConfig
    from chainx.sweep.run import OUTPUT_FILES, run_sweep

    try:
        chosen = _baselines(baselines)
        # --seed draws the trials, and each trial seeds its own optimisation.
        seed = options.pop("seed")
        settings = extract_settings(options, strict=strict)
        config = SweepConfig(
            model=model,
            data=data,
            holdout_data=holdout_data,
            classes=classes,
            per_class=per_class,
            holdout_per_class=holdout_per_class,
            seed=seed,
            baselines=chosen,
            finetune_baselines=finetune_baselines,
            frontier=frontier_budgets(frontier),
            controls=_controls(control or []),
            stability=stability,
            read=settings.read,
            optimise=settings.optimise,
        )
        worker_count = workers or default_workers()
        with progress() as bar, _stopped_by_sigterm():
            shown = TrialProgress(bar, trials, out / "trials.jsonl", worker_count, ray)
            result = run_sweep(
                config,
                trials,
                out,
                worker_count,
                ray,
                on_outcome=shown.on_outcome,
                on_start=shown.on_start,
            )
    except ChainxError as error:
        fail(error)
    except (KeyboardInterrupt, Stopped) as stop:
        console.print(
            f"[bold yellow]interrupted:[/] the finished trials are in {out / 'trials.jsonl'}; "
            "rerun the same command to resume."
        )
        raise typer.Exit(143 if isinstance(stop, Stopped) else 130) from None
    print_sweep_summary(result.summary)
    for name in OUTPUT_FILES:
        if (out / name).exists():
            out_console.print(str(out / name))
    if result.failures:
        console.print(
            f"[bold red]{len(result.failures)} trials failed[/]; rerun the same command to "
            "retry them."
        )
        raise typer.Exit(1)


class Stopped(Exception):
    """SIGTERM (`kill`, a job scheduler) during a sweep."""


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM stops a sweep as Ctrl-C does: the pool's workers are terminated with it,
    where the default handler would end this process alone and leave them running."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _baselines(text: str) -> tuple[str, ...]:
    chosen = tuple(b.strip() for b in text.split(",") if b.strip() not in {"", "none"})
    unknown = [b for b in chosen if b not in BASELINES]
    if unknown:
        raise ChainxError(
            f"--baselines {text!r}: unknown {', '.join(unknown)}. Choose from "
            f"{', '.join(BASELINES)}, or none."
        )
    return chosen


def _controls(names: list[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in CONTROLS]
    if unknown:
        raise ChainxError(
            f"--control {', '.join(unknown)}: unknown. Choose from {', '.join(CONTROLS)}."
        )
    return tuple(dict.fromkeys(names))
