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


__all__ = ["AttGViTForImageClassification"]
