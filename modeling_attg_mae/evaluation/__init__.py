"""Off-the-shelf evaluation of frozen features: weighted k-NN, linear probe (MAE protocol), few-shot, feature cache."""

from .feature_cache import cache_key, cached_features, checkpoint_fingerprint
from .few_shot import mean_std, sample_few_shot
from .knn import DEFAULT_KS, DEFAULT_TEMPERATURE, knn_classify
from .linear_probe import (
    LARS,
    LinearProbeHead,
    learning_rate_at,
    linear_probe_rank,
    train_linear_probe,
    train_linear_probe_on_features,
)
from .metrics import top_k_accuracy

__all__ = [
    "knn_classify",
    "DEFAULT_KS",
    "DEFAULT_TEMPERATURE",
    "sample_few_shot",
    "mean_std",
    "LARS",
    "LinearProbeHead",
    "learning_rate_at",
    "train_linear_probe",
    "train_linear_probe_on_features",
    "linear_probe_rank",
    "top_k_accuracy",
    "cache_key",
    "cached_features",
    "checkpoint_fingerprint",
]
