"""One feature extractor for every consumer (k-NN, linear probe, few-shot, retrieval, pipelines).

ViTMAE's encoder masks 75% of the patches at random and shuffles the rest, also at inference, and with
`mask_ratio=0` it still shuffles them. Here masking is off and patch order is kept (`noise = arange(N)`),
for our model, stock ViTMAE checkpoints, and plain ViTs (`ViTModel`, DINO, DINOv2 with register tokens).
"""

from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import ViTMAEForPreTraining, ViTMAEModel

from .modeling_attg_mae import patch_grid

Pooling = Literal["cls", "mean", "cls+mean", "gem"]
POOLINGS = ("cls", "mean", "cls+mean", "gem")
# GeM (Radenovic et al., cirtorch's `gem`): (mean_n x_n^p)^(1/p) per channel, p = 3, with x clamped at eps first
GEM_P, GEM_EPS = 3.0, 1e-6
# DINO's `multi_scale` (utils.py, used by eval_image_retrieval / eval_copy_detection)
MULTI_SCALES = (1.0, 2 ** -0.5, 0.5)
# Not a global feature but every token, for heads that pool for themselves (the attentive probe): CLS + patches
# `(B, 1 + N, D)`, register and distillation tokens dropped so that every encoder gives the same layout. Kept out
# of POOLINGS, which lists what k-NN and the linear probe accept.
TOKENS = "tokens"


@contextmanager
def _mask_ratio(config, value: float):
    old = config.mask_ratio
    config.mask_ratio = value
    try:
        yield
    finally:
        config.mask_ratio = old


def encode_tokens(model, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False):
    """All tokens of the last layer (after the final norm) with no masking: `(B, 1 + N, D)` and the prefix length.

    The prefix is the CLS token (plus DeiT's distillation token, DINOv2's register tokens: every token that is
    not a patch of the input's grid); patches follow in row-major order.
    """
    if isinstance(model, ViTMAEForPreTraining):
        model = model.vit
    if isinstance(model, ViTMAEModel):
        batch_size = pixel_values.shape[0]
        grid_h, grid_w = patch_grid(model.config, pixel_values)  # the input's grid (interpolated or not)
        num_patches = grid_h * grid_w
        noise = torch.arange(num_patches, device=pixel_values.device, dtype=torch.float32).expand(batch_size, -1)
        with _mask_ratio(model.config, 0.0):
            out = model(pixel_values, noise=noise, interpolate_pos_encoding=interpolate_pos_encoding)
        return out.last_hidden_state, 1
    if not hasattr(model, "config") or not callable(model):
        raise ValueError(f"extract_features needs a transformers vision model, got {type(model).__name__}")
    kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
    out = model(pixel_values=pixel_values, **kwargs)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None or hidden.dim() != 3:
        raise ValueError(
            f"{type(model).__name__} does not return ViT tokens (last_hidden_state of shape (B, tokens, dim)); "
            "extract_features supports ViTMAE, ViT, DeiT, DINO and DINOv2 encoders"
        )
    return hidden, _prefix_length(model, hidden, pixel_values)


def _prefix_length(model, hidden: torch.Tensor, pixel_values: torch.Tensor) -> int:
    """The number of tokens before the patches, by the model's own count: every token that is not one of the
    input's `grid_h * grid_w` patches (ViT / ViTMSN: CLS; DeiT: CLS + distillation; DINOv2: CLS + registers).
    Counting from the config's extras instead (registers only) pooled DeiT's distillation token as a patch."""
    try:
        grid_h, grid_w = patch_grid(model.config, pixel_values)
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{type(model).__name__}: cannot tell its patch tokens from the others (no square patch_size "
                         f"in its config: {error})") from error
    prefix = hidden.shape[1] - grid_h * grid_w
    if prefix < 1:
        raise ValueError(f"{type(model).__name__} returned {hidden.shape[1]} tokens for a {grid_h}x{grid_w} grid of "
                         f"{model.config.patch_size}-pixel patches: no CLS token before the patches")
    return prefix


@torch.no_grad()
def extract_features(
    model, pixel_values: torch.Tensor, pooling: Pooling | Literal["tokens"] = "cls", interpolate_pos_encoding: bool = False
) -> torch.Tensor:
    """Global image features `(B, D)` (`(B, 2 * D)` for "cls+mean") in float32, or with `pooling="tokens"` the
    tokens themselves, `(B, 1 + N, D)`: CLS then the N patches in row-major order.

    Args:
        model: `AttGViTMAEForPreTraining`, `ViTMAEForPreTraining`, `ViTMAEModel`, or any ViT-like `AutoModel`.
        pixel_values: `(B, C, H, W)` normalised images.
        pooling: "cls" (the CLS token), "mean" (mean of the patch tokens), "cls+mean" (both, concatenated), or
            "gem" (generalized-mean pooling of the patch tokens, p = 3), or "tokens" (no pooling: CLS + patch tokens,
            register and distillation tokens dropped).
        interpolate_pos_encoding: let the encoder take inputs of another size than its config's (position
            embeddings resampled), e.g. aspect-preserving retrieval inputs or the smaller scales of multi-scale.
    """
    if pooling not in (*POOLINGS, TOKENS):
        raise ValueError(f"pooling must be one of {(*POOLINGS, TOKENS)}, got {pooling!r}")
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must have shape (B, C, H, W), got {tuple(pixel_values.shape)}")
    tokens, prefix = encode_tokens(model, pixel_values, interpolate_pos_encoding)
    cls, patches = tokens[:, 0], tokens[:, prefix:]  # (B, D), (B, N, D)
    if pooling == TOKENS:
        features = torch.cat([cls[:, None], patches], dim=1)  # (B, 1 + N, D)
    elif pooling == "cls":
        features = cls
    elif pooling == "mean":
        features = patches.mean(dim=1)
    elif pooling == "gem":
        # GeM assumes non-negative activations (CNN features after ReLU); ViT tokens are signed, so, as cirtorch
        # does, every entry is clamped at eps: negative entries count as ~0 rather than making the root undefined.
        features = patches.float().clamp(min=GEM_EPS).pow(GEM_P).mean(dim=1).pow(1.0 / GEM_P)
    else:
        features = torch.cat([cls, patches.mean(dim=1)], dim=-1)
    return features.float()


@torch.no_grad()
def extract_multi_scale_features(
    model, pixel_values: torch.Tensor, pooling: Pooling = "cls", scales=MULTI_SCALES
) -> torch.Tensor:
    """L2-normalised features `(B, D)` averaged over rescaled copies of the input, as DINO's `multi_scale`.

    Every scale `s` encodes `pixel_values` bilinearly resized by `s` (`align_corners=False`; scale 1 is the input
    itself) with the position embeddings interpolated; the features are summed, divided by the number of scales
    and L2-normalised (DINO divides by the norm of its batch of one, i.e. per image). `scales=(1.0,)` is the
    single-scale feature, normalised.
    """
    scales = tuple(float(s) for s in scales)
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be a non-empty sequence of positive factors, got {scales}")
    total = None
    for scale in scales:
        inputs = pixel_values if scale == 1.0 else F.interpolate(
            pixel_values, scale_factor=scale, mode="bilinear", align_corners=False)
        features = extract_features(model, inputs, pooling, interpolate_pos_encoding=True)  # (B, D)
        total = features if total is None else total + features
    return F.normalize(total / len(scales), dim=-1)


__all__ = ["extract_features", "extract_multi_scale_features", "encode_tokens", "POOLINGS", "MULTI_SCALES", "TOKENS"]
