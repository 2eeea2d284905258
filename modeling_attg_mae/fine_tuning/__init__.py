"""Fine-tuning with MAE's recipe, full or low-shot (`run_fine_tune.py`): the recipe pieces are separate modules
(layer decay, drop path, Mixup / CutMix, RandAugment + RandomErasing, low-shot subsets) wired in `run.py`."""

from .augment import FineTuneTrainTransform, RandAugment, random_erasing
from .drop_path import BranchDropout, add_drop_path, drop_path
from .layer_decay import layer_decay_param_groups, layer_depth
from .low_shot import check_shots, low_shot_indices, sample_fraction
from .mixup import Mixup, smoothed_one_hot, soft_target_cross_entropy
from .modeling import AttGViTForImageClassification

__all__ = ["AttGViTForImageClassification", "FineTuneTrainTransform", "RandAugment", "random_erasing", "BranchDropout",
           "add_drop_path", "drop_path", "layer_decay_param_groups", "layer_depth", "check_shots", "low_shot_indices",
           "sample_fraction", "Mixup", "smoothed_one_hot", "soft_target_cross_entropy"]
