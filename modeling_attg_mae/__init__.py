"""attg-mae: Attention-Guided Masked Autoencoders on transformers / datasets / accelerate.

The model and its loss import only torch and transformers; the heavier parts (object discovery, data, evaluation,
pre-training wiring) are sub-packages imported on use. The pre-training Trainer and its callbacks are exported here
too, but lazily (`_LAZY`, module `__getattr__`): `import modeling_attg_mae` does not load `datasets` or the
evaluation code for them.

Importing the package first checks the installed versions of its dependencies (`_dependencies.SUPPORTED`, the
ranges of setup.cfg) and raises an ImportError naming the one out of range.
"""

from ._dependencies import check_dependencies

check_dependencies()  # before any import that reaches into transformers' internals

from .configuration_attg_mae import GUIDANCE_MODES, TEMPERATURE_SCHEDULES, AttGViTMAEConfig  # noqa: E402
from .features import POOLINGS, encode_tokens, extract_features  # noqa: E402
from .modeling_attg_mae import (  # noqa: E402
    AttGViTMAEForPreTraining,
    AttGViTMAEForPreTrainingOutput,
    attention_masking_noise,
    guidance_weights,
    normalize_attention_map,
    resample_attention_map,
    save_for_inference_and_pretraining,
)
from .temperature import AttGTemperatureCallback, temperature_at  # noqa: E402

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first access
_LAZY = {
    "AttGTrainer": ".pretraining.trainer",
    "AugmentationEpochCallback": ".pretraining.trainer",
    "ReconstructionPictureCallback": ".pretraining.trainer",
    "KNNMonitorCallback": ".evaluation.monitor",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # the next access is a plain attribute lookup
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AttGViTMAEConfig",
    "AttGViTMAEForPreTraining",
    "AttGViTMAEForPreTrainingOutput",
    "AttGTemperatureCallback",
    "AttGTrainer",
    "AugmentationEpochCallback",
    "KNNMonitorCallback",
    "ReconstructionPictureCallback",
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
