"""Pre-training behind `run_pretrain.py`, one module per concern:

- arguments.py  the four argument groups, model presets, the demo, MAE's optimiser recipe, `parse_arguments`;
- dataset.py    the source dataset, its splits checked and truncated, attention maps added;
- trainer.py    `AttGTrainer` (seeded masking, tau and object-share logging) and the run's callbacks;
- wiring.py     config and model from the arguments, the checks before any work, and `run()`;
- card.py       the stock-loadable export, the k-NN of the export, the model card.

The HF `Trainer` owns distribution (Accelerate), mixed precision, gradient accumulation, checkpoints, resume and
logging; these modules add only what AttG-MAE needs on top. The names below are the package's interface.
"""

from .arguments import (
    ARGUMENT_TYPES,
    CONFIG_FIELDS,
    DEMO_ARGUMENTS,
    MAE_TRAINING_DEFAULTS,
    MODEL_PRESETS,
    AttGArguments,
    DataArguments,
    ModelArguments,
    apply_mae_defaults,
    effective_batch_size,
    parse_arguments,
)
from .card import export_checkpoint, run_knn_on_checkpoint, write_model_card
from .dataset import load_pretraining_data
from .trainer import AttGTrainer, AugmentationEpochCallback, ReconstructionPictureCallback, object_loss_share
from .wiring import build_config, build_model, check_run_arguments, run

__all__ = [
    "ARGUMENT_TYPES", "CONFIG_FIELDS", "DEMO_ARGUMENTS", "MAE_TRAINING_DEFAULTS", "MODEL_PRESETS", "AttGArguments", "DataArguments",
    "ModelArguments", "apply_mae_defaults", "effective_batch_size", "parse_arguments",
    "export_checkpoint", "run_knn_on_checkpoint", "write_model_card", "load_pretraining_data",
    "AttGTrainer", "AugmentationEpochCallback", "ReconstructionPictureCallback", "object_loss_share",
    "build_config", "build_model", "check_run_arguments", "run",
]
