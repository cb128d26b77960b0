"""What a sweep runs: its settings, and the seeded draw of each trial's region and holdout."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from chainx.errors import ChainxError
from chainx.images import find_images
from chainx.scoring.settings import OptimiseSettings
from chainx.settings import ReadSettings

BASELINES = ("random", "weight-l1", "activation", "taylor", "relevance", "unscaled", "shuffle")
CONTROLS = ("random-weights",)
CHAIN = "neurochains"


@dataclass
class SweepConfig:
    """Everything that decides a trial's result; a resumed sweep must match it."""

    model: Path
    data: Path
    holdout_data: Path | None = None
    classes: int = 2
    per_class: int = 10
    holdout_per_class: int | None = None
    seed: int = 0
    baselines: tuple[str, ...] = BASELINES
    finetune_baselines: bool = False
    frontier: tuple[float, ...] = ()
    controls: tuple[str, ...] = ()
    stability: bool = False
    read: ReadSettings = field(default_factory=ReadSettings)
    optimise: OptimiseSettings = field(default_factory=OptimiseSettings)

    def __post_init__(self) -> None:
        # Trials may run in other processes and on other hosts, from another directory.
        for name in ("model", "data", "holdout_data"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).resolve())
        if self.read.class_names is not None:
            self.read = replace(self.read, class_names=Path(self.read.class_names).resolve())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(data.pop("read"))  # flat, as sweeps before ReadSettings recorded it
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        # The device and torch.compile change how a trial runs, not what it computes.
        data["optimise"].pop("device")
        data["optimise"].pop("compile")
        return data

    def differences(self, recorded: dict[str, Any]) -> list[str]:
        """The settings in which an earlier sweep's `recorded` config differs from this one."""
        mine = self.to_json()
        # A setting added since that sweep ran counts as recorded at its default.
        defaults = {
            f.name: f.default
            for f in [*fields(self), *fields(ReadSettings)]
            if f.default is not MISSING and not isinstance(f.default, Path)
        }
        recorded = {**{k: v for k, v in defaults.items() if k not in recorded}, **recorded}
        if isinstance(recorded.get("optimise"), dict):  # the same, one level down
            optimise = {f.name: f.default for f in fields(OptimiseSettings)}
            optimise = {k: v for k, v in optimise.items() if k in mine["optimise"]}
            recorded["optimise"] = {**optimise, **recorded["optimise"]}
        return sorted(
            key for key in mine.keys() | recorded.keys() if mine.get(key) != recorded.get(key)
        )


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its index, seed, and the image files (with class labels) it uses."""

    index: int
    seed: int
    classes: tuple[str, ...]
    region: tuple[tuple[Path, str], ...]
    holdout: tuple[tuple[Path, str], ...]
    config: SweepConfig
    # Another region of the same classes, for stability: drawn apart from `region`.
    redrawn: tuple[tuple[Path, str], ...] = ()


def _catalogue(folder: Path, option: str) -> dict[str, list[Path]]:
    paths, labels, _ = find_images(folder)
    classes: dict[str, list[Path]] = {}
    for path, label in zip(paths, labels, strict=True):
        if label:
            classes.setdefault(label, []).append(path)
    if not classes:
        raise ChainxError(
            f"{option} {folder}: no class sub-folders with images. A sweep needs one "
            "sub-folder per class (its name is the label)."
        )
    return classes


def plan_trials(config: SweepConfig, trials: int) -> list[TrialSpec]:
    """Trial i draws `classes` classes and `per_class` images of each as its region, with
    the generator seeded by (seed, i), so a trial is the same whatever runs before it.

    The holdout is the same classes' other images in DATA (or their images in
    `holdout_data`), at most `holdout_per_class` of each, drawn the same way.
    """
    if config.classes < 1 or config.per_class < 1:
        raise ChainxError("--classes and --per-class must be at least 1.")
    data = _catalogue(config.data, "DATA")
    held = _catalogue(config.holdout_data, "--holdout-data") if config.holdout_data else None
    if config.classes > len(data):
        raise ChainxError(
            f"--classes {config.classes}: DATA {config.data} has only {len(data)} class "
            f"folders ({', '.join(sorted(data))}). Ask for at most {len(data)}."
        )
    small = [name for name, files in data.items() if len(files) < config.per_class]
    if small:
        raise ChainxError(
            f"--per-class {config.per_class}: DATA class folders {', '.join(sorted(small))} "
            f"have fewer images. Lower --per-class or add images."
        )
    if held is not None:
        missing = sorted(set(data) - set(held))
        if missing:
            raise ChainxError(
                f"--holdout-data {config.holdout_data}: has no folder for the classes "
                f"{', '.join(missing)} of DATA. Give it the same class sub-folders."
            )
    names = sorted(data)
    specs = []
    for index in range(trials):
        rng = np.random.default_rng([config.seed, index])
        chosen = sorted(names[i] for i in rng.choice(len(names), config.classes, replace=False))
        region, holdout = [], []
        for name in chosen:
            order = rng.permutation(len(data[name]))
            region += [(data[name][i], name) for i in sorted(order[: config.per_class])]
            others = (
                [held[name][i] for i in rng.permutation(len(held[name]))]
                if held is not None
                else [data[name][i] for i in order[config.per_class :]]
            )
            if config.holdout_per_class is not None:
                others = others[: config.holdout_per_class]
            holdout += [(path, name) for path in sorted(others)]
        specs.append(
            TrialSpec(
                index=index,
                seed=int(rng.integers(2**31)),
                classes=tuple(chosen),
                region=tuple(region),
                holdout=tuple(holdout),
                config=config,
                redrawn=_redrawn(config, data, chosen, region, index),
            )
        )
    return specs


def _redrawn(
    config: SweepConfig,
    data: dict[str, list[Path]],
    chosen: list[str],
    region: list[tuple[Path, str]],
    index: int,
) -> tuple[tuple[Path, str], ...]:
    """`per_class` other images of each class, from a generator of their own, so that the
    trials' regions and holdouts are drawn as before. It may overlap the holdout: it serves
    only to compare which filters two regions keep."""
    if not config.stability:
        return ()
    rng = np.random.default_rng([config.seed, index, 1])
    taken = {path for path, _ in region}
    redrawn = []
    for name in chosen:
        free = [path for path in data[name] if path not in taken]
        picked = rng.permutation(len(free))[: config.per_class]
        redrawn += [(free[i], name) for i in sorted(picked)]
    return tuple(redrawn)
