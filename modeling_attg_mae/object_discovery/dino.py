"""`dino`: last-block CLS -> patch attention of a self-supervised ViT (paper Sec. 3.3).

Loads DINO (`facebook/dino-vits16`, `dino-vitb16`, `dino-vits8`: `ViTModel`), DINOv2 (`Dinov2Model`) and
DINOv2 with registers (`Dinov2WithRegistersModel`, register tokens excluded from the map) with transformers.

The models run with their default attention kernel (SDPA, which returns no attention weights). The one
attention matrix we need is recomputed from the last block's input with that block's own q/k projections,
and the forward stops there: no eager attention in the other layers, no last MLP.
"""

from collections.abc import Sequence
from typing import Literal

import torch
from transformers import Dinov2Model, Dinov2WithRegistersModel, ViTMAEModel, ViTModel

from ..configuration_attg_mae import patch_size_of  # reads any ViT config: int or square pair
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, to_size
from .registry import DetectorMethod, register

# vit_mae: a MAE encoder (ours or stock) as its own detector, run with masking off and patch order kept (the
# self-bootstrapped maps of pre-training use the training model's encoder this way)
VIT_DETECTORS = {"vit": ViTModel, "dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel,
                 "vit_mae": ViTMAEModel}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DetectorDtype = Literal["float32", "float16", "bfloat16"]
HeadReduction = Literal["mean", "max"] | int


def check_vit_detector(model_name_or_path: str, revision=None, flag: str = "--model_name_or_path"):
    """The detector's config, read cheaply (no weights): a missing path, an unreachable Hub id or a model type
    other than ViT / DINOv2 is a ValueError naming `flag` and the path."""
    from ..model_source import load_config

    config = load_config(model_name_or_path, flag, revision=revision)
    if config.model_type not in VIT_DETECTORS:
        raise ValueError(
            f"{flag} {model_name_or_path!r} is a {config.model_type!r} checkpoint; dino/tokencut need one of "
            f"{sorted(VIT_DETECTORS)} (e.g. facebook/dino-vits16, facebook/dinov2-small)"
        )
    return config


def load_vit_detector(
    model_name_or_path: str, device: str | torch.device = "cpu", dtype: DetectorDtype = "float32", revision=None
):
    """A ViT / DINOv2 encoder in eval mode, frozen, on `device`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    config = check_vit_detector(model_name_or_path, revision)
    # DINO checkpoints have no pooler: without add_pooling_layer=False transformers adds a random one
    extra = {"add_pooling_layer": False} if config.model_type == "vit" else {}
    model = VIT_DETECTORS[config.model_type].from_pretrained(
        model_name_or_path, revision=revision, dtype=DTYPES[dtype], **extra
    )
    return model.eval().requires_grad_(False).to(device)


class _StopForward(Exception):
    """Raised by the hook once the last block's input is captured: the rest of the forward is not needed."""


def num_prefix_tokens(model) -> int:
    """CLS plus register tokens, which precede the patch tokens."""
    return 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)


def last_attention(model):
    layers = model.layers if hasattr(model, "layers") else model.encoder.layer
    return layers[-1].attention


def query_key_projections(attention):
    """`(q_proj, k_proj, num_heads, head_dim, scaling)` of an attention block, across transformers' two layouts.

    The one version shim of object discovery: the ViT family has the projections on the block (`q_proj`, `k_proj`)
    since transformers 5.9, DINOv2 (with and without registers) only since 5.18; before that DINOv2 nests them in a
    self-attention module (`attention.attention.query` / `.key`). Same weights, same maths.
    """
    if hasattr(attention, "q_proj"):
        block, q_proj, k_proj, head_dim = attention, attention.q_proj, attention.k_proj, attention.head_dim
    else:  # transformers < 5.18: Dinov2SelfAttention
        block = attention.attention
        q_proj, k_proj, head_dim = block.query, block.key, block.attention_head_size
    return q_proj, k_proj, block.num_attention_heads, head_dim, block.scaling


@torch.no_grad()
def last_block_query_key(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of the last attention block, `(B, heads, tokens, head_dim)` each, float32.

    `tokens` = prefix (CLS, registers) + patches in row-major order.
    """
    attention = last_attention(model)
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]  # (B, T, D), after the pre-norm
        raise _StopForward

    handle = attention.register_forward_pre_hook(hook, with_kwargs=True)
    resized = tuple(pixel_values.shape[-2:]) != to_size(model.config.image_size)
    try:
        if isinstance(model, ViTMAEModel):  # masking off, patch order kept: every patch, in row-major order
            from ..features import encode_tokens

            encode_tokens(model, pixel_values.to(model.dtype), interpolate_pos_encoding=resized)
        else:  # DINOv2 interpolates on its own
            extra = {"interpolate_pos_encoding": True} if isinstance(model, ViTModel) and resized else {}
            model(pixel_values=pixel_values.to(model.dtype), **extra)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "hidden" not in captured:
        raise RuntimeError(f"the last attention block of {type(model).__name__} was not reached")
    hidden = captured["hidden"]
    batch, tokens, _ = hidden.shape
    q_proj, k_proj, heads, head_dim, _ = query_key_projections(attention)
    shape = (batch, tokens, heads, head_dim)
    query = q_proj(hidden).view(shape).transpose(1, 2).float()  # (B, heads, T, hd)
    key = k_proj(hidden).view(shape).transpose(1, 2).float()  # (B, heads, T, hd)
    return query, key


def check_image_size(model, image_size) -> tuple[int, int]:
    height, width = to_size(image_size)
    patch = patch_size_of(model.config)
    if height % patch or width % patch:
        raise ValueError(f"image_size {(height, width)} must be a multiple of the detector's patch size {patch}")
    return height, width


def reduce_heads(attention: torch.Tensor, head: HeadReduction) -> torch.Tensor:
    """`(B, heads, N)` -> `(B, N)` by mean, max, or picking one head."""
    if head == "mean":
        return attention.mean(dim=1)
    if head == "max":
        return attention.amax(dim=1)
    if isinstance(head, int) and not isinstance(head, bool):
        if not 0 <= head < attention.shape[1]:
            raise ValueError(f"head index {head} out of range for {attention.shape[1]} heads")
        return attention[:, head]
    raise ValueError(f"head must be 'mean', 'max' or a head index, got {head!r}")


@register
class DinoAttention(DetectorMethod):
    """CLS -> patch attention of the last block, `softmax(q_cls k^T / sqrt(d))` over all tokens, patches kept.

    Args:
        model: a `ViTModel` / `Dinov2Model` / `Dinov2WithRegistersModel`.
        image_size: detector input size; the whole image is resized to it (aspect not kept). Must be a
            multiple of the patch size. The map is `(B, H / patch, W / patch)`.
        head: "mean" (default) or "max" over heads, or the index of one head.
    """

    name = "dino"
    default_model = "facebook/dino-vits16"
    load_model = staticmethod(load_vit_detector)
    check_model = staticmethod(check_vit_detector)

    def __init__(
        self,
        model,
        image_size: int | Sequence[int] = 224,
        head: HeadReduction = "mean",
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        dtype: DetectorDtype = "float32",
    ):
        if not isinstance(model, tuple(VIT_DETECTORS.values())):
            raise ValueError(f"dino needs a ViTModel / Dinov2Model, got {type(model).__name__}")
        reduce_heads(torch.zeros(1, model.config.num_attention_heads, 1), head)  # validate up front
        self.head = head
        self._init_detector(model, check_image_size(model, image_size), image_mean, image_std, dtype)

    def method_params(self) -> dict:
        return {"head": self.head}

    @torch.no_grad()
    def compute(self, pixel_values: torch.Tensor) -> torch.Tensor:
        query, key = last_block_query_key(self.model, pixel_values)
        scaling = query_key_projections(last_attention(self.model))[-1]
        scores = torch.einsum("bhd,bhtd->bht", query[:, :, 0], key) * scaling  # (B, heads, T): the CLS row
        attention = scores.softmax(dim=-1)[:, :, num_prefix_tokens(self.model):]  # (B, heads, N), no CLS/registers
        patch = patch_size_of(self.model.config)
        grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        return reduce_heads(attention, self.head).reshape(-1, *grid)  # (B, h, w)
