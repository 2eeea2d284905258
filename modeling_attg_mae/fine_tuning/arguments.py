"""Arguments of `run_fine_tune.py` (parsed with `HfArgumentParser`, with `transformers.TrainingArguments` and the
evaluation's `EvalDataArguments` for the data) and MAE's fine-tuning recipe as their defaults.

MAE's recipe (`main_finetune.py` and FINETUNE.md of facebookresearch/mae): AdamW, weight decay 0.05, layer-wise
lr decay, `lr = base_lr * effective_batch / 256`, warmup 5 epochs then cosine, drop path, label smoothing 0.1,
Mixup 0.8 / CutMix 1.0 (switch 0.5), RandAugment m9 mstd0.5, RandomErasing 0.25, evaluation at resize
`size / 0.875` + center crop up to 224 px, resize to `size` + center crop above (`augment.eval_resize_ratio`).
Three knobs depend on the model size, as in FINETUNE.md: see `recipe_defaults`.

TrainingArguments: every flag is passed to the Trainer as given and honoured, except the ones
`REFUSED_TRAINING_FLAGS` lists (refused at parsing, each with its reason), and four the run sets per seed:
`output_dir` (`<output_dir>/seed-<n>`), `seed` (each of `--seeds`), `learning_rate` (from `--base_learning_rate`
unless given) and `warmup_steps` (from `--warmup_epochs` unless given; `--warmup_steps 0` is no warmup). The
optimizer is the one `--optim` names (default: MAE's `adamw_torch`), built by the Trainer's own rule
(`Trainer.get_optimizer_cls_and_kwargs`, so `--optim_args`, `--adam_*` apply) on the layer-decay parameter groups.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

# ViT-B/16: MAE fine-tunes with blr 5e-4, layer decay 0.65, drop path 0.1; ViT-L: 1e-3, 0.75, 0.2; ViT-H: 1e-3,
# 0.75, 0.3. Smaller (or other) models get main_finetune.py's own defaults: 1e-3, 0.75, 0.1.
_RECIPE_BY_DEPTH_AND_WIDTH = {(12, 768): (5e-4, 0.65, 0.1), (24, 1024): (1e-3, 0.75, 0.2), (32, 1280): (1e-3, 0.75, 0.3)}
_RECIPE_OTHER = (1e-3, 0.75, 0.1)

# TrainingArguments MAE sets differently from the Trainer's defaults, applied unless given explicitly
FINE_TUNE_TRAINING_DEFAULTS = {
    "output_dir": "outputs/fine_tune",
    "num_train_epochs": 100.0,  # MAE: 100 (ViT-B), 50 (ViT-L/H)
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 128,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 500,
    "save_total_limit": 2,
    "report_to": ["tensorboard"],
    "remove_unused_columns": False,  # the batches are built here, not from dataset columns
    "optim": "adamw_torch",  # MAE's torch AdamW (the Trainer's default is the fused kernel)
}

# --optim values whose Trainer construction replaces the parameter groups (GaLore, APOLLO: their own groups of
# target modules; LOMO / AdaLOMO: the model itself), which would drop the recipe's layer-wise lr decay
_OPTIMIZERS_WITHOUT_GROUPS = ("galore", "apollo", "lomo", "adalomo")

# flag -> (is it set?, why it is refused); checked at parsing (`check_training_arguments`)
REFUSED_TRAINING_FLAGS = {
    "label_smoothing_factor": (
        lambda a: bool(a.label_smoothing_factor),
        "would smooth the labels a second time: the recipe smooths inside Mixup's targets; use --label_smoothing"),
    "dataloader_persistent_workers": (
        lambda a: a.dataloader_persistent_workers,
        "is not supported by run_fine_tune.py: a persistent worker keeps its copy of the training set, whose epoch "
        "(a seed of every augmentation) then never advances, so every epoch would repeat the first one's crops, "
        "RandAugment and erasing; drop the flag (workers are restarted each epoch)"),
    "eval_strategy": (
        lambda a: str(getattr(a.eval_strategy, "value", a.eval_strategy)) != "no",
        "is not supported by run_fine_tune.py: it passes the Trainer no evaluation set during training; every seed's "
        "final model is evaluated on every --eval_splits split after training (MAE reports that last epoch too); "
        "drop the flag"),
    "load_best_model_at_end": (
        lambda a: a.load_best_model_at_end,
        "is not supported by run_fine_tune.py: choosing a checkpoint needs an evaluation during training, which "
        "this CLI does not run (and picking it on --eval_splits would select on the split it reports); drop the flag"),
    "eval_on_start": (
        lambda a: a.eval_on_start,
        "is not supported by run_fine_tune.py: there is no evaluation during training; drop the flag"),
    "prediction_loss_only": (
        lambda a: a.prediction_loss_only,
        "would leave the evaluation without the logits that top-1 / top-5 are computed from; drop the flag"),
    "auto_find_batch_size": (
        lambda a: a.auto_find_batch_size,
        "is not supported by run_fine_tune.py: the learning rate (base lr x effective batch / 256) and the warmup "
        "are computed from --per_device_train_batch_size, which the Trainer would then shrink behind them; pass "
        "a --per_device_train_batch_size that fits"),
    "optim": (
        lambda a: str(getattr(a.optim, "value", a.optim)).startswith(_OPTIMIZERS_WITHOUT_GROUPS),
        "builds its own parameter groups (or updates the model itself), which drops the recipe's layer-wise lr "
        "decay; choose an optimizer that takes parameter groups (adamw_torch, the default; adamw_torch_fused, sgd, "
        "adafactor, ...)"),
    "optim_target_modules": (
        lambda a: a.optim_target_modules is not None,
        "is read by GaLore / APOLLO only, which run_fine_tune.py refuses (see --optim); drop the flag"),
}


def recipe_defaults(num_hidden_layers: int, hidden_size: int) -> dict:
    """`{"base_learning_rate", "layer_decay", "drop_path"}` of MAE's recipe for a model of this depth and width."""
    base_lr, layer_decay, drop_path = _RECIPE_BY_DEPTH_AND_WIDTH.get((num_hidden_layers, hidden_size), _RECIPE_OTHER)
    return {"base_learning_rate": base_lr, "layer_decay": layer_decay, "drop_path": drop_path}


@dataclass
class FineTuneModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "Checkpoint folder or Hub id to start from: ours, facebook/vit-mae-*, or a ViT (DeiT without "
                          "distillation included) / ViT-MSN; not a distilled DeiT."})
    global_pool: bool = field(
        default=True,
        metadata={"help": "MAE's default head: fc_norm(mean of the patch tokens). false: the CLS token after the "
                          "final norm (a plain ViTForImageClassification checkpoint, loadable by stock code)."})
    drop_path: float | None = field(
        default=None, metadata={"help": "Stochastic depth of the last layer, linear from 0 (default: MAE's, 0.1; "
                                        "0.2 for ViT-L, 0.3 for ViT-H)."})
    image_size: int | None = field(
        default=None, metadata={"help": "Training and evaluation image side (default: the checkpoint's; another size "
                                        "resizes the position embeddings once at load, bicubic, as MAE, and the "
                                        "saved model's config has this size)."})
    cache_dir: str | None = field(default=None, metadata={"help": "Hugging Face cache for models and datasets."})
    model_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a Hub checkpoint."})
    hub_base_model: str | None = field(
        default=None, metadata={"help": "With --push_to_hub: the Hub id of the starting checkpoint, which the pushed "
                                        "cards name as base_model (default: --model_name_or_path when it is a Hub id; "
                                        "required for a local folder)."})

    def __post_init__(self):
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            raise ValueError(f"--drop_path must be in [0, 1), got {self.drop_path}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"--image_size must be >= 1, got {self.image_size}")


@dataclass
class FineTuneArguments:
    base_learning_rate: float | None = field(
        default=None, metadata={"help": "lr = base lr * effective batch / 256 unless --learning_rate is given (default: "
                                        "MAE's, 1e-3; 5e-4 for ViT-B)."})
    layer_decay: float | None = field(
        default=None, metadata={"help": "Layer-wise lr decay: layer i of L trains at lr * decay^(L - i) (default: "
                                        "MAE's, 0.75; 0.65 for ViT-B)."})
    warmup_epochs: float = field(
        default=5.0, metadata={"help": "Linear warmup, in epochs, before the cosine decay (unless --warmup_steps is "
                                       "given, which counts in steps)."})
    label_smoothing: float = field(default=0.1, metadata={"help": "Label smoothing, applied once (inside Mixup's targets)."})
    mixup: float = field(default=0.8, metadata={"help": "Mixup alpha; 0 switches Mixup off."})
    cutmix: float = field(default=1.0, metadata={"help": "CutMix alpha; 0 switches CutMix off."})
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "With both on: probability of CutMix for a batch."})
    mixup_prob: float = field(default=1.0, metadata={"help": "Probability of mixing a batch at all."})
    rand_augment: bool = field(default=True, metadata={"help": "RandAugment (rand-m9-mstd0.5-inc1, two ops)."})
    rand_augment_magnitude: float = field(default=9.0, metadata={"help": "RandAugment magnitude, 0-10."})
    rand_augment_magnitude_std: float = field(default=0.5, metadata={"help": "RandAugment magnitude noise (std)."})
    random_erase: float = field(default=0.25, metadata={"help": "RandomErasing probability (one box of noise)."})
    train_fraction: float | None = field(
        default=None, metadata={"help": "Low-shot: train on this class-balanced, seeded fraction of the train split, "
                                        "e.g. 0.01 or 0.1 (paper Table 2). Default: all of it."})
    shots_per_class: int | None = field(default=None, metadata={"help": "Low-shot: train on N images of every class."})
    seeds: list[int] | None = field(
        default=None, metadata={"help": "One fine-tuning per seed (subset, init of the head, augmentation); results get "
                                        "mean and sample std. Default: --seed."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Write into a non-empty --output_dir."})
    update_model_card: bool = field(
        default=True, metadata={"help": "Add the results to README.md of the starting checkpoint folder (when local)."})

    def __post_init__(self):
        if self.train_fraction is not None and not 0 < self.train_fraction <= 1:
            raise ValueError(f"--train_fraction must be in (0, 1], got {self.train_fraction}")
        if self.shots_per_class is not None and self.shots_per_class < 1:
            raise ValueError(f"--shots_per_class must be >= 1, got {self.shots_per_class}")
        if self.train_fraction is not None and self.shots_per_class is not None:
            raise ValueError("--train_fraction and --shots_per_class choose the training subset two ways: pass one")
        if self.base_learning_rate is not None and self.base_learning_rate <= 0:
            raise ValueError(f"--base_learning_rate must be > 0, got {self.base_learning_rate}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ValueError(f"--layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"--warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"--label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup < 0 or self.cutmix < 0 or not 0 <= self.mixup_switch_prob <= 1 or not 0 <= self.mixup_prob <= 1:
            raise ValueError(f"need --mixup, --cutmix >= 0 and --mixup_switch_prob, --mixup_prob in [0, 1]; got "
                             f"{self.mixup}, {self.cutmix}, {self.mixup_switch_prob}, {self.mixup_prob}")
        if not 0 <= self.rand_augment_magnitude <= 10 or self.rand_augment_magnitude_std < 0:
            raise ValueError(f"--rand_augment_magnitude must be in [0, 10] and --rand_augment_magnitude_std >= 0, got "
                             f"{self.rand_augment_magnitude}, {self.rand_augment_magnitude_std}")
        if not 0 <= self.random_erase <= 1:
            raise ValueError(f"--random_erase must be in [0, 1], got {self.random_erase}")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"--seeds must be distinct and not empty, got {self.seeds}")


def parse_fine_tune_arguments(argv: list[str] | None = None):
    """`(model_args, data_args, fine_tune_args, training_args)` from flags or one JSON file, with MAE's training
    defaults (`FINE_TUNE_TRAINING_DEFAULTS`) wherever the user did not set the value."""
    from transformers import TrainingArguments

    from ..cli import parse_cli_with_explicit
    from ..evaluation.arguments import EvalDataArguments

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        raise ValueError("--model_name_or_path is required (a checkpoint folder or Hub id; see --help)")
    # `explicit`: the names the user set, in any spelling argparse accepts (hyphens, abbreviations, --no_x)
    try:
        (model_args, data_args, fine_tune_args, training_args), explicit = parse_cli_with_explicit(
            (FineTuneModelArguments, EvalDataArguments, FineTuneArguments, TrainingArguments), argv)
    except ValueError as error:
        # TrainingArguments' own check (save and eval strategies must match) would come first and ask for an
        # evaluation strategy that this CLI refuses too: say why the flag is refused at all
        if "--load_best_model_at_end" in str(error):
            raise ValueError(f"--load_best_model_at_end {REFUSED_TRAINING_FLAGS['load_best_model_at_end'][1]}") from None
        raise
    for key, value in FINE_TUNE_TRAINING_DEFAULTS.items():
        if key not in explicit:
            setattr(training_args, key, value)
    if "dataloader_pin_memory" not in explicit and not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    check_training_arguments(training_args)
    if training_args.push_to_hub:
        hub_base_model(model_args)
    if "learning_rate" in explicit and "base_learning_rate" in explicit:
        raise ValueError(f"--learning_rate {training_args.learning_rate} and --base_learning_rate "
                         f"{fine_tune_args.base_learning_rate} set the learning rate two ways (the base one is scaled "
                         "by effective batch / 256): pass one")
    if "warmup_steps" in explicit and "warmup_epochs" in explicit:
        raise ValueError(f"--warmup_steps {training_args.warmup_steps} and --warmup_epochs {fine_tune_args.warmup_epochs} "
                         "set the warmup two ways: pass one")
    # the recipe's lr = base lr * effective batch / 256 applies unless --learning_rate was given, and its warmup of
    # --warmup_epochs unless --warmup_steps was (0 included: no warmup)
    fine_tune_args.learning_rate_explicit = "learning_rate" in explicit
    fine_tune_args.warmup_steps_explicit = "warmup_steps" in explicit
    return model_args, data_args, fine_tune_args, training_args


def hub_base_model(model_args) -> str:
    """The Hub id the pushed fine-tuned cards name as `base_model`: --hub_base_model, else a Hub id
    --model_name_or_path; a local folder has none to name, and a card without it would not say what was tuned."""
    import os

    if model_args.hub_base_model:
        return model_args.hub_base_model
    if os.path.isdir(os.path.expanduser(model_args.model_name_or_path)):
        raise ValueError(f"--push_to_hub: --model_name_or_path {model_args.model_name_or_path!r} is a local folder, so the "
                         "pushed cards have no Hub id to name as base_model; pass --hub_base_model <the repo it was "
                         "pushed to> (run_pretrain.py --push_to_hub --hub_model_id ...)")
    return model_args.model_name_or_path


def check_training_arguments(training_args) -> None:
    """Trainer settings this recipe replaces or does not support (`REFUSED_TRAINING_FLAGS`), refused instead of
    silently overridden or ignored."""
    for name, (is_set, why) in REFUSED_TRAINING_FLAGS.items():
        if is_set(training_args):
            value = getattr(getattr(training_args, name), "value", getattr(training_args, name))
            shown = f" {value}" if isinstance(value, str) else ""  # a chosen name (epoch, galore_adamw), not a switch
            raise ValueError(f"--{name}{shown} {why}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(training_args, name)}")


__all__ = ["FineTuneModelArguments", "FineTuneArguments", "FINE_TUNE_TRAINING_DEFAULTS", "REFUSED_TRAINING_FLAGS",
           "recipe_defaults", "hub_base_model",
           "parse_fine_tune_arguments", "check_training_arguments"]
