"""What score optimisation takes and gives, without torch: the CLI and the extract pipeline
build and read these before (or without) loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The median top-1 margin, in nats, above which the objective reads the outputs at a
# temperature: about that of the trained classifiers λ and the KL budget were set on
# (1.5–11 nats on the bundled samples, ResNet-20/56, EfficientNet-Lite0 and the ViT).
REFERENCE_MARGIN = 10.0


@dataclass
class OptimiseSettings:
    lam: float = 30.0
    lam_growth: float = 20.0
    steps: int = 300
    lr: float = 0.05
    tau: float = 0.02
    keep_ratio: float | None = None
    finetune_steps: int = 100
    finetune_lr: float = 0.05
    patience: int = 40
    # Stop sparsifying once the filters above τ are at most this multiple of the budget
    # (keep_ratio, not gradual): the cut to the budget then holds (docs/performance.md).
    sparsify_until: float | None = None
    # Stop a fine-tuning once the whole region has agreed for this many steps running.
    finetune_patience: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    augment: bool = False
    views: int = 0  # random views per region image and step, both phases; 0: the region
    temperature: float = 1.0  # of the KL to the original
    class_weight: float = 0.0  # of the KL restricted to the region's classes
    margin: float = 1.0
    hinge: float = 1.0
    hold_margin: float | None = None
    kl_budget: float | None = 0.3
    gradual: bool = True
    # The default budget (`auto_budget`): the sparsest chain that keeps this share of the
    # region's top-1s after fine-tuning; None with --keep-ratio or --tau.
    min_agreement: float | None = None
    compile: str = "auto"  # torch.compile: "auto" (when worth it), "always" or "never"


@dataclass
class StepReport:
    phase: str
    step: int
    total: int
    loss: float
    kl: float
    kept: int
    agreement: float


@dataclass
class FrontierCut:
    """The chain at one budget of the frontier: fine-tuned multipliers, and where the cut
    started from: the score path at `step` ("path"), or the end of sparsification ("final")."""

    keep_ratio: float
    multipliers: dict[str, np.ndarray]
    source: str
    step: int


@dataclass
class BudgetTrial:
    """One budget the default search fine-tuned (`auto_budget`): the share of filters it
    kept, its filters, the region agreement and KL it reached, and where it was cut from:
    the score path at `step` ("path") or the end of sparsification ("final")."""

    keep_ratio: float
    filters: int
    agreement: float
    kl: float
    source: str
    step: int


@dataclass
class StepSizeTrial:
    """The default search's first candidate fine-tuned at one step size (`auto_budget`)."""

    finetune_lr: float
    agreement: float
    kl: float


@dataclass
class OptimiseResult:
    multipliers: dict[str, np.ndarray]
    gates: dict[str, float]
    steps: int
    finetune_steps: int  # taken, over all fine-tuning phases (the default search's included)
    seconds: float
    history: list[StepReport] = field(default_factory=list)
    frontier: list[FrontierCut] = field(default_factory=list)
    signal: float | None = None  # nats the region's outputs lose with every filter off
    output_scale: float = 1.0  # the temperature the objective reads the outputs at
    budgets: list[BudgetTrial] = field(default_factory=list)  # the default search's trials
    chosen: int | None = None  # which trial is the chain
    budget_reason: str = ""  # why that one
    finetune_lr: float | None = None  # the fine-tuning's step size (the search chooses it)
    step_sizes: list[StepSizeTrial] = field(default_factory=list)  # the search's choice
    compiled: str = "eager"  # "compiled in N s", "eager", or "eager: " and why not compiled


@dataclass
class MaskedOutputs:
    """What a chain must reproduce: the masked scoring model's output in float32, and in
    float64 where the graph runs in float64 (else None; `chain.exactness`)."""

    float32: np.ndarray
    float64: np.ndarray | None = None
