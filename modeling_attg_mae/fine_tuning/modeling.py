"""The fine-tuning classifier: stock `ViTForImageClassification`, or MAE's global-pool head on top of it.

`global_pool=True` (MAE's default for fine-tuning) classifies `fc_norm(mean of the patch tokens)`, the tokens taken
before the encoder's final LayerNorm, which MAE drops in that mode (`vit.layernorm` stays in the state dict,
unused). `fc_norm` is a separate, freshly initialised LayerNorm, as in MAE. The config records the head
(`attg_global_pool`), so `AttGViTForImageClassification.from_pretrained` rebuilds it.

A stock `ViTForImageClassification` loads a global-pool checkpoint too, but it cannot pool: it reports `fc_norm.*`
as unexpected keys and classifies the CLS token, which this head never trained. For stock loaders, fine-tune with
`--global_pool false`: that checkpoint is a plain ViT classifier, identical in every output.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput


def resize_position_embeddings(position_embeddings: torch.Tensor, grid_size: int) -> torch.Tensor:
    """The position embeddings of a square patch grid on another square grid, as MAE's `interpolate_pos_embed`
    (and transformers' `interpolate_pos_encoding`): the CLS row kept, the patch rows resized bicubically
    (`align_corners=False`), in float32, returned in the input's dtype.

    Args:
        position_embeddings: `(1, 1 + g * g, D)`, CLS first, patches row-major.
        grid_size: the side of the new grid.

    Returns:
        `(1, 1 + grid_size ** 2, D)`; the input itself when the grid is already `grid_size`.
    """
    num_patches, dim = position_embeddings.shape[1] - 1, position_embeddings.shape[2]
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"position embeddings of shape {tuple(position_embeddings.shape)} are not CLS + a square grid")
    if side == grid_size:
        return position_embeddings
    patches = position_embeddings[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, g, g)
    patches = nn.functional.interpolate(patches, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid_size * grid_size, dim).to(position_embeddings.dtype)
    return torch.cat([position_embeddings[:, :1], patches], dim=1)  # (1, 1 + G * G, D)


class AttGViTForImageClassification(ViTForImageClassification):
    """`ViTForImageClassification` with MAE's optional global-pool head (`config.attg_global_pool`)."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.global_pool = bool(getattr(config, "attg_global_pool", False))
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if self.global_pool else None
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                interpolate_pos_encoding: bool | None = None, **kwargs) -> ImageClassifierOutput:
        if not self.global_pool:
            return super().forward(pixel_values, labels=labels, interpolate_pos_encoding=interpolate_pos_encoding,
                                   **kwargs)
        vit = self.vit
        pixel_values = pixel_values.to(vit.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states = vit.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)  # (B, 1 + N, D)
        for layer in vit.layers:
            hidden_states = layer(hidden_states, None)
        pooled = self.fc_norm(hidden_states[:, 1:].mean(dim=1))  # (B, D): patch tokens only, as MAE
        logits = self.classifier(pooled)  # (B, C)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


__all__ = ["AttGViTForImageClassification", "resize_position_embeddings"]
