"""attg-mae: Attention-Guided Masked Autoencoders on transformers / datasets / accelerate."""

from .configuration_attg_mae import GUIDANCE_MODES, TEMPERATURE_SCHEDULES, AttGViTMAEConfig
from .modeling_attg_mae import (
    AttGViTMAEForPreTraining,
    AttGViTMAEForPreTrainingOutput,
    attention_masking_noise,
    guidance_weights,
    normalize_attention_map,
    resample_attention_map,
)


from .features import POOLINGS, extract_features
from .temperature import AttGTemperatureCallback, temperature_at
__version__ = "0.1.0"
