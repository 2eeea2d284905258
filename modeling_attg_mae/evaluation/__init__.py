"""Off-the-shelf evaluation of frozen features: weighted k-NN, linear probe (MAE protocol), attentive probe,
few-shot, retrieval, feature cache."""

from .attentive_probe import (
    AttentiveProbeHead,
    attentive_probe_num_parameters,
    select_attentive_probe_hparams,
    train_attentive_probe_on_features,
)
from .feature_cache import cache_key, cached_features, checkpoint_fingerprint
from .few_shot import held_out_split, mean_std, sample_few_shot
from .knn import DEFAULT_KS, DEFAULT_TEMPERATURE, knn_classify
from .linear_probe import (
    DEFAULT_LR_GRID,
    LARS,
    LinearProbeHead,
    degenerate_reason,
    learning_rate_at,
    linear_probe_rank,
    select_linear_probe_hparams,
    sweep_linear_probe_on_features,
    train_linear_probe,
    train_linear_probe_on_features,
)
from .metrics import top_k_accuracy
from .retrieval import compute_map, evaluate_by_label, evaluate_revisited, load_gnd, rank_database
from .statistics import (
    holm_adjust,
    mean_and_sd,
    minimum_detectable_difference,
    paired_comparison,
    paired_t_power,
    pairs_needed,
    student_t_quantile,
    student_t_two_sided_p,
    wilcoxon_signed_rank,
)

__all__ = [
    "knn_classify",
    "DEFAULT_KS",
    "DEFAULT_TEMPERATURE",
    "sample_few_shot",
    "mean_std",
    "held_out_split",
    "DEFAULT_LR_GRID",
    "sweep_linear_probe_on_features",
    "select_linear_probe_hparams",
    "degenerate_reason",
    "LARS",
    "LinearProbeHead",
    "learning_rate_at",
    "train_linear_probe",
    "train_linear_probe_on_features",
    "linear_probe_rank",
    "AttentiveProbeHead",
    "attentive_probe_num_parameters",
    "train_attentive_probe_on_features",
    "select_attentive_probe_hparams",
    "top_k_accuracy",
    "compute_map",
    "rank_database",
    "evaluate_revisited",
    "evaluate_by_label",
    "load_gnd",
    "paired_comparison",
    "wilcoxon_signed_rank",
    "holm_adjust",
    "paired_t_power",
    "minimum_detectable_difference",
    "pairs_needed",
    "mean_and_sd",
    "student_t_two_sided_p",
    "student_t_quantile",
    "cache_key",
    "cached_features",
    "checkpoint_fingerprint",
]
