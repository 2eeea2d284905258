"""attg-mae: Attention-Guided Masked Autoencoders on transformers / datasets / accelerate.

The model and its loss import only torch and transformers; the heavier parts (object discovery, data, evaluation,
pre-training wiring) are sub-packages imported on use.
"""

from .configuration_attg_mae import GUIDANCE_MODES, TEMPERATURE_SCHEDULES, AttGViTMAEConfig
from .features import POOLINGS, encode_tokens, extract_features
from .modeling_attg_mae import (
    AttGViTMAEForPreTraining,
    AttGViTMAEForPreTrainingOutput,
    attention_masking_noise,
    guidance_weights,
    normalize_attention_map,
    resample_attention_map,
    save_for_inference_and_pretraining,
)
from .temperature import AttGTemperatureCallback, temperature_at

__version__ = "0.1.0"

__all__ = [
    "AttGViTMAEConfig",
    "AttGViTMAEForPreTraining",
    "AttGViTMAEForPreTrainingOutput",
    "AttGTemperatureCallback",
    "GUIDANCE_MODES",
    "POOLINGS",
    "TEMPERATURE_SCHEDULES",
    "attention_masking_noise",
    "encode_tokens",
    "extract_features",
    "guidance_weights",
    "normalize_attention_map",
    "resample_attention_map",
    "save_for_inference_and_pretraining",
    "temperature_at",
]
