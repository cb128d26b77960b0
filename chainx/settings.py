"""What an extraction is asked to do, as plain data: how the inputs are read, how the scores
are optimised, and what is drawn. The CLI, the Python API and sweep trials build these from
the same option names (the `chainx extract` flags in snake_case)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from chainx.errors import ChainxError
from chainx.scoring.settings import OptimiseSettings


@dataclass(frozen=True)
class ReadSettings:
    """How the model and the images are read: the image input and class output of the model,
    and the preprocessing (None: the model's input size, ImageNet's mean and std)."""

    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    strict: bool = False
    input_name: str | None = None
    output_name: str | None = None
    class_names: Path | None = None


@dataclass(frozen=True)
class ExtractSettings:
    read: ReadSettings = field(default_factory=ReadSettings)
    optimise: OptimiseSettings = field(default_factory=OptimiseSettings)
    filter_images: int = 4
    frontier: tuple[float, ...] = ()  # fractions of filters kept, one chain each

    @classmethod
    def from_options(cls, **options: Any) -> ExtractSettings:  # noqa: ANN401
        """Settings from `chainx extract`'s options, named as its flags in snake_case
        (`keep_ratio`, `hold_margin`, `input`, …); an option left out keeps its default."""
        read_names = {f.name for f in fields(ReadSettings)}
        optimise_names = set(OPTIMISE_OPTIONS)
        read: dict[str, Any] = {}
        optimise: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for name, value in options.items():
            key = IO_OPTIONS.get(name, name)
            if key in read_names:
                read[key] = _read_value(key, value)
            elif name in optimise_names:
                optimise[name] = value
            elif name == "filter_images":
                rest[name] = int(value)
            elif name == "frontier":
                rest[name] = frontier_budgets(value)
            else:
                raise ChainxError(
                    f"unknown option {name!r}. The options are those of `chainx extract` in "
                    f"snake_case: {', '.join(sorted(OPTION_NAMES))}."
                )
        return cls(
            read=ReadSettings(**read),
            optimise=replace(OptimiseSettings(), **_budget(optimise)),
            **rest,
        )


# The default budget's agreement (`scoring.auto_budget`).
MIN_AGREEMENT = 0.95


def _budget(optimise: dict[str, Any]) -> dict[str, Any]:
    """The optimisation options with the budget settled: --keep-ratio or --tau where given
    (τ 0.02 with --keep-ratio), else the default search for --min-agreement."""
    optimise = {
        name: value
        for name, value in optimise.items()
        if value is not None or name not in {"tau", "min_agreement"}
    }
    explicit = optimise.get("keep_ratio") is not None or "tau" in optimise
    if explicit and "min_agreement" in optimise and optimise["min_agreement"] != MIN_AGREEMENT:
        raise ChainxError(
            "--min-agreement chooses the budget by search; --keep-ratio and --tau give one. "
            "Use one of them."
        )
    optimise["min_agreement"] = None if explicit else optimise.get("min_agreement", MIN_AGREEMENT)
    return optimise


# The flags --input and --output name the model's image input and class output.
IO_OPTIONS = {"input": "input_name", "output": "output_name"}
OPTIMISE_OPTIONS = (
    "lam",
    "lam_growth",
    "steps",
    "finetune_steps",
    "finetune_lr",
    "sparsify_until",
    "finetune_patience",
    "tau",
    "keep_ratio",
    "min_agreement",
    "kl_budget",
    "gradual",
    "hinge",
    "hold_margin",
    "views",
    "temperature",
    "class_weight",
    "seed",
    "device",
    "compile",
)
OPTION_NAMES = (
    {"size", "resize", "mean", "std", "strict", "class_names", "input", "output"}
    | set(OPTIMISE_OPTIONS)
    | {"filter_images", "frontier"}
)
# The budgets of --frontier without a list: from half the filters down to 1.5 %, each about
# half the one before, so the curve is sampled evenly on a log scale where it falls.
DEFAULT_FRONTIER = (0.5, 0.3, 0.15, 0.07, 0.03, 0.015)


def frontier_budgets(value: Any) -> tuple[float, ...]:  # noqa: ANN401
    """--frontier's budgets: None or "none" for none, "default" for DEFAULT_FRONTIER, or
    fractions of filters kept in (0, 1], largest first."""
    if value is None or value == "none":
        return ()
    if value == "default":
        return DEFAULT_FRONTIER
    try:
        budgets = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        budgets = ()
    if not budgets or not all(0 < b <= 1 for b in budgets):
        raise ChainxError(
            f"--frontier {value!r}: give fractions of filters kept in (0, 1], e.g. "
            "0.3,0.1,0.03, or 'default' for " + ",".join(f"{b:g}" for b in DEFAULT_FRONTIER)
        )
    return tuple(sorted(set(budgets), reverse=True))


def _read_value(key: str, value: Any) -> Any:  # noqa: ANN401
    if value is None:
        return None
    if key in {"mean", "std"}:
        values = (value,) if isinstance(value, int | float) else tuple(value)
        return tuple(float(v) for v in values)
    if key == "class_names":
        return Path(value)
    return value


def read_class_names(path: Path | None) -> list[str] | None:
    """One class name per line, in the model's output order."""
    if path is None:
        return None
    try:
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ChainxError(f"--class-names {path}: cannot be read ({exc}).") from None
    return names


def class_of(label: str, class_names: list[str]) -> int | None:
    """The class a folder name stands for: the same name, or its singular ("ants" → "ant")."""
    wanted = {label.lower(), label.lower().removesuffix("s")}
    for index, name in enumerate(class_names):
        if name.lower() in wanted:
            return index
    return None
