"""Configuration of AttG-MAE: a `ViTMAEConfig` with the knobs of the attention-guided loss.

`model_type` stays "vit_mae" so that a saved checkpoint is an ordinary ViTMAE checkpoint: stock
`ViTMAEModel`, `ViTMAEForPreTraining` and `AutoModel` load it without remote code. The extra `attg_*` keys
are plain JSON fields that stock transformers carries along and ignores.

Validation happens once, where a value enters: `validate_attg_config` runs when the config is built
(`__post_init__`, hence also `from_pretrained` / `from_dict`) and after `update_from_string`;
`AttGViTMAEForPreTraining` runs it once more when it is built from a config (a config edited between construction
and model building is caught there). A field edited on `model.config` after that is not re-checked on every
forward; build a new model from the edited config instead.

This file imports only the standard library and transformers: it travels to the Hub next to `modeling_attg_mae.py`.
"""

import numbers

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

    def update_from_string(self, update_str: str):
        """`PreTrainedConfig.update_from_string`, then the same validation as at construction. On a bad value the
        config keeps every field it had before the call (the error names the field)."""
        before = dict(self.__dict__)
        try:
            super().update_from_string(update_str)
            validate_attg_config(self)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise


def check_temperature(value, name: str = "temperature (tau)") -> float:
    """The one check of a temperature tau: a real number > 0 (not a bool). Returns it as a float.

    Eq. 1 divides by tau, so 0 gives inf weights and a negative tau inverts the guidance.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _side(config, name: str) -> int:
    value = getattr(config, name)
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} must be an int or a square (side, side) pair: ViTMAE's patchify and its sin-cos "
                             f"position table assume a square, got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int (or a square pair of them), got {value!r}")
    return value


def patch_size_of(config) -> int:
    """The patch side of a ViT config whose `patch_size` is an int or a square `(p, p)` pair; a non-square pair is
    refused with a ValueError (ViTMAE's patchify uses square patches)."""
    return _side(config, "patch_size")


def image_size_of(config) -> int:
    """The image side of a ViT config whose `image_size` is an int or a square `(s, s)` pair; a non-square pair is
    refused with a ValueError."""
    return _side(config, "image_size")


def validate_attg_config(config) -> None:
    """Raise a ValueError naming the bad field: the config's one validation (see the module docstring for when)."""
    if config.attg_guidance not in GUIDANCE_MODES:
        raise ValueError(f"attg_guidance must be one of {GUIDANCE_MODES}, got {config.attg_guidance!r}")
    if config.attg_temperature_schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(
            f"attg_temperature_schedule must be one of {TEMPERATURE_SCHEDULES}, "
            f"got {config.attg_temperature_schedule!r}"
        )
    for name in ("attg_temperature", "attg_temperature_end"):
        check_temperature(getattr(config, name), f"{name} (tau)")
    if not 0.0 <= config.attg_quantile < 1.0:
        raise ValueError(f"attg_quantile must be in [0, 1), got {config.attg_quantile!r}")
    pretraining_ratio = getattr(config, "attg_pretraining_mask_ratio", None)
    if pretraining_ratio is not None and not 0.0 < pretraining_ratio < 1.0:
        raise ValueError(f"attg_pretraining_mask_ratio must be in (0, 1), got {pretraining_ratio!r}")
    if not 0.0 <= config.mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {config.mask_ratio!r}")
    patch_size_of(config), image_size_of(config)  # square patches and images, as ViTMAE's patchify and sin-cos need


__all__ = [
    "AttGViTMAEConfig",
    "GUIDANCE_MODES",
    "TEMPERATURE_SCHEDULES",
    "check_temperature",
    "image_size_of",
    "patch_size_of",
    "validate_attg_config",
]
