"""The chainx command line: thin commands over the pipeline, inputs checked at the edge."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chainx import __version__
from chainx.errors import ChainxError, VerificationError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Extract the local inference chain of a network as a standalone ONNX sub-network.",
)
console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _floats(option: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ChainxError(
            f"{option} {text!r}: give comma-separated numbers, e.g. 0.5,0.5,0.5."
        ) from None


def _fail(error: Exception) -> None:
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(getattr(error, "exit_code", 1))


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


ExistingFile = typer.Argument(exists=True, file_okay=True, dir_okay=False, readable=True)
ExistingDir = typer.Argument(exists=True, file_okay=False, dir_okay=True, readable=True)

# Options that extract and sweep share.
SeedOption = Annotated[int, typer.Option(help="Random seed; the CPU result is reproducible.")]
DeviceOption = Annotated[Device, typer.Option(help="Where scores are optimised.")]
SizeOption = Annotated[
    int | None, typer.Option(min=1, help="Crop size \\[default: the model's input size].")
]
ResizeOption = Annotated[
    int | None, typer.Option(min=1, help="Short side before the crop \\[default: size×8/7].")
]
MeanOption = Annotated[str | None, typer.Option(help="Per-channel mean, e.g. 0.485,0.456,0.406.")]
StdOption = Annotated[str | None, typer.Option(help="Per-channel std, e.g. 0.229,0.224,0.225.")]
LamOption = Annotated[float, typer.Option(min=0.0, help="λ: weight of mean|score| at the start.")]
LamGrowthOption = Annotated[
    float, typer.Option(min=1.0, help="λ grows by this factor over the steps.")
]
StepsOption = Annotated[int, typer.Option(min=1, help="Sparsification steps (at most).")]
FinetuneStepsOption = Annotated[
    int, typer.Option(min=0, help="Fine-tuning steps of the kept scores.")
]
FinetuneLrOption = Annotated[
    float, typer.Option(min=0.0, help="Adam's learning rate while fine-tuning.")
]
TauOption = Annotated[float, typer.Option(min=0.0, help="Score threshold τ.")]
KeepRatioOption = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="Keep this fraction of filters instead of τ."),
]
KlBudgetOption = Annotated[
    float | None, typer.Option(min=0.0, help="KL guard: λ backs off while KL exceeds this.")
]
GradualOption = Annotated[
    bool,
    typer.Option(
        help="Reach --keep-ratio gradually during sparsification; --no-gradual cuts to it "
        "after a first fine-tuning."
    ),
]
HingeOption = Annotated[float, typer.Option(min=0.0, help="Weight of the top-1 margin hinge.")]
HoldMarginOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Keep each image's top-1 margin above this fraction of the original's, "
        "during sparsification too.",
    ),
]
ClassNamesOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Class names, one per line in output order: names predictions and marks "
        "the images the original misclassifies (folder name = class name).",
    ),
]
InputOption = Annotated[
    str | None, typer.Option("--input", help="The image input, for a model with several.")
]
OutputOption = Annotated[
    str | None, typer.Option("--output", help="The class-score output, for a model with several.")
]


@app.command()
def extract(
    model: Annotated[Path, ExistingFile],
    images: Annotated[Path, ExistingDir],
    out: Annotated[
        Path | None, typer.Option(help="Output folder \\[default: <model stem>.chain/]")
    ] = None,
    holdout: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Unseen images of the same region."),
    ] = None,
    seed: SeedOption = 0,
    device: DeviceOption = Device.auto,
    size: SizeOption = None,
    resize: ResizeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    lam: LamOption = 30.0,
    lam_growth: LamGrowthOption = 20.0,
    steps: StepsOption = 300,
    finetune_steps: FinetuneStepsOption = 100,
    finetune_lr: FinetuneLrOption = 0.05,
    tau: TauOption = 0.02,
    keep_ratio: KeepRatioOption = None,
    kl_budget: KlBudgetOption = 0.3,
    gradual: GradualOption = True,
    hinge: HingeOption = 1.0,
    hold_margin: HoldMarginOption = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty foreign folder.")] = False,
    strict: Annotated[
        bool, typer.Option(help="Fail on an unreadable image instead of skipping it.")
    ] = False,
    filter_images: Annotated[
        int,
        typer.Option(
            min=0, help="Visualise this many top filters per layer (activation maximisation)."
        ),
    ] = 4,
    class_names: ClassNamesOption = None,
    input_name: InputOption = None,
    output_name: OutputOption = None,
) -> None:
    """Extract the inference chain of MODEL on the region IMAGES."""
    from chainx.pipeline import ExtractOptions, Listener
    from chainx.pipeline import extract as run_extract
    from chainx.scoring.settings import OptimiseSettings

    try:
        options = ExtractOptions(
            model=model,
            images=images,
            out=out or Path(f"{model.stem}.chain"),
            holdout=holdout,
            size=size,
            resize=resize,
            mean=_floats("--mean", mean),
            std=_floats("--std", std),
            force=force,
            strict=strict,
            filter_images=filter_images,
            class_names=class_names,
            input_name=input_name,
            output_name=output_name,
            optimise=OptimiseSettings(
                lam=lam,
                lam_growth=lam_growth,
                steps=steps,
                finetune_steps=finetune_steps,
                finetune_lr=finetune_lr,
                tau=tau,
                keep_ratio=keep_ratio,
                kl_budget=kl_budget,
                gradual=gradual,
                hinge=hinge,
                hold_margin=hold_margin,
                seed=seed,
                device=device.value,
            ),
        )
        with _progress() as progress:
            tasks: dict[str, int] = {}

            def on_step(report: object) -> None:
                phase = report.phase
                if phase not in tasks:
                    tasks[phase] = progress.add_task(phase, total=report.total, stats="")
                progress.update(
                    tasks[phase],
                    completed=report.step,
                    stats=f"loss {report.loss:.4f}  KL {report.kl:.4f}  "
                    f"kept {report.kept:,}  agree {report.agreement:.0%}",
                )

            result = run_extract(options, Listener(message=console.print, step=on_step))
    except (ChainxError, VerificationError) as error:
        _fail(error)
    _print_summary(result.data)


@app.command()
def sweep(
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
            help="Comma-separated baselines at the chain's per-layer budget: random, "
            "weight-l1, activation, taylor, unscaled; or none."
        ),
    ] = "random,weight-l1,activation,taylor,unscaled",
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
    seed: SeedOption = 0,
    device: DeviceOption = Device.auto,
    size: SizeOption = None,
    resize: ResizeOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    lam: LamOption = 30.0,
    lam_growth: LamGrowthOption = 20.0,
    steps: StepsOption = 300,
    finetune_steps: FinetuneStepsOption = 100,
    finetune_lr: FinetuneLrOption = 0.05,
    tau: TauOption = 0.02,
    keep_ratio: KeepRatioOption = None,
    kl_budget: KlBudgetOption = 0.3,
    gradual: GradualOption = True,
    hinge: HingeOption = 1.0,
    hold_margin: HoldMarginOption = None,
    class_names: ClassNamesOption = None,
    input_name: InputOption = None,
    output_name: OutputOption = None,
) -> None:
    """Run many trials: regions drawn from DATA, each chain against baselines at equal budget.

    Each trial's record is appended to OUT/trials.jsonl as it finishes; a rerun with the
    same settings skips the finished trials. OUT gets summary.md/.json and two PNG plots.
    """
    from chainx.scoring.settings import OptimiseSettings
    from chainx.sweep.engines import TrialFailure, default_workers
    from chainx.sweep.plan import BASELINES, SweepConfig
    from chainx.sweep.run import OUTPUT_FILES, run_sweep

    try:
        chosen = tuple(b.strip() for b in baselines.split(",") if b.strip() not in {"", "none"})
        unknown = [b for b in chosen if b not in BASELINES]
        if unknown:
            raise ChainxError(
                f"--baselines {baselines!r}: unknown {', '.join(unknown)}. Choose from "
                f"{', '.join(BASELINES)}, or none."
            )
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
            strict=strict,
            size=size,
            resize=resize,
            mean=_floats("--mean", mean),
            std=_floats("--std", std),
            class_names=class_names,
            input_name=input_name,
            output_name=output_name,
            optimise=OptimiseSettings(
                lam=lam,
                lam_growth=lam_growth,
                steps=steps,
                finetune_steps=finetune_steps,
                finetune_lr=finetune_lr,
                tau=tau,
                keep_ratio=keep_ratio,
                kl_budget=kl_budget,
                gradual=gradual,
                hinge=hinge,
                hold_margin=hold_margin,
                device=device.value,
            ),
        )
        with _progress() as progress:
            task = progress.add_task("trials", total=trials, stats="")

            def on_start(pending: int, total: int) -> None:
                count = min(workers or default_workers(), max(pending, 1))
                engine = f"Ray ({ray})" if ray else f"{count} local worker" + "s" * (count != 1)
                console.print(
                    f"{total} trials: {total - pending} already in {out / 'trials.jsonl'}, "
                    f"{pending} to run on {engine}"
                )
                progress.update(task, completed=total - pending)

            def on_outcome(outcome: object, done: int, total: int) -> None:
                if isinstance(outcome, TrialFailure):
                    console.print(f"[bold red]trial {outcome.index} failed:[/] {outcome.message}")
                    return
                chain = outcome["methods"]["neurochains"]
                held = chain["holdout"]
                progress.update(
                    task,
                    completed=done,
                    stats=f"last: {_percent(chain['filters_removed_fraction'])} removed, "
                    f"region {_percent(chain['region']['agreement'])}"
                    + (f", holdout {_percent(held['agreement'])}" if held else ""),
                )

            result = run_sweep(
                config,
                trials,
                out,
                workers or default_workers(),
                ray,
                on_outcome=on_outcome,
                on_start=on_start,
            )
    except ChainxError as error:
        _fail(error)
    except KeyboardInterrupt:
        console.print(
            f"[bold yellow]interrupted:[/] the finished trials are in {out / 'trials.jsonl'}; "
            "rerun the same command to resume."
        )
        raise typer.Exit(130) from None
    _print_sweep_summary(result.summary)
    for name in OUTPUT_FILES:
        if (out / name).exists():
            out_console.print(str(out / name))
    if result.failures:
        console.print(
            f"[bold red]{len(result.failures)} trials failed[/]; rerun the same command to "
            "retry them."
        )
        raise typer.Exit(1)


# Summary column → its short header in the terminal.
SWEEP_COLUMNS = {
    "filters removed %": "removed %",
    "region agreement %": "region agree %",
    "holdout agreement %": "holdout agree %",
    "holdout class agreement %": "holdout class agree %",
    "holdout mean KL": "holdout KL",
    "holdout accuracy %": "holdout acc %",
}


def _print_sweep_summary(summary: dict) -> None:
    table = Table(title=f"{summary['trials']} trials, mean ± std")
    table.add_column("method", no_wrap=True, min_width=11)
    for header in SWEEP_COLUMNS.values():
        table.add_column(header, justify="right")
    for method, row in summary["table"].items():
        cells = []
        for column in SWEEP_COLUMNS:
            cell, decimals = row[column], 3 if "KL" in column else 1
            cells.append(
                "–" if cell is None else f"{cell['mean']:.{decimals}f} ± {cell['std']:.{decimals}f}"
            )
        table.add_row(method, *cells)
    out_console.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _fidelity_line(name: str, entry: dict | None) -> str:
    if entry is None:
        return f"{name}: not measured (no --holdout)"
    return (
        f"{name}: top-1 agreement {entry['agree']}/{entry['images']} "
        f"({_percent(entry['agreement'])}), within the region's classes "
        f"{entry['class_agree']}/{entry['images']}, mean KL {entry['mean_kl']:.4f}"
    )


def _print_summary(data: dict) -> None:
    summary, metrics = data["summary"], data["metrics"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("layers kept", f"{summary['layers_kept']}/{summary['layers_total']}")
    table.add_row(
        "filters kept",
        f"{summary['filters_kept']:,}/{summary['filters_total']:,} "
        f"({_percent(summary['filters_kept'] / summary['filters_total'])}; "
        f"{_percent(summary['filters_removed_fraction'])} removed)",
    )
    table.add_row("fidelity", _fidelity_line("region", metrics["region"]))
    table.add_row("", _fidelity_line("holdout", metrics["holdout"]))
    exact = metrics["exactness"]
    copies = metrics["exact_copies"]
    status = "passed" if exact["passed"] and not copies["mismatched"] else "FAILED"
    table.add_row(
        "verification",
        f"{status}: max |Δ| {exact['max_abs_diff']:.2e} (tolerance {exact['tolerance']:.2e}), "
        f"{copies['checked']} weights checked bit for bit",
    )
    cost = metrics.get("cost")
    if cost:
        original, chain = cost["original"], cost["chain"]
        table.add_row(
            "cost",
            f"parameters {chain['parameters']:,} vs {original['parameters']:,}, "
            f"file {chain['file_bytes']:,} B vs {original['file_bytes']:,} B, "
            f"latency {chain['latency_ms']:.2f} ms vs {original['latency_ms']:.2f} ms",
        )
    frozen = data.get("frozen_ops") or []
    if frozen:
        names = ", ".join(f"{f['node']} ({f['op_type']})" for f in frozen[:5])
        table.add_row("frozen ops", f"{len(frozen)} kept whole: {names}")
    for name, path in data.get("files", {}).items():
        table.add_row("output" if name == "chain.onnx" else "", path)
    out_console.print(table)


@app.command()
def verify(
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
    except (ChainxError, VerificationError) as error:
        _fail(error)
    _print_summary(data)
    for warning in data["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if not data["passed"]:
        console.print("[bold red]verification failed[/]")
        raise typer.Exit(1)


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(exists=True, help="A chainx output folder.")],
    second: Annotated[Path, typer.Argument(exists=True, help="Another, of the same model.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write compare.json and the diagram (default: not written)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty foreign folder.")] = False,
) -> None:
    """Compare two chains of one model: shared and distinct layers and filters."""
    from chainx.chain.compare import compare as compare_chains
    from chainx.chain.compare import comparison_diagram
    from chainx.outputs import check_output_dir, write_atomic

    try:
        comparison = compare_chains(first, second)
        if out is not None:
            check_output_dir(out, force, [first, second])
    except ChainxError as error:
        _fail(error)
    label_a, label_b = first.name or "A", second.name or "B"
    table = Table(title=f"{label_a} vs {label_b}")
    for column in ("layer", "filters", label_a, label_b, "shared", "overlap"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in comparison.layers:
        if layer.kept_a or layer.kept_b:
            table.add_row(
                layer.display,
                str(layer.total),
                str(layer.kept_a),
                str(layer.kept_b),
                str(layer.shared),
                f"{layer.jaccard:.2f}",
            )
    console.print(table)
    summary = comparison.to_json()["filters"]
    console.print(
        f"filters kept: {label_a} {summary['kept_a']:,}, {label_b} {summary['kept_b']:,}; "
        f"shared {summary['shared']:,}; overlap (Jaccard) {summary['jaccard']:.2f}"
    )
    if out is not None:
        dot = comparison_diagram(comparison, label_a, label_b)
        write_atomic(out / "compare.json", json.dumps(comparison.to_json(), indent=2).encode())
        write_atomic(out / "compare.gv", dot.source.encode())
        write_atomic(out / "compare.svg", dot.pipe(format="svg"))
        console.print(f"written: {out / 'compare.json'}, {out / 'compare.svg'}")


def run() -> None:
    """Entry point that never shows a traceback for an unexpected failure."""
    try:
        app()
    except Exception as error:  # an internal failure: say so plainly, exit 1
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}")
        sys.exit(1)
