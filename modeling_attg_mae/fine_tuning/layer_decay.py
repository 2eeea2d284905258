"""Layer-wise learning-rate decay (BEiT / MAE fine-tuning) on HF ViT parameter names.

Port of MAE's `util/lr_decay.py` (Apache-2.0 / CC-BY-NC in the original repository; the rule is a dozen lines):
with `L` transformer layers, the patch / position embeddings and the CLS token sit at depth 0, layer `i` at depth
`i + 1`, everything after the last layer (final norm, `fc_norm`, classifier) at depth `L + 1`, and a parameter at
depth `d` trains with `lr * layer_decay ** (L + 1 - d)`. Biases, norms (every 1-D parameter), the CLS token and the
position embeddings get no weight decay.
"""

from __future__ import annotations

import re

import torch

# HF ViT layer names: `vit.layers.N.` (transformers 5.x) or `vit.encoder.layer.N.` (4.x and the saved files)
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|encoder\.layer)\.(\d+)\.")
_NO_WEIGHT_DECAY = ("cls_token", "position_embeddings", "mask_token", "distillation_token")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of the parameter `name`: 0 for the embeddings, `i + 1` for transformer layer `i`, `num_layers + 1` else."""
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    if ".embeddings." in f".{name}":
        return 0
    return num_layers + 1


def layer_decay_param_groups(model: torch.nn.Module, num_layers: int, weight_decay: float,
                             layer_decay: float) -> list[dict]:
    """AdamW parameter groups `{"params", "weight_decay", "lr_scale", "names"}`, one per (depth, decay or not).

    `lr_scale = layer_decay ** (num_layers + 1 - depth)`; the optimizer's lr of a group is `base lr * lr_scale`
    (set by the caller). Frozen parameters are left out. The groups run from the head down (the deepest first), so
    the first group trains at the peak lr: the Trainer logs `learning_rate` from the first group.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = parameter.ndim == 1 or name.rsplit(".", 1)[-1] in _NO_WEIGHT_DECAY
        depth = layer_depth(name, num_layers)
        group = groups.setdefault((depth, no_decay), {
            "params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (num_layers + 1 - depth)})
        group["params"].append(parameter)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[0], key[1]))]


__all__ = ["layer_depth", "layer_decay_param_groups"]
