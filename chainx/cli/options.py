"""The options that extract and sweep share, declared once, and the one builder of
ExtractSettings from them."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from chainx.errors import ChainxError
from chainx.settings import ExtractSettings


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Compile(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


ExistingFile = typer.Argument(exists=True, file_okay=True, dir_okay=False, readable=True)
ExistingDir = typer.Argument(exists=True, file_okay=False, dir_okay=True, readable=True)

ForceOption = Annotated[bool, typer.Option(help="Write into a non-empty foreign folder.")]
SeedOption = Annotated[int, typer.Option(help="Random seed; the CPU result is reproducible.")]
DeviceOption = Annotated[Device, typer.Option(help="Where scores are optimised.")]
CompileOption = Annotated[
    Compile,
    typer.Option(
        help="torch.compile the scored network: 'auto' on a CPU when the optimisation would "
        "take over 2 minutes (compiling takes 20–40 s; Lite0's steps then run about a fifth "
        "faster)."
    ),
]
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
    float,
    typer.Option(
        min=0.0,
        help="Adam's learning rate while fine-tuning. The default search fine-tunes its "
        "first budget at this and at a fifth of it, and goes on with the better.",
    ),
]
SparsifyUntilOption = Annotated[
    float | None,
    typer.Option(
        min=1.0,
        help="With --keep-ratio and --no-gradual: stop sparsifying once the filters above τ "
        "are at most this multiple of the budget (e.g. 2).",
    ),
]
FinetunePatienceOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Stop a fine-tuning once the region has agreed in full for this many steps.",
    ),
]
TauOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        help="Keep the filters whose multiplier ends above τ, instead of the default search "
        "(--min-agreement).",
    ),
]
KeepRatioOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Keep this fraction of filters, instead of the default search (--min-agreement).",
    ),
]
MinAgreementOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="The default budget: the sparsest chain whose fine-tuned top-1s agree with the "
        "original's on this share of the region (docs/method.md).",
    ),
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
ViewsOption = Annotated[
    int,
    typer.Option(
        min=0,
        help="Each step, the region and this many random views of every region image "
        "(flipped and shifted, half of them blended with another region image), the "
        "original's outputs on the same views as targets; 0: the region images alone.",
    ),
]
TemperatureOption = Annotated[
    float,
    typer.Option(min=0.01, help="Temperature T of the KL to the original's outputs (×T²)."),
]
ClassWeightOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Weight of a second KL, restricted to the classes the original predicts on the "
        "region: the region's own decision, above the other classes.",
    ),
]
FrontierOption = Annotated[
    str | None,
    typer.Option(
        help="Also cut chains at these fractions of filters kept from the same optimisation, "
        "each fine-tuned and verified: e.g. 0.3,0.1,0.03, 'default' (0.5,0.3,0.15,0.07,0.03,"
        "0.015) or 'none'.",
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


# The options of an extraction that extract and sweep both take: name → (type, default).
EXTRACT_OPTIONS: dict[str, tuple[object, object]] = {
    "seed": (SeedOption, 0),
    "device": (DeviceOption, Device.auto),
    "compile": (CompileOption, Compile.auto),
    "size": (SizeOption, None),
    "resize": (ResizeOption, None),
    "mean": (MeanOption, None),
    "std": (StdOption, None),
    "lam": (LamOption, 30.0),
    "lam_growth": (LamGrowthOption, 20.0),
    "steps": (StepsOption, 300),
    "finetune_steps": (FinetuneStepsOption, 100),
    "finetune_lr": (FinetuneLrOption, 0.05),
    "sparsify_until": (SparsifyUntilOption, None),
    "finetune_patience": (FinetunePatienceOption, None),
    "tau": (TauOption, None),
    "keep_ratio": (KeepRatioOption, None),
    "min_agreement": (MinAgreementOption, 0.95),
    "kl_budget": (KlBudgetOption, 0.3),
    "gradual": (GradualOption, True),
    "hinge": (HingeOption, 1.0),
    "hold_margin": (HoldMarginOption, None),
    "views": (ViewsOption, 0),
    "temperature": (TemperatureOption, 1.0),
    "class_weight": (ClassWeightOption, 0.0),
    "class_names": (ClassNamesOption, None),
    "input_name": (InputOption, None),
    "output_name": (OutputOption, None),
}


def with_extract_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command every option in EXTRACT_OPTIONS, after its own parameters; it receives
    them as one dict, its `options` parameter. Typer reads the signature built here."""
    own = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    parameters = [p for name, p in own.parameters.items() if name != "options"]
    parameters = [p.replace(annotation=hints[p.name]) for p in parameters]
    parameters += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in EXTRACT_OPTIONS.items()
    ]

    @functools.wraps(command)
    def with_options(**values: object) -> None:
        options = {name: values.pop(name) for name in EXTRACT_OPTIONS}
        command(**values, options=options)

    with_options.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_options


def extract_settings(options: dict[str, object], **more: object) -> ExtractSettings:
    """ExtractSettings from the options as Typer gives them (--mean and --std as text,
    --device as its enum, --input/--output as input_name/output_name), and `more` options
    named as the extract flags in snake_case."""
    values = dict(options)
    device, mean, std = values.pop("device"), values.pop("mean"), values.pop("std")
    compiling = values.pop("compile", Compile.auto)
    values["input"], values["output"] = values.pop("input_name"), values.pop("output_name")
    return ExtractSettings.from_options(
        **values,
        mean=parse_floats("--mean", mean),
        std=parse_floats("--std", std),
        device=device.value if isinstance(device, Device) else device,
        compile=compiling.value if isinstance(compiling, Compile) else compiling,
        **more,
    )


def parse_floats(option: str, text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ChainxError(
            f"{option} {text!r}: give comma-separated numbers, e.g. 0.5,0.5,0.5."
        ) from None
