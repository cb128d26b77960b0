"""Extract recipes that docs, tests and tools share, as `chainx.extract` options.

LITE0: EfficientNet-Lite0's ants/bees chain (docs/results.md, docs/performance.md): a
λ ramp of 80× with a KL guard, everything above τ=0 fine-tuned, then cut to a 4.9 %
budget and fine-tuned again; 500 + 150 + 150 steps.
LITE0_SHORT: the same, stopping sparsification at twice the budget and each fine-tuning
after 10 steps at 20/20 (docs/performance.md, "The short recipe").
"""

from __future__ import annotations

LITE0_PREPROCESS: dict[str, tuple[float, ...]] = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

LITE0: dict[str, float | int | bool] = {
    "lam": 30.0,
    "lam_growth": 80.0,
    "kl_budget": 1.0,
    "steps": 500,
    "tau": 0.0,
    "keep_ratio": 0.049,
    "gradual": False,
    "hinge": 5.0,
    "hold_margin": 0.5,
    "finetune_steps": 150,
    "finetune_lr": 0.01,
}

LITE0_SHORT: dict[str, float | int | bool] = {
    **LITE0,
    "sparsify_until": 2.0,
    "finetune_patience": 10,
}
