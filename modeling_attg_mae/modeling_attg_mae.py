"""AttG-MAE: a ViTMAE whose reconstruction loss is weighted by an attention map (paper Sec. 3, Eq. 1-2).

Masking convention, as in transformers' ViTMAE: `mask` is 1 for a removed (masked) patch, 0 for a kept one.

This file imports only torch, transformers and the configuration and version-check files next to it, so that
`register_for_auto_class` can copy it to a checkpoint folder and `trust_remote_code=True` can load it.
"""

from dataclasses import dataclass

try:  # relative imports when this file travels alone to the Hub (remote code)
    from ._dependencies import MODEL_DEPENDENCIES, check_dependencies
    from .configuration_attg_mae import (
        GUIDANCE_MODES,
        AttGViTMAEConfig,
        check_temperature,
        patch_size_of,
        validate_attg_config,
    )
except ImportError:  # pragma: no cover - loaded as a top-level module
    from _dependencies import MODEL_DEPENDENCIES, check_dependencies
    from configuration_attg_mae import (
        GUIDANCE_MODES,
        AttGViTMAEConfig,
        check_temperature,
        patch_size_of,
        validate_attg_config,
    )

# the supported torch/transformers, checked before reaching into transformers' ViTMAE internals (which moved between
# releases): remote code loads this file without the package's __init__
check_dependencies(*MODEL_DEPENDENCIES)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import ViTMAEForPreTraining  # noqa: E402
from transformers import initialization as init  # noqa: E402
from transformers.models.vit_mae.modeling_vit_mae import (  # noqa: E402
    ViTMAEDecoder,
    ViTMAEEmbeddings,
    ViTMAEForPreTrainingOutput,
    build_2d_sinusoidal_position_embedding,
)
from transformers.utils.generic import can_return_tuple  # noqa: E402


@dataclass
class AttGViTMAEForPreTrainingOutput(ViTMAEForPreTrainingOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        Attention-guided reconstruction loss (Eq. 2): sum over masked patches of `patch_loss * patch_weights`,
        divided by the number of masked patches.
    logits (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_size ** 2 * num_channels)`):
        Pixel reconstruction logits.
    mask (`torch.FloatTensor` of shape `(batch_size, num_patches)`):
        1 for a masked (removed) patch, 0 for a kept one.
    ids_restore (`torch.LongTensor` of shape `(batch_size, num_patches)`):
        Original index of the shuffled patches.
    patch_weights (`torch.FloatTensor` of shape `(batch_size, num_patches)`):
        Float32 weight of every patch in the loss (1 everywhere for "none" and "input_masking").
    patch_loss (`torch.FloatTensor` of shape `(batch_size, num_patches)`):
        Unweighted per-patch MSE against the (normalised) target, for every patch, masked or not.
    """

    patch_weights: torch.FloatTensor | None = None
    patch_loss: torch.FloatTensor | None = None


def resample_attention_map(attention_map: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Bring an attention map onto a patch grid: the one resampling used everywhere in attg-mae.

    Args:
        attention_map: float tensor `(B, h, w)` on any grid, or `(B, h * w)` with a square `h == w` or with
            `h * w` equal to the grid's patch count (then read in the grid's row-major order).
        grid_size: `(grid_h, grid_w)` of the target patch grid.

    Returns:
        float32 tensor `(B, grid_h * grid_w)`, row-major. Maps larger than the grid are area-averaged (every
        source pixel counts once, like Grad-CAM's average pooling); smaller maps are bilinearly upsampled
        (`align_corners=False`). A map already on the grid is returned unchanged (only cast to float32).
    """
    grid_h, grid_w = grid_size
    if not torch.is_tensor(attention_map):
        raise ValueError(f"attention_map must be a torch.Tensor, got {type(attention_map).__name__}")
    if not (attention_map.is_floating_point()):
        raise ValueError(
            f"attention_map must be a floating-point tensor, got dtype {attention_map.dtype}; "
            "cast it with .float() (a binary mask becomes 0./1.)"
        )
    if attention_map.dim() == 2:
        batch_size, length = attention_map.shape
        if length == grid_h * grid_w:
            attention_map = attention_map.reshape(batch_size, grid_h, grid_w)
        else:
            side = int(round(length**0.5))
            if side * side != length:
                raise ValueError(
                    f"attention_map of shape {tuple(attention_map.shape)} cannot be resampled to the "
                    f"{grid_h}x{grid_w} patch grid: a flat map must have {grid_h * grid_w} entries or a square "
                    f"number of them; pass it as (batch_size, h, w) instead"
                )
            attention_map = attention_map.reshape(batch_size, side, side)
    elif attention_map.dim() != 3:
        raise ValueError(
            f"attention_map must have shape (batch_size, h, w) or (batch_size, h*w), got rank "
            f"{attention_map.dim()} shape {tuple(attention_map.shape)}"
        )
    batch_size, height, width = attention_map.shape
    if height == 0 or width == 0:
        raise ValueError(f"attention_map has an empty grid {height}x{width}; cannot resample to {grid_h}x{grid_w}")
    attention_map = attention_map.float()
    if (height, width) != (grid_h, grid_w):
        shrink = height >= grid_h and width >= grid_w
        attention_map = F.interpolate(
            attention_map[:, None],  # (B, 1, h, w)
            size=(grid_h, grid_w),
            mode="area" if shrink else "bilinear",
            align_corners=None if shrink else False,
        )[:, 0]
    return attention_map.reshape(batch_size, grid_h * grid_w)


def patch_grid(config, pixel_values: torch.Tensor) -> tuple[int, int]:
    """`(grid_h, grid_w)` of `pixel_values` `(B, C, H, W)` for a ViT config (`patch_size` an int or a square pair, as
    `patch_size_of` reads it)."""
    patch = patch_size_of(config)
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def normalize_attention_map(attention_map: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row of `(B, N)` to [0, 1]: `M_norm = (M - min) / (max - min)`.

    A constant row has no object to point at: it becomes all zeros, hence weights `exp(0) = 1` (plain MAE),
    instead of the 0/0 = NaN of the formula. A row with a NaN or inf value is no map at all: it becomes all NaN,
    rather than pass for a constant one (a silent plain MAE). Nothing is read on the host: maps are refused where they
    are made (`modeling_attg_mae.data.transforms.check_finite_attention_maps`).
    """
    low = attention_map.amin(dim=1, keepdim=True)
    span = attention_map.amax(dim=1, keepdim=True) - low  # finite exactly when the whole row is (amin/amax keep NaN)
    normalized = torch.where(span > 0, (attention_map - low) / torch.where(span > 0, span, 1.0), 0.0)
    return torch.where(torch.isfinite(span), normalized, torch.nan)


def _invert(attention_norm: torch.Tensor) -> torch.Tensor:
    """`1 - M_norm`, except that a flat map (all zeros after normalisation) stays flat at 0, weight 1."""
    informative = attention_norm.amax(dim=1, keepdim=True) > 0
    return torch.where(informative, 1.0 - attention_norm, 0.0)


def guidance_weights(
    attention_norm: torch.Tensor, guidance: str, temperature: torch.Tensor | float, quantile: float
) -> torch.Tensor:
    """Per-patch loss weights `(B, N)` for a min-max normalised map (paper Eq. 1 and Table 10)."""
    if guidance == "attg":
        return torch.exp(attention_norm / temperature)  # Eq. 1: M_scaled = exp(M_norm / tau)
    if guidance == "inverted":
        return torch.exp(_invert(attention_norm) / temperature)
    if guidance in ("foreground_only", "background_only"):
        scores = attention_norm if guidance == "foreground_only" else _invert(attention_norm)
        threshold = torch.quantile(scores, quantile, dim=1, keepdim=True)  # (B, 1), linear interpolation
        return (scores >= threshold).float()
    if guidance in ("none", "input_masking"):  # the vanilla loss
        return torch.ones_like(attention_norm)
    # the dispatch is exhaustive rather than defaulting to the vanilla loss: a mode this function does not know (a
    # config field edited after the model was built is not re-validated) must not silently train a plain MAE
    raise ValueError(f"attg_guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")


def attention_masking_noise(attention_norm: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """`noise` for ViTMAE's `random_masking` that removes the most attended patches ("input_masking").

    `random_masking` keeps the patches with the smallest noise, so the noise is each patch's rank by
    attention; ties are broken at random so that a flat map falls back to random masking.
    """
    batch_size, num_patches = attention_norm.shape
    shuffle = torch.rand(batch_size, num_patches, device=attention_norm.device, generator=generator).argsort(dim=1)
    order = attention_norm.gather(1, shuffle).argsort(dim=1, stable=True)  # ascending attention, random ties
    ranks = torch.empty_like(order)
    ranks.scatter_(1, shuffle.gather(1, order), torch.arange(num_patches, device=order.device).expand_as(order))
    return ranks.float()


def _fixed_sincos(pos_embed: torch.Tensor) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table `(1, 1 + N, D)` with a zero CLS row, in the official checkpoints' layout."""
    grid = int(round((pos_embed.shape[1] - 1) ** 0.5))
    table = build_2d_sinusoidal_position_embedding(height=grid, width=grid, embed_dim=pos_embed.shape[-1],
                                                   cls_token=True)
    half = table.shape[-1] // 2  # the official code swapped h and w: its checkpoints hold [w | h]
    return torch.cat([table[..., half:], table[..., :half]], dim=-1).unsqueeze(0)


@torch.no_grad()
def _init_mae_embeddings(module, config, ops=init) -> None:
    """MAE's initialisation of the token embeddings, which transformers 5.x skips for a model built from a config.

    In transformers 5.24 a fresh `ViTMAEForPreTraining(config)` has all-zero encoder and decoder position
    embeddings, CLS and mask tokens: the inner `ViTMAEModel` initialises itself in its own `post_init`, where
    `ViTMAEEmbeddings.initialize_weights` returns early once its patch projection is initialised, and the decoder
    branch of `_init_weights` zeroes the sin-cos table built in the decoder's constructor. With no position
    information and a zero mask token (LayerNorm of a zero vector, eps 1e-12) training from scratch starts with
    exploding gradients (grad norm ~5e4 on the first step of the demo). Weights loaded by `from_pretrained`
    replace these values afterwards, so checkpoints are unaffected.
    `ops` is `transformers.initialization` (which skips tensors already loaded) or `torch.nn.init`.
    """
    std = config.initializer_range
    if isinstance(module, ViTMAEEmbeddings):
        ops.copy_(module.position_embeddings, _fixed_sincos(module.position_embeddings))
        ops.normal_(module.cls_token, std=std)
        weight = module.patch_embeddings.projection.weight
        ops.xavier_uniform_(weight.view([weight.shape[0], -1]))  # like nn.Linear, as in MAE
    else:
        ops.copy_(module.decoder_pos_embed, _fixed_sincos(module.decoder_pos_embed))
        ops.normal_(module.mask_token, std=std)


class _TorchInit:
    """`torch.nn.init`-style ops that ignore transformers' "already initialised" flags."""

    copy_ = staticmethod(lambda tensor, value: tensor.copy_(value))
    normal_ = staticmethod(torch.nn.init.normal_)
    xavier_uniform_ = staticmethod(torch.nn.init.xavier_uniform_)


def _checked_temperature(temperature):
    """A tau given to the model (forward's `temperature`, `set_attg_temperature`): a number is checked by the config's
    `check_temperature` (ValueError); a tensor is returned as float32 with every value that is not > 0 made NaN, so
    that the guided weights and loss it gives are NaN. A tensor is not read on the host: on an accelerator that is a
    device-to-host sync every step, and `torch.export` / `torch.compile(fullgraph=True)` cannot trace the branch."""
    if torch.is_tensor(temperature):
        temperature = temperature.float()
        return torch.where(temperature > 0, temperature, torch.nan)
    return check_temperature(temperature, "temperature (tau)")


class AttGViTMAEForPreTraining(ViTMAEForPreTraining):
    """`ViTMAEForPreTraining` with the attention-guided reconstruction loss (Algorithm 1 of the paper).

    Same parameters, same state dict as the stock model: checkpoints load both ways. The current temperature
    lives in a non-persistent buffer `attg_temperature` that the schedule fills in place every step (a value
    change, not a new Python float, so `torch.compile` does not recompile).

    The config is validated where it enters: when it is built, and once here when the model is built from it; the
    forward checks only its own inputs (pixel_values, attention_map, noise, temperature), not the config again, and
    only what the host knows (types, shapes, Python numbers): it never reads a device value, so a guided step needs
    no device-to-host sync and the model traces with `torch.export` and `torch.compile(fullgraph=True)`. An
    unknown `attg_guidance` written into `model.config` afterwards still fails at the loss's dispatch.
    """

    config_class = AttGViTMAEConfig

    def __init__(self, config):
        if not isinstance(config, AttGViTMAEConfig):  # a stock ViTMAEConfig: add our defaults (validated there)
            config = AttGViTMAEConfig(**config.to_dict())
        else:  # validated when built; once more here, where it enters the model, in case a field was edited since
            validate_attg_config(config)
        if config.mask_ratio == 0 and config.attg_pretraining_mask_ratio is not None:
            # an exported checkpoint (mask_ratio 0 for inference pipelines): pre-train with its recorded ratio
            config.mask_ratio = config.attg_pretraining_mask_ratio
        super().__init__(config)
        self.register_buffer(
            "attg_temperature", torch.tensor(float(config.attg_temperature), dtype=torch.float32), persistent=False
        )
        # the inner ViTMAEModel initialised (and flagged) its embeddings in its own post_init: redo them as MAE does
        _init_mae_embeddings(self.vit.embeddings, config, ops=_TorchInit)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, (ViTMAEEmbeddings, ViTMAEDecoder)):
            _init_mae_embeddings(module, self.config)
        if module is self:
            # transformers builds models on the meta device and re-initialises non-persistent buffers here,
            # after loading; without this, tau would be uninitialised memory after `from_pretrained`.
            init.constant_(self.attg_temperature, float(self.config.attg_temperature))

    @torch.no_grad()
    def set_attg_temperature(self, temperature: float) -> None:
        """Set tau for the following steps (in place, see the class docstring)."""
        self.attg_temperature.fill_(_checked_temperature(temperature))

    def _prepare_attention_map(self, attention_map, pixel_values, grid):
        batch_size = pixel_values.shape[0]
        if torch.is_tensor(attention_map) and attention_map.dim() == 2 and attention_map.shape[0] != batch_size:
            # (h, w) of one image, not (batch, h * w): say so rather than "a flat map must have N entries"
            h, w = attention_map.shape
            raise ValueError(
                f"attention_map has shape ({h}, {w}): pass (batch, h, w) — add a batch dimension with map[None] "
                f"(pixel_values has batch size {batch_size}; a flat (batch, h * w) map is accepted too)"
            )
        attention = resample_attention_map(attention_map, grid)  # checks type, dtype and rank first
        if attention.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"attention_map batch size {attention.shape[0]} does not match pixel_values batch size "
                f"{pixel_values.shape[0]} (expected attention_map of shape ({pixel_values.shape[0]}, "
                f"{grid[0]}, {grid[1]}))"
            )
        # the map's values are not checked here: reading them on the host would stall every step on an accelerator and
        # keep torch.export / torch.compile(fullgraph=True) from tracing the forward. Maps are refused where they are
        # made or loaded (data.transforms.check_finite_attention_maps: the collator, the map step, the self maps,
        # online maps under their debug flag); one with NaN or inf that gets here anyway is NaN after normalisation,
        # and the forward makes its weights and the loss NaN
        return normalize_attention_map(attention.detach())

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        attention_map: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        temperature: torch.Tensor | float | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> AttGViTMAEForPreTrainingOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            Normalised images.
        attention_map (`torch.FloatTensor` of shape `(batch_size, h, w)` or `(batch_size, h * w)`, *optional*):
            Object-discovery map M, any finite real values (min-max normalised per image here), on any grid
            (resampled to the patch grid by `resample_attention_map`). Required unless `attg_guidance="none"`.
            Its values are not checked here (no device-to-host read in the forward): a map with NaN or inf gives NaN
            weights and a NaN loss; the package's collator, map step and self maps refuse such maps where they are
            made.
        noise (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            ViTMAE's masking noise (the smallest `1 - mask_ratio` share is kept). Not allowed with
            "input_masking", which derives it from the map.
        temperature (`float` or 0-dim tensor, *optional*):
            tau of Eq. 1 for this call; defaults to the scheduled `self.attg_temperature`. A number <= 0 raises; a
            tensor is not read on the host: a value <= 0 gives NaN weights and loss.
        """
        config = self.config
        guidance = config.attg_guidance
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = patch_grid(config, pixel_values)
        attention_norm = None
        if guidance != "none":
            if attention_map is None:
                raise ValueError(
                    f"attg_guidance={guidance!r} needs an `attention_map` input (batch_size, h, w) and got none; "
                    "pass the object-discovery maps, or set attg_guidance='none' to train a vanilla MAE"
                )
            attention_norm = self._prepare_attention_map(attention_map, pixel_values, grid)
        num_patches = grid[0] * grid[1]
        if int(num_patches * (1 - config.mask_ratio)) >= num_patches:
            raise ValueError(
                f"mask_ratio={config.mask_ratio} masks no patch of {num_patches}: the reconstruction loss is "
                "undefined (use modeling_attg_mae.extract_features for unmasked features)"
            )
        if guidance == "input_masking":
            if noise is not None:
                raise ValueError("attg_guidance='input_masking' derives the masking noise from attention_map; "
                                 "do not pass `noise` as well")
            noise = attention_masking_noise(attention_norm)

        # ViTMAEForPreTraining.forward with its loss replaced: the same encoder and decoder calls, and the target
        # computed once (calling super().forward would compute the stock loss only to discard it)
        outputs = self.vit(
            pixel_values,
            noise=noise,
            interpolate_pos_encoding=interpolate_pos_encoding,
            attention_mask=attention_mask,
            **kwargs,
        )
        logits = self.decoder(
            outputs.last_hidden_state, outputs.ids_restore, interpolate_pos_encoding=interpolate_pos_encoding
        ).logits
        mask = outputs.mask
        # Weights and loss in float32 even under bf16/fp16 autocast: exp(1/tau) and the masked mean of many
        # small terms are where half precision loses the signal.
        with torch.autocast(device_type=pixel_values.device.type, enabled=False):
            target = self.patchify(pixel_values.float(), interpolate_pos_encoding=interpolate_pos_encoding)
            if config.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.0e-6) ** 0.5
            patch_loss = ((logits.float() - target) ** 2).mean(dim=-1)  # (B, N)
            if guidance == "none":
                # the stock reduction, operation for operation: vanilla MAE to the last bit (tested)
                loss, patch_weights = (patch_loss * mask).sum() / mask.sum(), torch.ones_like(patch_loss)
            else:
                tau = self.attg_temperature if temperature is None else _checked_temperature(temperature)
                patch_weights = guidance_weights(attention_norm, guidance, tau, config.attg_quantile)  # (B, N)
                # a NaN or inf map (NaN rows of attention_norm): NaN weights, hence a NaN loss, in every mode, rather
                # than the weight 1 or 0 that the flat or threshold modes would give it
                patch_weights = torch.where(torch.isnan(attention_norm), torch.nan, patch_weights)
                mask = mask.float()
                # Eq. 2: gamma * L_rec * M_scaled, averaged over the masked patches as in MAE
                loss = (patch_loss * (mask * patch_weights)).sum() / mask.sum()

        return AttGViTMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=outputs.mask,
            ids_restore=outputs.ids_restore,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            patch_weights=patch_weights,
            patch_loss=patch_loss,
        )


def save_for_inference_and_pretraining(model, save_directory, **kwargs) -> None:
    """`save_pretrained` with `mask_ratio=0.0` and `attg_pretraining_mask_ratio` set to the training ratio.

    Stock loaders and the `image-feature-extraction` pipeline then see every patch token (stock ViTMAE still
    shuffles their order when it masks nothing; use `extract_features` for ordered tokens), and
    `AttGViTMAEForPreTraining.from_pretrained` resumes pre-training with the original ratio.
    """
    config = model.config
    ratio = config.mask_ratio if config.mask_ratio > 0 else config.attg_pretraining_mask_ratio
    old = (config.mask_ratio, getattr(config, "attg_pretraining_mask_ratio", None))
    config.mask_ratio, config.attg_pretraining_mask_ratio = 0.0, ratio
    try:
        model.save_pretrained(save_directory, **kwargs)
    finally:
        config.mask_ratio, config.attg_pretraining_mask_ratio = old


__all__ = [
    "save_for_inference_and_pretraining",
    "AttGViTMAEForPreTraining",
    "AttGViTMAEForPreTrainingOutput",
    "resample_attention_map",
    "normalize_attention_map",
    "patch_grid",
    "guidance_weights",
    "attention_masking_noise",
]
