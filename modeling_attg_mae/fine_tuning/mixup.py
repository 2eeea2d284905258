"""Mixup / CutMix with label smoothing, applied once per batch (timm's `Mixup` in batch mode, as MAE uses it).

After timm `timm/data/mixup.py` (Apache-2.0), reduced to what MAE's fine-tuning uses: one lambda per batch, the
batch mixed with its reverse, CutMix with the box-area-corrected lambda, `switch_prob` to pick CutMix over Mixup.
Targets are the smoothed one-hot labels mixed with the same lambda, so smoothing is applied here and only here: the
loss on them is a plain soft-target cross entropy (`soft_target_cross_entropy`), never a label-smoothing loss.
"""

from __future__ import annotations

import math

import torch


def smoothed_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """`(B, C)` targets: `1 - smoothing + smoothing / C` on the label, `smoothing / C` elsewhere (rows sum to 1)."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of `-sum_c targets * log_softmax(logits)`."""
    return torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """`(top, bottom, left, right)` of a box of area about `(1 - lam)` of the image, centred uniformly, clipped."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


class Mixup:
    """Mix a batch `(B, 3, H, W)` with its reverse; return the mixed pixels and soft targets `(B, C)`.

    Args:
        num_classes: width of the targets.
        mixup_alpha: Beta(alpha, alpha) for Mixup's lambda; 0 switches Mixup off (MAE: 0.8).
        cutmix_alpha: Beta(alpha, alpha) for CutMix's lambda; 0 switches CutMix off (MAE: 1.0).
        switch_prob: with both on, the probability of CutMix for a batch (MAE: 0.5).
        prob: probability of mixing a batch at all (MAE: 1.0); an unmixed batch gets the smoothed labels.
        label_smoothing: applied to the targets (MAE: 0.1).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0, label_smoothing: float = 0.1):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup / cutmix alphas must be >= 0, got {mixup_alpha} / {cutmix_alpha}")
        if not (0 <= switch_prob <= 1 and 0 <= prob <= 1 and 0 <= label_smoothing < 1):
            raise ValueError(f"need switch_prob and prob in [0, 1] and label_smoothing in [0, 1), got {switch_prob}, "
                             f"{prob}, {label_smoothing}")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.switch_prob, self.prob, self.label_smoothing = switch_prob, prob, label_smoothing

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _beta(self, alpha: float, generator: torch.Generator) -> float:
        # Beta(a, a) from two Gammas, drawn from `generator` (torch.distributions has no generator argument)
        g1 = torch._standard_gamma(torch.tensor([alpha], dtype=torch.float64), generator=generator)
        g2 = torch._standard_gamma(torch.tensor([alpha], dtype=torch.float64), generator=generator)
        return float(g1 / (g1 + g2))

    def sample(self, generator: torch.Generator) -> tuple[float, bool]:
        """`(lam, use_cutmix)` for one batch; `lam == 1` means no mixing."""
        if not self.active or float(torch.rand(1, generator=generator)) >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha == 0 or float(torch.rand(1, generator=generator)) < self.switch_prob)
        return self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha, generator), use_cutmix

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        """`(mixed pixel_values (B, 3, H, W), targets (B, C))`; the input tensor is not modified."""
        lam, use_cutmix = self.sample(generator)
        if lam < 1.0 and use_cutmix:
            height, width = pixel_values.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, generator)
            pixel_values = pixel_values.clone()
            pixel_values[..., top:bottom, left:right] = pixel_values.flip(0)[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)  # the box was clipped: the true share
        elif lam < 1.0:
            pixel_values = pixel_values * lam + pixel_values.flip(0) * (1.0 - lam)
        targets = smoothed_one_hot(labels, self.num_classes, self.label_smoothing)
        return pixel_values, targets * lam + targets.flip(0) * (1.0 - lam)


__all__ = ["Mixup", "smoothed_one_hot", "soft_target_cross_entropy", "cutmix_box"]
