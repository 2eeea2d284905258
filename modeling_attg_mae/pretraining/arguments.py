"""The arguments of `run_pretrain.py`: the four dataclass groups, the model presets, the demo, MAE's recipe.

A module of its own because everything here is read before any data or weight exists, and by more than the run:
the study and the benchmarks build their argument lists from `DEMO_ARGUMENTS` and `parse_arguments`.

One home for each default: the AttG knobs and the masking ratio / target normalisation take their defaults from
`AttGViTMAEConfig` (read from the class, listed once in `CONFIG_FIELDS`), not from a second copy here. They are
real values rather than `None` = "the config's": HfArgumentParser gives an `Optional[bool]` no bare `--flag` and
no `--no_flag` form, and the model card can print the arguments as they are.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import TrainingArguments

from ..data.arguments import LabelledDataArguments
from ..configuration_attg_mae import GUIDANCE_MODES, TEMPERATURE_SCHEDULES, AttGViTMAEConfig

# Encoder sizes of the official checkpoints (facebook/vit-mae-{base,large,huge}); all share MAE's 8x512 decoder.
_DECODER = dict(decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16,
                decoder_intermediate_size=2048)
MODEL_PRESETS = {
    # small enough to pre-train on two CPU cores in minutes, on the 32 px synthetic data (the study's model)
    "demo": dict(image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=512, decoder_hidden_size=64, decoder_num_hidden_layers=2,
                 decoder_num_attention_heads=4, decoder_intermediate_size=256),
    "small": dict(image_size=224, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  intermediate_size=1536, **_DECODER),
    "base": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, **_DECODER),
    "large": dict(image_size=224, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, **_DECODER),
    "huge": dict(image_size=224, patch_size=14, hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                 intermediate_size=5120, **_DECODER),
}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Continue pre-training from a checkpoint (ours or a stock ViTMAE such as facebook/vit-mae-base). "
                "Leave empty to start from scratch with --model_preset."})
    model_preset: Literal["demo", "small", "base", "large", "huge"] = field(default="demo", metadata={
        "help": "Encoder size when starting from scratch: demo (32 px images, 4 px patches: two CPU cores, "
                "minutes), small (ViT-S/16), base, large, huge (the facebook/vit-mae-* encoders, 224 px); all but "
                "demo use MAE's 8x512 decoder."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "Comma-separated config overrides applied last (PretrainedConfig.update_from_string), e.g. "
                "'hidden_size=256,num_hidden_layers=4'; a key the config lacks is an error."})
    mask_ratio: float = field(default=AttGViTMAEConfig.mask_ratio, metadata={
        "help": "Share of patches removed from the encoder input (the config's default)."})
    norm_pix_loss: bool = field(default=AttGViTMAEConfig.norm_pix_loss, metadata={
        "help": "Per-patch normalised reconstruction target: on in MAE's pre-training recipe and the paper, so "
                "AttGViTMAEConfig defaults to it (stock ViTMAEConfig defaults to off); --no_norm_pix_loss turns "
                "it off."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache for models and datasets from the Hub."})


@dataclass
class DataArguments(LabelledDataArguments):
    """The shared data flags (`modeling_attg_mae.data.arguments`: source, image / label columns, splits, synthetic
    settings) plus pre-training's own: the validation split of the loss and pictures, truncation, the maps."""

    streaming: bool = field(default=False, metadata={
        "help": "Stream --dataset_name (a Hub dataset or Hub-layout folder) or --train_dir instead of preparing it "
                "whole: needs --max_steps and maps that need no pass over the data (--attention_online, or "
                "--attg_guidance none), and no --run_knn / --knn_monitor (a stream has no length)."})
    streaming_shuffle_buffer: int = field(default=1000, metadata={
        "help": "A streamed training split is shuffled through a buffer of this many rows (datasets' default; each "
                "holds an undecoded image), reshuffled every pass; a larger buffer mixes better and costs memory."})
    validation_split: str | None = field(default="validation", metadata={
        "help": "Split for the evaluation loss and the pictures (empty: none)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=512, metadata={"help": "Truncate the validation set."})
    attention_column: str = field(default="attention_map", metadata={
        "help": "Column with precomputed maps; computed with --attention_method when the dataset lacks it."})
    attention_method: str = field(default="spectral_residual", metadata={
        "help": "Object discovery when maps must be computed: dino | tokencut | gradcam | spectral_residual | "
                "column | self. The paper's best is tokencut on facebook/dino-vits16; spectral_residual needs no "
                "weights; self needs no second model (the training model's own last-layer CLS attention, "
                "refreshed every --attention_refresh_epochs)."})
    attention_model_name_or_path: str | None = field(default=None, metadata={
        "help": "Detector checkpoint for dino / tokencut / gradcam (e.g. facebook/dino-vits16, microsoft/resnet-50)."})
    attention_source_column: str | None = field(default=None, metadata={
        "help": "For --attention_method column: the mask column to use (the synthetic data has object_mask)."})
    attention_batch_size: int = field(default=64, metadata={"help": "Batch size of the map computation."})
    attention_num_proc: int | None = field(default=None, metadata={
        "help": "Processes for the map computation (one per GPU)."})
    attention_grid_size: int = field(default=28, metadata={
        "help": "Side of the stored map grid, covering the whole image; crops are cut from it during training."})
    attention_online: bool = field(default=False, metadata={
        "help": "Compute the map of every training batch on the training device from the augmented crop (dino, "
                "tokencut, gradcam, spectral_residual): no stored column, no map cropping, exact alignment, works "
                "with a streaming source. The detector is frozen and not saved; costs one detector forward a batch."})
    attention_online_check: bool = field(default=False, metadata={
        "help": "Debug: with --attention_online, refuse a map with NaN or inf values when it is made (naming it). Off "
                "by default: the check reads every batch's maps back on the host, a pipeline stall on a GPU; without "
                "it such a map makes the batch's loss NaN. Stored and self maps are always checked (on the CPU)."})
    attention_placebo: Literal["permuted", "centre"] | None = field(default=None, metadata={
        "help": "A control arm (object_discovery/placebo.py): the loss is weighted with maps that carry no object "
                "information for their image. permuted: each batch's maps handed to the other images of the batch "
                "(a seeded derangement, same multiset); centre: one centred Gaussian for every image. Needs stored "
                "maps and a guidance mode; object_loss_share still measures the share on each image's own map."})
    attention_refresh_epochs: int | None = field(default=None, metadata={
        "help": "With --attention_method self: recompute the maps from the current weights every K epochs (K >= 1), "
                "on the un-augmented images; the collator crops them like stored maps."})
    attention_warmup_epochs: int | None = field(default=None, metadata={
        "help": "With --attention_method self: epochs of plain MAE (guidance none) before the first maps; unset "
                "means --attention_refresh_epochs."})

    def __post_init__(self):
        super().__post_init__()
        if self.streaming:
            from ..data.loading import check_source_choice

            check_source_choice(self.dataset_name, self.dataset_config_name, self.train_dir, self.validation_dir,
                                streaming=True)
        for name in ("max_train_samples", "max_eval_samples", "attention_num_proc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 (or left unset), got {value}")
        for name in ("attention_batch_size", "attention_grid_size", "streaming_shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        check_label_free_arguments(self)


def check_label_free_arguments(data_args) -> None:
    """The combinations of the online / self-bootstrapped map flags that cannot work, refused at parse time."""
    method = data_args.attention_method
    if data_args.attention_online:
        if method in ("column", "self"):
            why = ("reads a dataset column, not pixels" if method == "column" else
                   "is refreshed every --attention_refresh_epochs from the model's own weights, not per batch")
            raise ValueError(f"--attention_online cannot be used with --attention_method {method}: it {why}; use "
                             "dino, tokencut, gradcam or spectral_residual, or drop --attention_online")
    if data_args.attention_online_check and not data_args.attention_online:
        raise ValueError("--attention_online_check checks the maps of --attention_online as they are made; stored and "
                         "self maps are always checked (in the collator, the map step and at each refresh): add "
                         "--attention_online or drop the flag")
    if data_args.attention_placebo is not None:
        from ..object_discovery.placebo import check_placebo

        check_placebo(data_args.attention_placebo)
        if data_args.attention_online or method == "self":
            raise ValueError(f"--attention_placebo {data_args.attention_placebo} replaces each batch's stored maps, "
                             f"but the maps here are {'online' if data_args.attention_online else 'self'} maps; "
                             "use a stored map source (e.g. --attention_method column) or drop --attention_placebo")
    for name in ("attention_refresh_epochs", "attention_warmup_epochs"):
        if getattr(data_args, name) is not None and method != "self":
            raise ValueError(f"--{name} is for --attention_method self (self-bootstrapped maps), but "
                             f"--attention_method is {method!r}; drop --{name}")
    if method == "self":
        if data_args.attention_refresh_epochs is None:
            raise ValueError("--attention_method self needs --attention_refresh_epochs K (>= 1): the maps are "
                             "recomputed from the model's weights every K epochs")
        if data_args.attention_refresh_epochs < 1:
            raise ValueError(f"--attention_refresh_epochs must be >= 1, got {data_args.attention_refresh_epochs}")
        if data_args.attention_warmup_epochs is not None and data_args.attention_warmup_epochs < 0:
            raise ValueError(f"--attention_warmup_epochs must be >= 0, got {data_args.attention_warmup_epochs}")
        if data_args.attention_model_name_or_path:
            raise ValueError("--attention_method self uses the training model's own encoder; drop "
                             f"--attention_model_name_or_path {data_args.attention_model_name_or_path!r}")


@dataclass
class AttGArguments:
    # defaults: AttGViTMAEConfig's (its docstring says why each); the help shows the value
    attg_guidance: str = field(default=AttGViTMAEConfig.attg_guidance, metadata={
        "help": f"How the attention map is used: one of {GUIDANCE_MODES} (paper Table 10; none = vanilla MAE)."})
    attg_temperature: float = field(default=AttGViTMAEConfig.attg_temperature, metadata={
        "help": "tau at the start (Eq. 1): object patches weigh up to e^(1/tau)."})
    attg_temperature_end: float = field(default=AttGViTMAEConfig.attg_temperature_end, metadata={
        "help": "tau at the end of the cosine schedule (the paper does not give it; the config's default)."})
    attg_temperature_schedule: Literal[TEMPERATURE_SCHEDULES] = field(
        default=AttGViTMAEConfig.attg_temperature_schedule, metadata={
            "help": "Half-cycle cosine from --attg_temperature to --attg_temperature_end, or constant."})
    attg_quantile: float = field(default=AttGViTMAEConfig.attg_quantile, metadata={
        "help": "Per-image quantile under which foreground_only / background_only zero the loss."})
    base_learning_rate: float = field(default=1.5e-4, metadata={
        "help": "lr = base_learning_rate * effective batch / 256, used when --learning_rate is not given."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Allow writing into a non-empty output_dir (otherwise refused, to protect earlier runs)."})
    num_pictures: int = field(default=8, metadata={
        "help": "Validation images drawn as image | map | weights | reconstruction at each evaluation."})
    run_knn: bool = field(default=False, metadata={
        "help": "After training, run the k-NN evaluation of the exported encoder on --eval_splits and add it to "
                "the model card."})
    maps_for_vanilla_mae: bool = field(default=False, metadata={
        "help": "With --attg_guidance none, still load (or compute) the attention maps: the loss ignores them, but "
                "object_loss_share is logged (the share of MAE's unweighted loss on object patches), so a MAE run "
                "can be compared with an AttG run patch for patch."})
    knn_monitor: bool = field(default=False, metadata={
        "help": "Online k-NN during training (DINO's weighted vote, CLS): logged as eval/knn_top1_<split> to "
                "TensorBoard and trainer_state.json. Needs the --label_column_name column."})
    knn_monitor_steps: int | None = field(default=None, metadata={
        "help": "Measure every N optimizer steps (default: once per epoch); the last step is always measured."})
    knn_monitor_bank_size: int | None = field(default=1000, metadata={
        "help": "Train images in the monitor's bank (a fixed seeded subset; empty: all)."})
    knn_monitor_queries: int | None = field(default=500, metadata={
        "help": "Images per evaluation split the monitor classifies (a fixed seeded subset; empty: all)."})
    knn_monitor_k: int = field(default=20, metadata={"help": "k of the monitor's k-NN."})

    def __post_init__(self):
        for name in ("knn_monitor_steps", "knn_monitor_bank_size", "knn_monitor_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 (or left unset), got {value}")
        if self.knn_monitor_k < 1:
            raise ValueError(f"--knn_monitor_k must be >= 1, got {self.knn_monitor_k}")
        if self.attg_guidance not in GUIDANCE_MODES:
            raise ValueError(f"--attg_guidance must be one of {GUIDANCE_MODES}, got {self.attg_guidance!r}")


# The demo: what `python run_pretrain.py` with no argument runs (CPU, minutes, no network).
DEMO_ARGUMENTS = {
    "output_dir": "outputs/attg-mae-demo",
    "model_preset": "demo",
    "synthetic_num_train": 4000,
    "synthetic_num_validation": 1000,
    "synthetic_image_size": 32,
    # the synthetic data's object masks stand in for the detector (an oracle, the upper bound of Table 9); on
    # real images use tokencut / dino with a pretrained DINO, see the README
    "attention_method": "column",
    "attention_source_column": "object_mask",
    "attention_grid_size": 16,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 128,
    "learning_rate": 1.5e-3,  # 10x MAE's scaled rule: a 300-step schedule needs larger steps (see docs/RESULTS.md)
    "warmup_steps": 0.15,
    "max_eval_samples": 256,
    "per_device_eval_batch_size": 256,
    "logging_steps": 10,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "report_to": ["tensorboard"],
    "run_knn": True,
    # the online k-NN curve at epochs 5 and 10, on a 500-image bank and 200 images per split: on two CPU cores
    # an inference pass costs about as much per image as a training step, so this is what stays within ~5% of
    # the training time (benchmarks/knn_monitor_overhead.py); once per epoch is the default elsewhere
    "knn_monitor": True,
    "knn_monitor_steps": 160,
    "knn_monitor_bank_size": 500,
    "knn_monitor_queries": 200,
    "seed": 0,
}

# The fields of ModelArguments / AttGArguments that are AttGViTMAEConfig fields of the same name: their defaults
# are the config class's, and build_config hands them to the config in one loop.
CONFIG_FIELDS = ("mask_ratio", "norm_pix_loss", "attg_guidance", "attg_temperature", "attg_temperature_end",
                 "attg_temperature_schedule", "attg_quantile")

# The arguments that define a run, recorded in each checkpoint (checkpointing.RunFingerprintCallback) so that a
# resume continues only a checkpoint of the same run: everything that changes the weights it ends with. Not the
# paths, logging, saving, evaluation, pictures, k-NN or Hub flags, nor how the work is spread (processes, workers:
# the effective batch is what the run is).
FINGERPRINT_FIELDS = {
    "model": ("model_preset", "config_overrides", "mask_ratio", "norm_pix_loss"),
    "data": ("streaming", "streaming_shuffle_buffer", "max_train_samples", "attention_column", "attention_method",
             "attention_model_name_or_path", "attention_source_column", "attention_grid_size", "attention_online",
             "attention_refresh_epochs", "attention_warmup_epochs", "attention_placebo"),
    "attg": ("attg_guidance", "attg_temperature", "attg_temperature_end", "attg_temperature_schedule", "attg_quantile"),
    "training": ("seed", "data_seed", "learning_rate", "max_steps", "warmup_steps", "weight_decay", "adam_beta1",
                 "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "lr_scheduler_kwargs", "optim",
                 "optim_args", "bf16", "fp16", "dataloader_drop_last"),
}


def run_fingerprint(model_args, data_args, attg_args, training_args) -> dict:
    """`{flag: value}` of the arguments that define the run (`FINGERPRINT_FIELDS`), JSON-able: the data source as
    `data.source.data_source` records it (local paths absolute), the effective batch, and `num_train_epochs` only
    when `max_steps` does not override it."""
    from ..data.arguments import SYNTHETIC_FLAGS
    from ..data.source import data_source

    def plain(value):
        value = getattr(value, "value", value)  # enums (lr_scheduler_type, optim) as their strings
        return value if isinstance(value, (bool, int, float, str, type(None), list, dict)) else str(value)

    groups = {"model": model_args, "data": data_args, "attg": attg_args, "training": training_args}
    fingerprint = {name: plain(getattr(groups[group], name, None))
                   for group, names in FINGERPRINT_FIELDS.items() for name in names}
    model = model_args.model_name_or_path
    fingerprint["model_name_or_path"] = os.path.abspath(model) if model and os.path.isdir(model) else model
    recorded = data_source(data_args)
    synthetic = recorded.pop("synthetic") or {}
    recorded.pop("version")
    fingerprint.update(recorded)
    fingerprint.update({flag: synthetic.get(name) for flag, name in SYNTHETIC_FLAGS.items()})
    if training_args.max_steps is None or training_args.max_steps <= 0:
        fingerprint["num_train_epochs"] = training_args.num_train_epochs
    fingerprint["effective_batch_size"] = effective_batch_size(training_args)
    if getattr(data_args, "streaming", False):
        # datasets orders a stream read inside a loader worker differently: a resume with another worker count (or
        # process count, which splits the stream) would skip rows of another order, some replayed, some never seen
        fingerprint["dataloader_num_workers"] = training_args.dataloader_num_workers
        fingerprint["world_size"] = training_args.world_size
    return fingerprint


# MAE's recipe, applied where the user did not set the TrainingArguments field explicitly (with the data loader's
# workers, which depend on the machine: `dataloader_workers`).
MAE_TRAINING_DEFAULTS = {
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,  # a float < 1 is a share of the steps: MAE warms up 40 of 800 epochs
    "remove_unused_columns": False,  # the transform needs the raw image column
    "prediction_loss_only": True,  # evaluation reports the loss; gathering reconstructions would cost memory
    "logging_strategy": "steps",
    "report_to": ["tensorboard"],
}


def dataloader_workers() -> int:
    """Half the machine's cores (up to 8), none on a machine of 2 cores or fewer; read when the defaults are applied,
    not when this module is imported.

    Decoding and cropping run in worker processes, overlapped with the training step, where a core is free for
    them. On 2 cores there is none: the worker takes its CPU from the 2 training threads, and since a batch's rows
    are read through Arrow at once and its maps cut in one call (data/rows.py, crop_attention_maps) the main
    process loads a batch in a few ms. Measured with benchmarks/pretrain_throughput.py on the 2-core machine
    (docs/RESULTS.md, Benchmarks): 1 worker 575-590 images/s, no worker 655-722 (demo model, batch 128).
    """
    cores = os.cpu_count() or 2
    return 0 if cores <= 2 else min(8, cores // 2)


# the run's argument groups, in the order parse_arguments returns them
ARGUMENT_TYPES = (ModelArguments, DataArguments, AttGArguments, TrainingArguments)



def parse_arguments(argv: list[str] | None = None):
    """Parse CLI flags or a single JSON file into the four dataclasses, with MAE's recipe where not given.

    With no argument at all, the demo arguments are used.
    """
    from ..cli import parse_cli_with_explicit, parse_dict

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv:
        groups, explicit = parse_cli_with_explicit(ARGUMENT_TYPES, argv)
    else:
        groups, explicit = parse_dict(ARGUMENT_TYPES, DEMO_ARGUMENTS, "the demo arguments"), set(DEMO_ARGUMENTS)
    model_args, data_args, attg_args, training_args = groups
    apply_mae_defaults(training_args, attg_args, explicit)
    return model_args, data_args, attg_args, training_args


def effective_batch_size(training_args: TrainingArguments) -> int:
    return (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            * max(training_args.world_size, 1))


def apply_mae_defaults(training_args: TrainingArguments, attg_args: AttGArguments, explicit: set[str]) -> None:
    """MAE's optimiser recipe where the user did not choose, and lr = base_lr * effective batch / 256."""
    machine = {"dataloader_num_workers": dataloader_workers(),
               # pinning needs an accelerator; without one it only warns once per epoch
               "dataloader_pin_memory": torch.cuda.is_available()}
    for key, value in {**MAE_TRAINING_DEFAULTS, **machine}.items():
        if key not in explicit:
            setattr(training_args, key, value)
    if "learning_rate" not in explicit:
        training_args.learning_rate = attg_args.base_learning_rate * effective_batch_size(training_args) / 256
