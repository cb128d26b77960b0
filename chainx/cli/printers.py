"""What the commands print: progress bars, summary tables, fidelity lines and errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:
    from chainx.chain.compare import Comparison
    from chainx.scoring.settings import StepReport
    from chainx.sweep.engines import TrialFailure

# Progress, messages and errors go to stderr; the results a script may read go to stdout.
console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False)

# Sweep summary column → its short header in the terminal.
SWEEP_COLUMNS = {
    "filters removed %": "removed %",
    "region agreement %": "region agree %",
    "holdout agreement %": "holdout agree %",
    "holdout class agreement %": "holdout class agree %",
    "holdout mean KL": "holdout KL",
    "holdout accuracy %": "holdout acc %",
}


def fail(error: Exception) -> NoReturn:
    """Print a user-facing error and exit with its code (2 for ChainxError)."""
    console.print(f"[bold red]error:[/] {error}")
    raise typer.Exit(getattr(error, "exit_code", 1))


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )


def step_printer(bar: Progress) -> Callable[[StepReport], None]:
    """A listener that draws one bar per optimisation phase."""
    tasks: dict[str, TaskID] = {}

    def on_step(report: StepReport) -> None:
        if report.phase not in tasks:
            tasks[report.phase] = bar.add_task(report.phase, total=report.total, stats="")
        stats = (
            "torch.compile"
            if report.phase == "compile"
            else f"loss {report.loss:.4f}  KL {report.kl:.4f}  "
            f"kept {report.kept:,}  agree {report.agreement:.0%}"
        )
        bar.update(tasks[report.phase], completed=report.step, stats=stats)

    return on_step


class TrialProgress:
    """The sweep's progress bar: trials already done, then each outcome as it comes."""

    def __init__(
        self, bar: Progress, trials: int, log: Path, workers: int, ray: str | None
    ) -> None:
        self.bar = bar
        self.task = bar.add_task("trials", total=trials, stats="")
        self.log = log
        self.workers = workers
        self.ray = ray

    def on_start(self, pending: int, total: int) -> None:
        count = min(self.workers, max(pending, 1))
        engine = f"Ray ({self.ray})" if self.ray else f"{count} local worker" + "s" * (count != 1)
        console.print(
            f"{total} trials: {total - pending} already in {self.log}, {pending} to run on {engine}"
        )
        self.bar.update(self.task, completed=total - pending)

    def on_outcome(self, outcome: TrialFailure | dict[str, Any], done: int, total: int) -> None:
        from chainx.sweep.engines import TrialFailure

        if isinstance(outcome, TrialFailure):
            console.print(f"[bold red]trial {outcome.index} failed:[/] {outcome.message}")
            return
        chain = outcome["methods"]["neurochains"]
        held = chain["holdout"]
        self.bar.update(
            self.task,
            completed=done,
            stats=f"last: {percent(chain['filters_removed_fraction'])} removed, "
            f"region {percent(chain['region']['agreement'])}"
            + (f", holdout {percent(held['agreement'])}" if held else ""),
        )


def _against(exact: dict) -> str:
    """What a chain's error is measured against, where it is the float64 masked model."""
    if exact.get("reference") != "float64":
        return ""
    return f" against the float64 masked model, whose float32 form errs by {exact['noise']:.2e}"


def _batch_note(cost: dict) -> str:
    """Where the original fixes a batch of N, its latency is of N images at once."""
    images = cost.get("latency_images", 1)
    return f" (the original runs {images} images at a time)" if images > 1 else ""


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def fidelity_line(name: str, entry: dict | None) -> str:
    if entry is None:
        return f"{name}: not measured (no --holdout)"
    return (
        f"{name}: top-1 agreement {entry['agree']}/{entry['images']} "
        f"({percent(entry['agreement'])}), within the region's classes "
        f"{entry['class_agree']}/{entry['images']}, mean KL {entry['mean_kl']:.4f}"
    )


UNIT_PLURALS = {"filter": "filters", "neuron": "neurons", "head": "heads"}


def print_chain_summary(data: dict) -> None:
    """The summary of a chain.json: what is kept, its fidelity, verification, cost, files."""
    summary, metrics = data["summary"], data["metrics"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("layers kept", f"{summary['layers_kept']}/{summary['layers_total']}")
    table.add_row(
        "filters kept",
        f"{summary['filters_kept']:,}/{summary['filters_total']:,} "
        f"({percent(summary['filters_kept'] / summary['filters_total'])}; "
        f"{percent(summary['filters_removed_fraction'])} removed)",
    )
    units = summary.get("units") or {}
    if set(units) - {"filter"}:
        table.add_row(
            "units kept",
            ", ".join(
                f"{entry['kept']:,}/{entry['total']:,} {UNIT_PLURALS.get(kind, kind)}"
                for kind, entry in units.items()
            ),
        )
    budget = data.get("budget")
    if budget and budget["mode"] == "auto":
        chosen = budget["chosen"]
        table.add_row(
            "budget",
            f"{chosen['keep_ratio']:.3g} of the filters, chosen from {len(budget['tried'])} "
            f"tried: {budget['reason']}",
        )
    table.add_row("fidelity", fidelity_line("region", metrics["region"]))
    table.add_row("", fidelity_line("holdout", metrics["holdout"]))
    exact = metrics["exactness"]
    copies = metrics["exact_copies"]
    status = "passed" if exact["passed"] and not copies["mismatched"] else "FAILED"
    table.add_row(
        "verification",
        f"{status}: max |Δ| {exact['max_abs_diff']:.2e}{_against(exact)} (tolerance "
        f"{exact['tolerance']:.2e}), {copies['checked']} weights checked bit for bit",
    )
    cost = metrics.get("cost")
    if cost:
        original, chain = cost["original"], cost["chain"]
        table.add_row(
            "cost",
            f"parameters {chain['parameters']:,} vs {original['parameters']:,}, "
            f"file {chain['file_bytes']:,} B vs {original['file_bytes']:,} B, "
            f"MACs {chain['macs']:,} vs {original['macs']:,}, "
            f"latency {chain['latency_ms']:.2f} ms vs {original['latency_ms']:.2f} ms"
            + _batch_note(original),
        )
    deploy = metrics.get("deploy")
    if deploy:
        check = "agrees with chain.onnx" if deploy["passed"] else "DIFFERS from chain.onnx"
        text = (
            f"chain.deploy.onnx {check}: max |Δ| {deploy['max_abs_diff']:.2e} "
            f"(tolerance {deploy['tolerance']:.2e})"
        )
        if cost and "deploy" in cost:
            text += (
                f"; latency {cost['deploy']['latency_ms']:.2f} ms, MACs {cost['deploy']['macs']:,}"
            )
        table.add_row("deploy", text)
    frozen = data.get("frozen_ops") or []
    if frozen:
        names = ", ".join(f"{f['node']} ({f['op_type']})" for f in frozen[:5])
        table.add_row("frozen ops", f"{len(frozen)} kept whole: {names}")
    for name, path in data.get("files", {}).items():
        table.add_row("output" if name == "chain.onnx" else "", path)
    out_console.print(table)


def print_sweep_summary(summary: dict) -> None:
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


def print_comparison(comparison: Comparison, label_a: str, label_b: str) -> None:
    """The layers either chain keeps, with their shared filters, then the totals."""
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
