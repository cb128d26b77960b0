"""What phase 1 and 2 minimise on the region: KL to the original's outputs, the margin
hinge and the L1 on the scores; and how much the outputs depend on the filters at all."""

from __future__ import annotations

import torch

from chainx.errors import ChainxError
from chainx.scoring.model import ScoringModel, log_probabilities
from chainx.scoring.settings import REFERENCE_MARGIN


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


def _mix(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image blended with another of `images` (the region) at a random weight: views on
    the way between two region images, often of the two classes, which probe the boundary."""
    count = len(images)
    if count < 2:
        return images
    shifts = torch.randint(1, count, (count,), generator=generator)  # never the image itself
    partners = (torch.arange(count) + shifts) % count
    weights = torch.rand(count, generator=generator).to(images.device)[:, None, None, None]
    return weights * images + (1 - weights) * images[partners.to(images.device)]


def output_scale(log_p: torch.Tensor) -> float:
    """The temperature at which the region's median top-1 margin is REFERENCE_MARGIN, or 1
    where it is smaller.

    Why: a model whose logits are in the thousands (the ONNX zoo's CNTK MNIST, margins of
    ~3,600 nats) gives a KL that is flat until a chain's margins have shrunk a
    thousandfold, so the L1 drives every score to zero together before the KL can tell
    filters apart. Top-1 agreement, what the chain must keep, is the same at any
    temperature.
    """
    if log_p.shape[-1] < 2:
        return 1.0
    top = log_p.topk(2, dim=-1).values
    margin = float((top[:, 0] - top[:, 1]).median())
    return max(1.0, margin / REFERENCE_MARGIN)


class Objective:
    """KL to the original outputs over the region, in batches, plus the L1 term.

    With `views` > 0, every step sees the region and new random views of it, in both
    phases: per image, `views` of them, alternately jittered and blended with another
    region image; the targets are the original's outputs on the same views.
    """

    def __init__(
        self,
        scoring: ScoringModel,
        images: torch.Tensor,
        kind: str,
        batch_size: int,
        augment: bool,
        seed: int,
        views: int = 0,
        temperature: float = 1.0,
        class_weight: float = 0.0,
    ) -> None:
        self.scoring = scoring
        self.kind = kind
        self.region = images
        self.batch_size = batch_size
        self.images = list(torch.split(images, batch_size))
        self.can_jitter = images.shape[-1] >= 8
        self.augment = augment and self.can_jitter
        self.views = views
        self.temperature = temperature
        self.class_weight = class_weight
        self.classes: torch.Tensor | None = None  # the original's top-1 classes on the region
        self.generator = torch.Generator().manual_seed(seed)
        self.count = len(images)
        self.fixed: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.scale = 1.0
        self.scale = output_scale(torch.cat([target for _, target in self.clean()]))
        if self.scale != 1.0:  # the region's targets as log_q reads them
            self.fixed = [(x, torch.log_softmax(t / self.scale, -1)) for x, t in self.fixed]

    def log_q(self, output: torch.Tensor) -> torch.Tensor:
        """The model's log-probabilities as the objective reads them: at `scale`."""
        log_q = log_probabilities(output, self.kind)
        return log_q if self.scale == 1.0 else torch.log_softmax(log_q / self.scale, dim=-1)

    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.log_q(self.scoring.unscored(images))

    def batches(self, augment: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The region in batches with the original's log-probabilities as targets: the
        random views (`views`), the jittered region (`augment`, phase 1), or the region.

        The region's targets never change, so they are computed once.
        """
        if self.views:
            return [(images, self._targets(images)) for images in self._views()]
        if not (augment and self.augment):
            return self.clean()
        jittered = [_jitter(images, self.generator) for images in self.images]
        return [(images, self._targets(images)) for images in jittered]

    def clean(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.fixed is None:
            self.fixed = [(images, self._targets(images)) for images in self.images]
        return self.fixed

    def _views(self) -> list[torch.Tensor]:
        views = [self.region]  # the region itself keeps anchoring the fit
        for index in range(self.views):
            jittered = _jitter(self.region, self.generator) if self.can_jitter else self.region
            views.append(jittered if index % 2 == 0 else _mix(jittered, self.generator))
        return list(torch.split(torch.cat(views), self.batch_size))

    def region_classes(self) -> torch.Tensor:
        if self.classes is None:
            top = torch.cat([target.argmax(-1) for _, target in self.clean()])
            self.classes = torch.unique(top)
        return self.classes

    def fidelity(self, target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """The loss of fidelity summed over a batch: KL(original ‖ chain), at `temperature`
        (×T², Hinton et al. 2015), plus `class_weight` × the KL of the two restricted to
        the region's classes, the decision the region is about."""
        if self.temperature == 1.0:
            loss = _kl(target, log_q)
        else:
            t = self.temperature
            soft = [torch.log_softmax(x / t, dim=-1) for x in (target, log_q)]
            loss = _kl(*soft) * t * t
        if self.class_weight:
            classes = self.region_classes().to(target.device)
            restricted = [torch.log_softmax(x[:, classes], dim=-1) for x in (target, log_q)]
            loss = loss + self.class_weight * _kl(*restricted)
        return loss

    def evaluate(self) -> tuple[float, float]:
        """(KL, top-1 agreement) on the region itself, without gradients."""
        kl, agree = 0.0, 0
        with torch.no_grad():
            for batch, target in self.clean():
                log_q = self.log_q(self.scoring(batch))
                kl += float(_kl(target, log_q))
                agree += int((log_q.argmax(-1) == target.argmax(-1)).sum())
        return kl / self.count, agree / self.count

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
        batches = self.batches(augment)
        count = sum(len(batch) for batch, _ in batches)
        for batch, target in batches:
            log_q = self.log_q(self.scoring(batch))
            kl = self.fidelity(target, log_q) / count
            if hinge:
                top = target.argmax(-1, keepdim=True)
                rivals = log_q.scatter(-1, top, float("-inf")).max(-1).values
                gap = rivals - log_q.gather(-1, top).squeeze(-1)
                want = torch.full_like(gap, margin)
                if hold is not None:
                    original_rivals = target.scatter(-1, top, float("-inf")).max(-1).values
                    original_gap = target.gather(-1, top).squeeze(-1) - original_rivals
                    want = torch.clamp(hold * original_gap, max=margin)
                term = hinge * torch.relu(gap + want).sum() / count
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
            scores = torch.cat(list(self.scoring.scores)) * torch.cat(self.scoring.masks)
            l1 = lam * scores.abs().mean()
            l1.backward()
            loss += float(l1.detach())
        return loss, kl_total - hinge_total, agree / count


def _kl(target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) summed over a batch, from log-probabilities."""
    return (target.exp() * (target - log_q)).sum()


def region_signal(objective: Objective) -> float:
    """Mean KL(original ‖ the network with every scored filter off) over the region, nats.

    How much the region's outputs depend on the filters at all: a chain can lose at most
    this much. It is several nats for a trained classifier, and near 0 for an untrained one,
    whose outputs hardly move with the input.
    """
    scoring = objective.scoring
    total = 0.0
    with torch.no_grad():
        for images, target in objective.clean():
            off = [torch.zeros(p.channels, device=images.device) for p in scoring.points]
            log_q = objective.log_q(scoring.run(images, off))
            total += float(_kl(target, log_q))
    signal = total / objective.count
    # NaN (the network cannot run with every filter off): count it as a strong signal.
    return signal if signal == signal else float("inf")
