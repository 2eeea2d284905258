"""Configuration of AttG-MAE: a `ViTMAEConfig` with the knobs of the attention-guided loss.

`model_type` stays "vit_mae" so that a saved checkpoint is an ordinary ViTMAE checkpoint: stock
`ViTMAEModel`, `ViTMAEForPreTraining` and `AutoModel` load it without remote code. The extra `attg_*` keys
are plain JSON fields that stock transformers carries along and ignores.

This file imports only transformers: it travels to the Hub next to `modeling_attg_mae.py`.
"""

from transformers import ViTMAEConfig

GUIDANCE_MODES = ("attg", "input_masking", "foreground_only", "background_only", "inverted", "none")
TEMPERATURE_SCHEDULES = ("cosine", "constant")


class AttGViTMAEConfig(ViTMAEConfig):
    r"""
    All arguments of [`ViTMAEConfig`] plus the attention-guided loss (paper Sec. 3, Eq. 1-2, Table 10-11).

    Args:
        attg_temperature (`float`, *optional*, defaults to 0.75):
            The temperature tau of Eq. 1 at the start of training. Patch weights are `exp(M_norm / tau)`: a
            background patch (M_norm = 0) weighs 1, the most attended patch `e^(1/tau)`. Must be > 0.
        attg_temperature_end (`float`, *optional*, defaults to 1.0):
            tau at the end of training for the "cosine" schedule. The paper (Sec. 3.2, Table 11) says tau follows a
            half-cycle cosine that increases from 0.75 but does not state the end value; 1.0 is our choice, so the
            object/background weight ratio relaxes from e^(4/3) ~ 3.8 to e ~ 2.7. Must be > 0.
        attg_temperature_schedule (`str`, *optional*, defaults to `"cosine"`):
            "cosine" (half-cycle cosine from `attg_temperature` to `attg_temperature_end` over training) or
            "constant" (`attg_temperature` throughout).
        attg_guidance (`str`, *optional*, defaults to `"attg"`):
            How the attention map is used (paper Table 10):
            - "attg": Eq. 2, every masked patch's loss weighted by `exp(M_norm / tau)`;
            - "input_masking": mask the `mask_ratio` share of patches with the *highest* attention, plain loss;
            - "foreground_only": zero the loss of patches whose attention is below the `attg_quantile` quantile;
            - "background_only": the same on the inverted map `1 - M_norm`;
            - "inverted": Eq. 2 on `1 - M_norm`;
            - "none": vanilla MAE; any attention map is ignored and the loss is bit-identical to
              `ViTMAEForPreTraining`'s.
        attg_quantile (`float`, *optional*, defaults to 0.1):
            Quantile (per image) under which "foreground_only" / "background_only" zero the loss. In [0, 1).
            With binary maps (masks, TokenCut components) the 0.1 quantile of a mostly-zero map is 0, so
            "foreground_only" zeroes almost nothing and behaves like vanilla MAE (measured: 0.02% of the patches
            on the synthetic data); use soft maps or a larger quantile for that ablation.
        attg_pretraining_mask_ratio (`float`, *optional*):
            Masking ratio that `AttGViTMAEForPreTraining` uses when this is set and `mask_ratio` is 0. Published
            checkpoints store `mask_ratio=0.0` so that stock `ViTMAEModel` (and the `image-feature-extraction`
            pipeline) returns every patch token instead of a random 25%, and `attg_pretraining_mask_ratio=0.75` so
            that continued pre-training with this class still masks 75%. (Stock `ViTMAEForPreTraining` does not
            read it: pass `mask_ratio=0.75` to it explicitly.)
        norm_pix_loss (`bool`, *optional*, defaults to `True`):
            Per-patch normalised reconstruction target, as in the paper (stock ViTMAE defaults to False).
    """

    attg_temperature: float | int = 0.75
    attg_temperature_end: float | int = 1.0
    attg_temperature_schedule: str = "cosine"
    attg_guidance: str = "attg"
    attg_quantile: float | int = 0.1
    attg_pretraining_mask_ratio: float | None = None
    norm_pix_loss: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        validate_attg_config(self)


def validate_attg_config(config) -> None:
    """Raise a ValueError naming the bad field. Called when the config is built and again by the model."""
    if config.attg_guidance not in GUIDANCE_MODES:
        raise ValueError(f"attg_guidance must be one of {GUIDANCE_MODES}, got {config.attg_guidance!r}")
    if config.attg_temperature_schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(
            f"attg_temperature_schedule must be one of {TEMPERATURE_SCHEDULES}, "
            f"got {config.attg_temperature_schedule!r}"
        )
    for name in ("attg_temperature", "attg_temperature_end"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} (tau) must be a number > 0, got {value!r}")
    if not 0.0 <= config.attg_quantile < 1.0:
        raise ValueError(f"attg_quantile must be in [0, 1), got {config.attg_quantile!r}")
    pretraining_ratio = getattr(config, "attg_pretraining_mask_ratio", None)
    if pretraining_ratio is not None and not 0.0 < pretraining_ratio < 1.0:
        raise ValueError(f"attg_pretraining_mask_ratio must be in (0, 1), got {pretraining_ratio!r}")
    if not 0.0 <= config.mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {config.mask_ratio!r}")


__all__ = ["AttGViTMAEConfig", "GUIDANCE_MODES", "TEMPERATURE_SCHEDULES"]
