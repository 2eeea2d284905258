"""Stochastic depth (drop path) for HF ViT layers, added without forking the model.

`ViTLayer.forward` applies `self.dropout` to exactly the two residual branches (attention and MLP outputs) and to
nothing else, so replacing that parameter-free module by `BranchDropout` (dropout, then drop path) gives timm's /
MAE's `x + drop_path(branch(x))`; the state dict keeps every key, so stock `ViTForImageClassification` loads the
fine-tuned weights unchanged. Rates grow linearly with depth, `linspace(0, rate, num_layers)`, as in MAE.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch `(B, ...)` with probability `rate`, scale the kept ones by
    `1 / (1 - rate)` (timm's `drop_path`, Apache-2.0); the identity in eval mode or at rate 0."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (B, 1, 1)
    return x * mask / keep


class BranchDropout(nn.Module):
    """`ViTLayer.dropout` replacement: the layer's dropout, then drop path; holds no parameters."""

    def __init__(self, dropout: nn.Dropout, drop_path_rate: float):
        super().__init__()
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {drop_path_rate}")
        self.dropout, self.drop_path_rate = dropout, float(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(self.dropout(x), self.drop_path_rate, self.training)

    def extra_repr(self) -> str:
        return f"drop_path_rate={self.drop_path_rate:g}"


def vit_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of an HF ViT classifier or encoder (`vit.layers` in 5.x, `encoder.layer` before)."""
    encoder = getattr(model, "vit", model)
    layers = getattr(encoder, "layers", None)
    if layers is None and hasattr(encoder, "encoder"):
        layers = getattr(encoder.encoder, "layer", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no ViT layers (vit.layers / vit.encoder.layer)")
    return layers


def add_drop_path(model: nn.Module, rate: float) -> list[float]:
    """Give layer `i` of `model` drop path `rate * i / (L - 1)` in place; returns the per-layer rates."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"--drop_path must be in [0, 1), got {rate}")
    layers = vit_layers(model)
    rates = torch.linspace(0, rate, len(layers)).tolist()
    for layer, layer_rate in zip(layers, rates):
        if not isinstance(getattr(layer, "dropout", None), (nn.Dropout, BranchDropout)):
            raise ValueError(f"{type(layer).__name__} has no `dropout` on its residual branches; drop path needs "
                             "an HF ViTLayer")
        dropout = layer.dropout.dropout if isinstance(layer.dropout, BranchDropout) else layer.dropout
        layer.dropout = BranchDropout(dropout, layer_rate)
    return rates


__all__ = ["drop_path", "BranchDropout", "add_drop_path", "vit_layers"]
