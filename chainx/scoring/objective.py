"""What phase 1 and 2 minimise on the region: KL to the original's outputs, the margin
hinge and the L1 on the scores; and how much the outputs depend on the filters at all."""

from __future__ import annotations

import torch

from chainx.errors import ChainxError
from chainx.scoring.model import ScoringModel, log_probabilities


def _jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the size: views of the same region."""
    size = images.shape[-1]
    shift = max(1, size // 8)
    flips = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flips[:, None, None, None].to(images.device), images.flip(-1), images)
    padded = torch.nn.functional.pad(images, (shift,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * shift + 1, (len(images), 2), generator=generator)
    return torch.stack(
        [
            padded[i, :, dy : dy + images.shape[-2], dx : dx + size]
            for i, (dy, dx) in enumerate(offsets.tolist())
        ]
    )


class Objective:
    """KL to the original outputs over the region, in batches, plus the L1 term."""

    def __init__(
        self,
        scoring: ScoringModel,
        images: torch.Tensor,
        kind: str,
        batch_size: int,
        augment: bool,
        seed: int,
    ) -> None:
        self.scoring = scoring
        self.kind = kind
        self.images = list(torch.split(images, batch_size))
        self.augment = augment and images.shape[-1] >= 8
        self.generator = torch.Generator().manual_seed(seed)
        self.count = len(images)
        self.fixed: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return log_probabilities(self.scoring.unscored(images), self.kind)

    def batches(self, augment: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The region in batches with the original's log-probabilities as targets.

        Unjittered targets never change, so they are computed once.
        """
        if not augment:
            if self.fixed is None:
                self.fixed = [(images, self._targets(images)) for images in self.images]
            return self.fixed
        jittered = [_jitter(images, self.generator) for images in self.images]
        return [(images, self._targets(images)) for images in jittered]

    def step(
        self,
        lam: float = 0.0,
        augment: bool = False,
        hinge: float = 0.0,
        margin: float = 0.0,
        hold: float | None = None,
    ) -> tuple[float, float, float]:
        """Backward of the loss; returns (loss, kl, top-1 agreement).

        The loss is KL + λ·mean|score| + hinge·mean(relu(rival − top + want)), where `top` is
        the original's top-1 class, `rival` the best other class, and `want` the margin to
        keep: `margin`, or with `hold` that fraction of the original's own margin, capped
        at `margin`. The L1 is a mean over all filters so that one λ weighs the same on a
        small and a large model.
        """
        kl_total, agree, hinge_total = 0.0, 0, 0.0
        for batch, target in self.batches(augment and self.augment):
            log_q = log_probabilities(self.scoring(batch), self.kind)
            kl = (target.exp() * (target - log_q)).sum(dim=-1).sum() / self.count
            if hinge:
                top = target.argmax(-1, keepdim=True)
                rivals = log_q.scatter(-1, top, float("-inf")).max(-1).values
                gap = rivals - log_q.gather(-1, top).squeeze(-1)
                want = torch.full_like(gap, margin)
                if hold is not None:
                    original_rivals = target.scatter(-1, top, float("-inf")).max(-1).values
                    original_gap = target.gather(-1, top).squeeze(-1) - original_rivals
                    want = torch.clamp(hold * original_gap, max=margin)
                term = hinge * torch.relu(gap + want).sum() / self.count
                hinge_total += float(term.detach())
                kl = kl + term
            if not torch.isfinite(kl):
                raise ChainxError(
                    "the KL divergence became NaN or Inf during optimisation. Check the "
                    "images and preprocessing (--mean/--std), or lower --lam."
                )
            kl.backward()
            kl_total += float(kl.detach())
            agree += int((log_q.argmax(-1) == target.argmax(-1)).sum())
        loss = kl_total
        if lam:
            scores = torch.cat(
                [s * m for s, m in zip(self.scoring.scores, self.scoring.masks, strict=True)]
            )
            l1 = lam * scores.abs().mean()
            l1.backward()
            loss += float(l1.detach())
        return loss, kl_total - hinge_total, agree / self.count


def region_signal(objective: Objective) -> float:
    """Mean KL(original ‖ the network with every scored filter off) over the region, nats.

    How much the region's outputs depend on the filters at all: a chain can lose at most
    this much. It is several nats for a trained classifier, and near 0 for an untrained one,
    whose outputs hardly move with the input.
    """
    scoring = objective.scoring
    total = 0.0
    with torch.no_grad():
        for images, target in objective.batches(augment=False):
            off = [torch.zeros(p.channels, device=images.device) for p in scoring.points]
            log_q = log_probabilities(scoring.run(images, off), objective.kind)
            total += float((target.exp() * (target - log_q)).sum())
    signal = total / objective.count
    # NaN (the network cannot run with every filter off): count it as a strong signal.
    return signal if signal == signal else float("inf")
