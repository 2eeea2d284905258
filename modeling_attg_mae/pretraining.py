"""Pre-training wiring behind `run_pretrain.py`: arguments, model, data, Trainer, pictures, export.

The HF `Trainer` owns distribution (Accelerate), mixed precision, gradient accumulation, checkpoints, resume and
logging; this module adds only what AttG-MAE needs on top: MAE's optimiser defaults, the temperature schedule,
attention maps in the batch, the object-share metric, reconstruction pictures and the Hub-ready export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers import ViTImageProcessorPil as ViTImageProcessor  # the same saved config, no torchvision needed

from .checkpointing import (
    RESUME_LATEST,
    WEIGHTS_FILE,
    checkpoint_belongs_to,
    load_checkpoint_weights,
    resolve_resume_checkpoint,
)
from .configuration_attg_mae import GUIDANCE_MODES, AttGViTMAEConfig, validate_attg_config
from .data.source import synthetic_kwargs_of, write_data_source
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .modeling_attg_mae import (
    AttGViTMAEForPreTraining,
    normalize_attention_map,
    patch_grid,
    resample_attention_map,
    save_for_inference_and_pretraining,
)
from .temperature import AttGTemperatureCallback

logger = logging.getLogger(__name__)


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
        "help": "Encoder size when starting from scratch: demo (32 px, CPU), small (ViT-S/16), base, large, huge "
                "(the facebook/vit-mae-* configurations)."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "Comma-separated config overrides, e.g. 'hidden_size=256,num_hidden_layers=4'."})
    mask_ratio: float = field(default=0.75, metadata={"help": "Share of patches removed from the encoder input."})
    norm_pix_loss: bool = field(default=True, metadata={"help": "Per-patch normalised reconstruction target."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache for models and datasets from the Hub."})


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={
        "help": "Hub dataset name. Default (with no --train_dir either): the embedded synthetic dataset."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_dir: str | None = field(default=None, metadata={"help": "Local image folder for training."})
    validation_dir: str | None = field(default=None, metadata={"help": "Local image folder for validation."})
    image_column_name: str = field(default="image", metadata={"help": "Column holding the images."})
    train_split: str = field(default="train", metadata={"help": "Split to pre-train on."})
    validation_split: str | None = field(default="validation", metadata={
        "help": "Split for the evaluation loss and the pictures (empty: none)."})
    label_column_name: str = field(default="label", metadata={
        "help": "Column of integer class ids, for --run_knn and --knn_monitor (pre-training itself uses no label)."})
    eval_splits: list[str] | None = field(default=None, metadata={
        "help": "Splits --run_knn and --knn_monitor report, each separately; default: every split but the "
                "training one."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: int | None = field(default=512, metadata={"help": "Truncate the validation set."})
    attention_column: str = field(default="attention_map", metadata={
        "help": "Column with precomputed maps; computed with --attention_method when the dataset lacks it."})
    attention_method: str = field(default="spectral_residual", metadata={
        "help": "Object discovery when maps must be computed: dino | tokencut | gradcam | spectral_residual | "
                "column. The paper's best is tokencut on facebook/dino-vits16; spectral_residual needs no weights."})
    attention_model_name_or_path: str | None = field(default=None, metadata={
        "help": "Detector checkpoint for dino / tokencut / gradcam (e.g. facebook/dino-vits16, microsoft/resnet-50)."})
    attention_source_column: str | None = field(default=None, metadata={
        "help": "For --attention_method column: the mask column to use (the synthetic data has object_mask)."})
    attention_batch_size: int = field(default=64, metadata={"help": "Batch size of the map computation."})
    attention_num_proc: int | None = field(default=None, metadata={
        "help": "Processes for the map computation (one per GPU)."})
    attention_grid_size: int = field(default=28, metadata={
        "help": "Side of the stored map grid, covering the whole image; crops are cut from it during training."})
    synthetic_num_train: int = field(default=4000, metadata={"help": "Synthetic data: training images."})
    synthetic_num_validation: int = field(default=1000, metadata={"help": "Synthetic data: images per val split."})
    synthetic_image_size: int = field(default=64, metadata={"help": "Synthetic data: image side in pixels."})
    synthetic_seed: int = field(default=0, metadata={"help": "Synthetic data: generator seed."})
    synthetic_object_color: Literal["per_class", "random"] = field(default="per_class", metadata={
        "help": "Synthetic data: per_class (the hue also tells the class) or random (the class is in the shape "
                "alone)."})

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples", "attention_num_proc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 (or left unset), got {value}")
        for name in ("attention_batch_size", "attention_grid_size", "synthetic_num_train",
                     "synthetic_num_validation", "synthetic_image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class AttGArguments:
    attg_guidance: str = field(default="attg", metadata={"help": f"One of {GUIDANCE_MODES} (paper Table 10)."})
    attg_temperature: float = field(default=0.75, metadata={"help": "tau at the start (Eq. 1)."})
    attg_temperature_end: float = field(default=1.0, metadata={
        "help": "tau at the end of the cosine schedule (not given by the paper; 1.0 is our default)."})
    attg_temperature_schedule: Literal["cosine", "constant"] = field(default="cosine", metadata={
        "help": "Half-cycle cosine from start to end, or constant."})
    attg_quantile: float = field(default=0.1, metadata={"help": "Quantile for foreground_only / background_only."})
    base_learning_rate: float = field(default=1.5e-4, metadata={
        "help": "lr = base_learning_rate * effective batch / 256, used when --learning_rate is not given."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Allow writing into a non-empty output_dir (otherwise refused, to protect earlier runs)."})
    num_pictures: int = field(default=8, metadata={
        "help": "Validation images drawn as image | map | weights | reconstruction at each evaluation."})
    run_knn: bool = field(default=False, metadata={
        "help": "After training, run the k-NN evaluation on the validation splits and add it to the model card."})
    maps_for_vanilla_mae: bool = field(default=False, metadata={
        "help": "With --attg_guidance none, still load (or compute) the attention maps: the loss ignores them, but "
                "object_loss_share is logged (the share of MAE's unweighted loss on object patches), so a MAE run "
                "can be compared with an AttG run patch for patch."})
    knn_monitor: bool = field(default=False, metadata={
        "help": "Online k-NN during training (DINO's weighted vote, CLS): logged as eval/knn_top1_<split> to "
                "TensorBoard and trainer_state.json. Needs a 'label' column."})
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

# MAE's recipe, applied where the user did not set the TrainingArguments field explicitly.
MAE_TRAINING_DEFAULTS = {
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,  # a float < 1 is a share of the steps: MAE warms up 40 of 800 epochs
    "remove_unused_columns": False,  # the transform needs the raw image column
    "prediction_loss_only": True,  # evaluation reports the loss; gathering reconstructions would cost memory
    # decode, crop and resample in worker processes (one torch thread each), overlapped with the training step;
    # in the main process, many tiny tensor ops on a busy 2-thread pool cost ~30x more
    "dataloader_num_workers": max(1, min(8, (os.cpu_count() or 2) // 2)),
    "logging_strategy": "steps",
    "report_to": ["tensorboard"],
}


def parse_arguments(argv: list[str] | None = None):
    """Parse CLI flags or a single JSON file; return the four dataclasses and the set of explicit keys.

    With no argument at all, the demo arguments are used.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, AttGArguments, TrainingArguments))
    if not argv:
        values = dict(DEMO_ARGUMENTS)
    elif len(argv) == 1 and argv[0].endswith(".json"):
        path = Path(argv[0])
        if not path.is_file():
            raise ValueError(f"arguments file {path} does not exist")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"arguments file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                             f"column {error.colno}") from None
    else:
        values = None
    if values is not None:
        explicit = set(values)
        unknown = explicit - {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown argument(s) {sorted(unknown)}")
        model_args, data_args, attg_args, training_args = parser.parse_dict(values)
    else:
        explicit = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
        model_args, data_args, attg_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    apply_mae_defaults(training_args, attg_args, explicit)
    if "dataloader_pin_memory" not in explicit and not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator; avoids a warning per epoch
    return model_args, data_args, attg_args, training_args


def effective_batch_size(training_args: TrainingArguments) -> int:
    return (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
            * max(training_args.world_size, 1))


def apply_mae_defaults(training_args: TrainingArguments, attg_args: AttGArguments, explicit: set[str]) -> None:
    """MAE's optimiser recipe where the user did not choose, and lr = base_lr * effective batch / 256."""
    for key, value in MAE_TRAINING_DEFAULTS.items():
        if key not in explicit:
            setattr(training_args, key, value)
    if "learning_rate" not in explicit:
        training_args.learning_rate = attg_args.base_learning_rate * effective_batch_size(training_args) / 256


def build_config(model_args: ModelArguments, attg_args: AttGArguments) -> AttGViTMAEConfig:
    """The run's config, before any weight is loaded: a preset or a checkpoint's config (which must be a ViTMAE),
    our AttG knobs, then `--config_overrides` (a key the config does not have is an error, not a silent extra)."""
    attg = dict(
        attg_guidance=attg_args.attg_guidance, attg_temperature=attg_args.attg_temperature,
        attg_temperature_end=attg_args.attg_temperature_end,
        attg_temperature_schedule=attg_args.attg_temperature_schedule, attg_quantile=attg_args.attg_quantile,
        mask_ratio=model_args.mask_ratio, norm_pix_loss=model_args.norm_pix_loss,
    )
    if model_args.model_name_or_path:
        check_vit_mae_checkpoint(model_args.model_name_or_path, model_args.cache_dir)
        config = AttGViTMAEConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                                  attg_pretraining_mask_ratio=None, **attg)
    else:
        config = AttGViTMAEConfig(**MODEL_PRESETS[model_args.model_preset], **attg)
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as error:
            known = ", ".join(sorted(k for k in config.to_dict() if not k.startswith("_")))
            raise ValueError(f"--config_overrides {model_args.config_overrides!r}: {error}; the config's keys are: "
                             f"{known}") from None
        validate_attg_config(config)  # an override may have set an AttG field after construction
    return config


def check_vit_mae_checkpoint(model_name_or_path: str, cache_dir: str | None = None) -> None:
    """Refuse a checkpoint that is not a ViTMAE (a BERT or a ResNet would otherwise start a random ViTMAE whose
    card names the wrong base model), or that cannot be found, before any data or model work."""
    from .model_source import load_config

    model_type = load_config(model_name_or_path, "--model_name_or_path", cache_dir=cache_dir).model_type
    if model_type != "vit_mae":
        raise ValueError(f"--model_name_or_path {model_name_or_path!r} is a {model_type!r} checkpoint; pre-training "
                         "continues only from a ViTMAE (vit_mae) checkpoint, e.g. facebook/vit-mae-base or one of "
                         "ours. Leave it empty to start from scratch with --model_preset")


def build_model(model_args: ModelArguments, attg_args: AttGArguments,
                config: AttGViTMAEConfig | None = None) -> AttGViTMAEForPreTraining:
    """From scratch (a preset + overrides) or from a checkpoint (ours or stock ViTMAE), with our AttG knobs."""
    config = build_config(model_args, attg_args) if config is None else config
    if model_args.model_name_or_path:
        return AttGViTMAEForPreTraining.from_pretrained(model_args.model_name_or_path, config=config,
                                                        cache_dir=model_args.cache_dir)
    return AttGViTMAEForPreTraining(config)


_WRITE_PROBE = ".attg-mae-write-check-"


def check_output_dir(training_args: TrainingArguments, attg_args: AttGArguments) -> None:
    """Refuse to write into a non-empty output_dir unless asked to, or unless resuming a checkpoint of the run
    it holds; fail now, not after data and maps, when it cannot be written."""
    path = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    # another process of this run may be probing the folder right now: its probe file is not an earlier run
    used = path.is_dir() and any(not p.name.startswith(_WRITE_PROBE) for p in path.iterdir())
    if used and not attg_args.overwrite_output_dir:
        if not resume:
            raise ValueError(
                f"output_dir {path} exists and is not empty: pass --overwrite_output_dir to write into it, "
                "--resume_from_checkpoint to continue a run, or choose another --output_dir"
            )
        if str(resume).lower() not in RESUME_LATEST and not checkpoint_belongs_to(resume, path):
            raise ValueError(
                f"--resume_from_checkpoint {resume} is not a checkpoint of the run in output_dir {path}, which is "
                "not empty: continuing there would overwrite that run's model, card and state. Choose an empty "
                "--output_dir (or the checkpoint's own run folder), or pass --overwrite_output_dir to replace it"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=_WRITE_PROBE):
            pass
    except OSError as error:
        raise ValueError(f"output_dir {path} cannot be written ({error})") from None


def check_run_arguments(model_args: ModelArguments, data_args: DataArguments, attg_args: AttGArguments,
                        training_args: TrainingArguments) -> AttGViTMAEConfig:
    """Every check that needs no data and no weights, in one place, before any data or model work; returns the
    run's config. (Data-dependent checks follow as soon as the dataset is opened, before the maps.)"""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(training_args, name)}")
    check_output_dir(training_args, attg_args)
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint,
                                                                     training_args.output_dir)
    if attg_args.run_knn and data_args.train_dir and not data_args.validation_dir:
        raise ValueError("--run_knn evaluates on the splits besides the training one, but --train_dir was given "
                         "without --validation_dir; add one, or drop --run_knn and run run_knn.py later")
    config = build_config(model_args, attg_args)
    if attg_args.attg_guidance != "none" or attg_args.maps_for_vanilla_mae:
        check_attention_arguments(data_args)
    return config


class AttGTrainer(Trainer):
    """Trainer that also logs tau and the share of the (weighted) loss that falls on object patches, and
    evaluates with its own (non-augmenting) collator."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._object_share = []
        self._warned_constant_maps = False
        self.eval_data_collator = eval_data_collator  # evaluation sees center crops, not training augmentation
        self.can_return_loss = True  # the reconstruction loss needs no `labels`: report eval_loss anyway

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # the stock method loads the raw file without key conversion and drops every layer weight (see
        # checkpointing.py); FSDP / DeepSpeed / sharded checkpoints keep their own loaders
        target = self.model if model is None else model
        if self._loads_plain_checkpoint(resume_from_checkpoint, target):
            load_checkpoint_weights(target, resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        best = self.state.best_model_checkpoint
        if self._loads_plain_checkpoint(best, self.model):
            logger.info("loading the best model from %s (score: %s)", best, self.state.best_metric)
            load_checkpoint_weights(self.model, best)
        else:
            super()._load_best_model()

    def _loads_plain_checkpoint(self, checkpoint, model) -> bool:
        from transformers import PreTrainedModel

        return (checkpoint is not None and isinstance(model, PreTrainedModel) and not self.is_fsdp_enabled
                and not self.is_deepspeed_enabled and (Path(checkpoint) / WEIGHTS_FILE).is_file())

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        guidance = getattr(self.model.config, "attg_guidance", "none")  # a stock ViTMAE trains here too
        if model.training and "noise" not in inputs and guidance != "input_masking":
            inputs = {**inputs, "noise": self._masking_noise(inputs["pixel_values"])}
        if model.training and inputs.get("attention_map") is not None and guidance != "none":
            self._warn_constant_maps(inputs["attention_map"])
        outputs = model(**inputs)
        loss = outputs.loss
        if model.training and inputs.get("attention_map") is not None and hasattr(outputs, "patch_weights"):
            self._object_share.append(object_loss_share(outputs, inputs["attention_map"]))
        return (loss, outputs) if return_outputs else loss

    def _warn_constant_maps(self, attention_map: torch.Tensor) -> None:
        """A constant map gives every patch weight 1: that image trains as a plain MAE. Say so once per run, since
        it usually means a broken map source (a blank mask column, a detector that saw nothing)."""
        flat = attention_map.detach().flatten(1)
        constant = int((flat.amax(1) == flat.amin(1)).sum())
        if constant and not self._warned_constant_maps:
            self._warned_constant_maps = True
            logger.warning(
                "%d of %d attention maps in a training batch (step %d) are constant: those images get weight 1 on "
                "every patch and train as a plain MAE. Check the map source (--attention_method / the attention "
                "column); maps that are constant for every image make this run a vanilla MAE",
                constant, flat.shape[0], self.state.global_step)

    def _masking_noise(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """MAE's random masking noise from a (seed, step, micro-batch, process) stream, for exact resumes."""
        step = self.state.global_step
        micro = self._micro_batch + 1 if getattr(self, "_noise_step", None) == step else 0
        self._noise_step, self._micro_batch = step, micro
        mixed = (self.args.seed * 0x9E3779B1 + step * 0x85EBCA77 + micro * 0xC2B2AE3D
                 + self.args.process_index * 0x27D4EB2F)
        generator = torch.Generator().manual_seed(mixed % (2**63))
        grid_h, grid_w = patch_grid(self.model.config, pixel_values)
        return torch.rand(pixel_values.shape[0], grid_h * grid_w, generator=generator).to(pixel_values.device)

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log: add what AttG adds, before history and TensorBoard see the dict
            if hasattr(self.model, "attg_temperature"):
                logs["attg_temperature"] = round(float(self.model.attg_temperature), 6)
            if self._object_share:
                logs["object_loss_share"] = round(float(torch.stack(self._object_share).mean()), 4)
                self._object_share.clear()
        super().log(logs, *args, **kwargs)


@torch.no_grad()
def object_loss_share(outputs, attention_map: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Share of the weighted masked loss on patches whose normalised attention is >= threshold (the object)."""
    grid = outputs.mask.shape[1]
    side = int(math.isqrt(grid))
    attention = normalize_attention_map(resample_attention_map(attention_map.detach(), (side, side)))
    contribution = outputs.patch_loss.detach() * outputs.mask * outputs.patch_weights  # (B, N)
    total = contribution.sum()
    return (contribution * (attention >= threshold)).sum() / total.clamp_min(1e-12)


class AugmentationEpochCallback(TrainerCallback):
    """Tells the seeded collator which epoch starts, so that each epoch draws new crops."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is k at the start of epoch k and a fraction when resuming inside an epoch
        self.collator.epoch = int(math.floor((state.epoch or 0.0) + 1e-6))


class ReconstructionPictureCallback(TrainerCallback):
    """At each evaluation: a PNG grid image | map | weights | reconstruction, saved and sent to TensorBoard."""

    def __init__(self, examples: dict, image_mean, image_std):
        self.examples = examples  # {"pixel_values": (K, 3, H, W), "attention_map": (K, h, w)}
        self.mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std).view(1, 3, 1, 1)
        self.trainer = None  # set by run(): callbacks are not handed the trainer, whose TensorBoard writer we use

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        from .visualize import save_guidance_grid

        path = Path(args.output_dir) / "pictures" / f"step-{state.global_step:07d}.png"
        images, reconstructions, maps, weights = reconstruct(model, self.examples, self.mean, self.std)
        # the weights the loss actually used (any guidance mode), not a re-derivation from the map
        save_guidance_grid(images, maps, path, reconstructions=reconstructions, weights=weights)
        writer = _tensorboard_writer(self.trainer) if self.trainer is not None else None
        if writer is not None:
            from PIL import Image
            import numpy as np

            picture = np.asarray(Image.open(path).convert("RGB"))
            writer.add_image("reconstructions", picture, state.global_step, dataformats="HWC")
            writer.flush()


def _tensorboard_writer(trainer):
    for callback in trainer.callback_handler.callbacks:
        writer = getattr(callback, "tb_writer", None)
        if writer is not None:
            return writer
    return None


@torch.no_grad()
def reconstruct(model, examples: dict, mean: torch.Tensor, std: torch.Tensor):
    """Images and MAE-style reconstructions (visible patches pasted back) in [0, 1], maps and patch weights."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pixels = examples["pixel_values"].to(device)
    attention = examples.get("attention_map")
    generator = torch.Generator().manual_seed(0)  # the same masks at every evaluation: pictures compare
    grid_h, grid_w = patch_grid(model.config, pixels)
    noise = torch.rand(pixels.shape[0], grid_h * grid_w, generator=generator).to(device)
    kwargs = {} if attention is None else {"attention_map": attention.to(device)}
    if model.config.attg_guidance == "input_masking":
        noise = None
    out = model(pixels, noise=noise, **kwargs)
    prediction = out.logits.float()
    patches = model.patchify(pixels.float())  # (B, N, p*p*C)
    if model.config.norm_pix_loss:  # undo the per-patch normalisation with the true patch statistics
        prediction = prediction * (patches.var(-1, keepdim=True) + 1e-6) ** 0.5 + patches.mean(-1, keepdim=True)
    mask = out.mask.unsqueeze(-1)
    pasted = patches * (1 - mask) + prediction * mask
    reconstruction = model.unpatchify(pasted, pixels.shape[2:]).cpu()
    mean, std = mean.to(reconstruction), std.to(reconstruction)
    images = (pixels.cpu() * std + mean).clamp(0, 1)
    reconstruction = (reconstruction * std + mean).clamp(0, 1)
    if was_training:
        model.train()
    maps = attention.float() if attention is not None else torch.zeros(pixels.shape[0], 1, 1)
    return images, reconstruction, maps, out.patch_weights.detach().float().cpu()


def load_source_dataset(data_args: DataArguments, model_args: ModelArguments):
    """The DatasetDict named by the arguments: a Hub dataset, an image folder, or the embedded synthetic data.

    The synthetic data is saved under the datasets cache, so that the map step's results are cached on disk too.
    """
    from .data.loading import load_image_dataset

    synthetic = data_args.dataset_name is None and data_args.train_dir is None
    cache_dir = model_args.cache_dir
    if synthetic and cache_dir is None:
        import datasets

        cache_dir = os.path.join(datasets.config.HF_DATASETS_CACHE, "attg_mae_synthetic")
    return load_image_dataset(
        dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name,
        train_dir=data_args.train_dir, validation_dir=data_args.validation_dir, cache_dir=cache_dir,
        synthetic_kwargs=synthetic_kwargs_of(data_args) if synthetic else None,
    )


def load_pretraining_data(data_args: DataArguments, model_args: ModelArguments, main_process_first,
                          with_maps: bool = True, run_knn: bool = False, dataset=None) -> dict:
    """{split: Dataset} for the train (and validation) split, with an `attention_map` column when `with_maps`
    (computed by the object-discovery step and cached when the dataset has none). `run_knn`: check that the
    k-NN evaluation (after training or online) has labelled splits to work on, before any map is computed."""
    from .data.images import undecoded_images
    from .data.loading import check_columns
    from .data.transforms import check_attention_map_column

    if dataset is None:
        with main_process_first(desc="dataset loading"):
            dataset = load_source_dataset(data_args, model_args)
    wanted = [data_args.train_split] + ([data_args.validation_split] if data_args.validation_split else [])
    for split in wanted:
        if split not in dataset:
            raise ValueError(f"split {split!r} not in the dataset; its splits are {list(dataset)}")
        check_columns(dataset[split], data_args.image_column_name)
    if run_knn:
        check_knn_splits(dataset, data_args)
    splits = {}
    for split in wanted:
        part = dataset[split]
        limit = data_args.max_train_samples if split == data_args.train_split else data_args.max_eval_samples
        if limit is not None and limit < len(part):
            part = part.select(range(limit))
        if with_maps:
            if data_args.attention_column not in part.column_names:
                part = compute_attention_maps(part, data_args, main_process_first, split)
            elif data_args.attention_column != "attention_map":
                part = part.rename_column(data_args.attention_column, "attention_map")
            check_attention_map_column(part, "attention_map", split)
        # decoded by our collator, which names the split, row and file of an image that cannot be read
        splits[split] = undecoded_images(part, data_args.image_column_name)
    return splits


def knn_eval_splits(dataset, data_args: DataArguments) -> list[str]:
    """The splits `--run_knn` and `--knn_monitor` report: `--eval_splits`, or every split but the training one."""
    return data_args.eval_splits or [split for split in dataset if split != data_args.train_split]


def check_knn_splits(dataset, data_args: DataArguments) -> None:
    """`--run_knn` / `--knn_monitor` need labelled splits besides the training one: say so before maps and
    training, not after."""
    splits = knn_eval_splits(dataset, data_args)
    if not splits:
        raise ValueError(f"--run_knn / --knn_monitor evaluate on the splits besides {data_args.train_split!r}, but "
                         f"the dataset has only {list(dataset)}; use a dataset with a validation split, or drop them")
    for split in [data_args.train_split, *splits]:
        if split not in dataset:
            raise ValueError(f"--eval_splits: split {split!r} not in the dataset; its splits are {list(dataset)}")
        if split == data_args.train_split and split in (data_args.eval_splits or []):
            raise ValueError(f"--eval_splits includes the training split {split!r}: the k-NN bank would contain "
                             "every query (100%); choose other splits")
        if data_args.label_column_name not in dataset[split].column_names:
            raise ValueError(f"--run_knn / --knn_monitor need a --label_column_name {data_args.label_column_name!r} "
                             f"column of class ids; split {split!r} has {dataset[split].column_names}. Pass "
                             "--label_column_name, or drop --run_knn / --knn_monitor")


def check_attention_arguments(data_args: DataArguments) -> None:
    """Fail before any data or model work when the object-discovery arguments cannot work."""
    from .object_discovery.map_step import AttentionMapStep

    AttentionMapStep(data_args.attention_method, data_args.attention_model_name_or_path,
                     image_column=_attention_input_column(data_args), grid_size=data_args.attention_grid_size,
                     model_flag="--attention_model_name_or_path")


def _attention_input_column(data_args: DataArguments) -> str:
    if data_args.attention_method == "column":
        if not data_args.attention_source_column:
            raise ValueError("--attention_method column needs --attention_source_column (e.g. object_mask)")
        return data_args.attention_source_column
    return data_args.image_column_name


def compute_attention_maps(part, data_args: DataArguments, main_process_first, split: str):
    from .object_discovery.map_step import add_attention_maps

    # the main process computes and caches the maps; the others then hit the cache
    with main_process_first(desc=f"attention maps ({split})"):
        return add_attention_maps(
            part, method=data_args.attention_method, model_name_or_path=data_args.attention_model_name_or_path,
            image_column=_attention_input_column(data_args), grid_size=data_args.attention_grid_size,
            batch_size=data_args.attention_batch_size, num_proc=data_args.attention_num_proc,
            desc=f"attention maps ({data_args.attention_method}, {split})",
        )


def run(model_args: ModelArguments, data_args: DataArguments, attg_args: AttGArguments,
        training_args: TrainingArguments) -> dict:
    """Pre-train, save a stock-loadable checkpoint with image processor and model card; return where things are."""
    from transformers import set_seed

    from .data import EvalTransform, PretrainCollator, PretrainTransform

    config = check_run_arguments(model_args, data_args, attg_args, training_args)
    needs_maps = attg_args.attg_guidance != "none" or attg_args.maps_for_vanilla_mae
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if model_args.model_name_or_path:
        try:
            processor = ViTImageProcessor.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir)
            mean, std = tuple(processor.image_mean), tuple(processor.image_std)
        except OSError:
            logger.warning("no image processor in %s: using ImageNet mean/std", model_args.model_name_or_path)

    with training_args.main_process_first(desc="dataset loading"):
        source = load_source_dataset(data_args, model_args)
    splits = load_pretraining_data(data_args, model_args, training_args.main_process_first, with_maps=needs_maps,
                                   run_knn=attg_args.run_knn or attg_args.knn_monitor, dataset=source)
    set_seed(training_args.seed)
    model = build_model(model_args, attg_args, config)
    train = splits[data_args.train_split]
    validation = splits.get(data_args.validation_split) if data_args.validation_split else None
    # augmentation and masking draw from (seed, epoch/step, row) streams, not from the global RNG: a resumed run
    # repeats the uninterrupted one exactly (the Trainer restores RNG states only after prefetching a batch)
    # (add_column concatenates an in-memory column: the image data is not rewritten, unlike a map)
    train = train.add_column("__index__", list(range(len(train))))
    collator = PretrainCollator(PretrainTransform(size, patch, mean=mean, std=std), data_args.image_column_name,
                                require_attention_map=needs_maps, seed=training_args.seed)
    eval_collator = PretrainCollator(EvalTransform(size, patch, mean=mean, std=std), data_args.image_column_name,
                                     require_attention_map=needs_maps)
    callbacks = [AttGTemperatureCallback(), AugmentationEpochCallback(collator)]
    pictures = None
    if validation is None:
        training_args.eval_strategy = "no"
    elif attg_args.num_pictures > 0:
        examples = eval_collator([validation[i] for i in range(min(attg_args.num_pictures, len(validation)))])
        pictures = ReconstructionPictureCallback(examples, mean, std)
        callbacks.append(pictures)
    monitor = None
    if attg_args.knn_monitor:
        monitor = build_knn_monitor(source, data_args, attg_args, training_args, size, mean, std, len(train))
        callbacks.append(monitor)
    trainer = AttGTrainer(model=model, args=training_args, train_dataset=train, eval_dataset=validation,
                          data_collator=collator, eval_data_collator=eval_collator, callbacks=callbacks)
    for callback in (pictures, monitor):
        if callback is not None:
            callback.trainer = trainer
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_state()
    output_dir = Path(training_args.output_dir)
    paths = {"checkpoint": str(output_dir), "logs": str(output_dir / "runs"),
             "pictures": str(output_dir / "pictures")}
    if trainer.is_world_process_zero():
        export_checkpoint(model, output_dir, size, mean, std)
        write_data_source(output_dir, data_args)  # run_knn.py without data flags evaluates on this data
        card = write_model_card(output_dir, model_args, data_args, attg_args, training_args, result)
        paths["model_card"] = str(card)
    if attg_args.run_knn:
        # every process loads the exported checkpoint: not before the main process has finished writing it
        trainer.accelerator.wait_for_everyone()
        payload = run_knn_on_checkpoint(output_dir, data_args, model_args, training_args)
        if payload is not None:
            paths["knn_results"] = payload.get("results_file", "")
            paths["knn_table"] = payload["table"]
    if training_args.push_to_hub and trainer.is_world_process_zero():
        from .hub import push_checkpoint_to_hub

        push_checkpoint_to_hub(output_dir, training_args.hub_model_id or output_dir.name,
                               private=bool(training_args.hub_private_repo))
    return paths


def build_knn_monitor(source, data_args: DataArguments, attg_args: AttGArguments, training_args: TrainingArguments,
                      image_size: int, mean, std, num_train: int):
    """The online k-NN monitor on a fixed seeded bank from the train split and every other split (seeded subsets),
    with the evaluation transform; once per epoch unless `--knn_monitor_steps` says otherwise."""
    from .evaluation.monitor import KNNMonitorCallback, monitor_subset
    from .evaluation.runner import eval_pixels_transform, num_classes_of

    train = source[data_args.train_split]
    bank = monitor_subset(train, attg_args.knn_monitor_bank_size, training_args.seed)
    queries = {split: monitor_subset(source[split], attg_args.knn_monitor_queries, training_args.seed)
               for split in knn_eval_splits(source, data_args)}
    batches = math.ceil(num_train / (training_args.per_device_train_batch_size * max(training_args.world_size, 1)))
    steps_per_epoch = max(batches // training_args.gradient_accumulation_steps, 1)
    label_column = data_args.label_column_name
    labels = torch.as_tensor(bank[label_column])
    return KNNMonitorCallback(
        bank, queries, eval_pixels_transform(image_size, mean, std), data_args.image_column_name, label_column,
        every_steps=attg_args.knn_monitor_steps or steps_per_epoch, k=min(attg_args.knn_monitor_k, len(bank)),
        batch_size=training_args.per_device_eval_batch_size,
        num_classes=num_classes_of(train, label_column, labels), image_size=image_size)


def export_checkpoint(model, output_dir: Path, size: int, mean, std) -> None:
    """Safetensors weights (mask_ratio 0 for stock pipelines, see `save_for_inference_and_pretraining`) and an
    image processor, so that `pipeline("image-feature-extraction", model=output_dir)` works out of the box."""
    save_for_inference_and_pretraining(model, output_dir)
    ViTImageProcessor(size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std),
                      resample=3).save_pretrained(output_dir)  # 3 = bicubic
    from .export import export_encoder  # + <output_dir>/encoder: a ViTModel with every token in order (the run's own)
    export_encoder(output_dir, overwrite=True)


def write_model_card(output_dir, model_args, data_args, attg_args, training_args, train_result) -> Path:
    from .hub import render_model_card

    dataset = data_args.dataset_name or (data_args.train_dir and "imagefolder") or "attg-mae synthetic"
    render_model_card(
        output_dir,
        base_model=model_args.model_name_or_path,
        datasets=[data_args.dataset_name] if data_args.dataset_name else [],
        object_discovery={"method": data_args.attention_method,
                          "model": data_args.attention_model_name_or_path,
                          "grid_size": data_args.attention_grid_size},
        temperature={"start": attg_args.attg_temperature, "end": attg_args.attg_temperature_end,
                     "schedule": attg_args.attg_temperature_schedule, "guidance": attg_args.attg_guidance},
        training_hparams={
            "dataset": dataset, "learning_rate": training_args.learning_rate,
            "base_learning_rate": attg_args.base_learning_rate,
            "effective_batch_size": effective_batch_size(training_args),
            "num_processes": training_args.world_size,
            "epochs": training_args.num_train_epochs, "steps": train_result.global_step,
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "betas": [training_args.adam_beta1, training_args.adam_beta2],
            "lr_scheduler": str(training_args.lr_scheduler_type), "mask_ratio": model_args.mask_ratio,
            "norm_pix_loss": model_args.norm_pix_loss, "seed": training_args.seed,
            "final_train_loss": round(float(train_result.training_loss), 5),
        },
    )
    return Path(output_dir) / "README.md"


def run_knn_on_checkpoint(output_dir: Path, data_args: DataArguments, model_args: ModelArguments,
                          training_args: TrainingArguments) -> dict | None:
    """k-NN (DINO's weighted vote, k = 10 20 100 200 capped by the bank) of the saved encoder on every split
    but the training one; the results go into the model card. Runs on every process (features are sharded)."""
    from .evaluation.arguments import EvalDataArguments, EvalModelArguments, EvalRunArguments, KNNArguments
    from .evaluation.pipelines import format_results_table, run_knn

    dataset = load_source_dataset(data_args, model_args)
    bank_size = len(dataset[data_args.train_split])
    ks = [k for k in (10, 20, 100, 200) if k <= bank_size] or [bank_size]
    payload = run_knn(
        EvalModelArguments(model_name_or_path=str(output_dir), pooling="cls"),
        EvalDataArguments(dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name,
                          train_dir=data_args.train_dir, validation_dir=data_args.validation_dir,
                          train_split=data_args.train_split, image_column_name=data_args.image_column_name,
                          label_column_name=data_args.label_column_name, eval_splits=data_args.eval_splits,
                          **_synthetic_eval_flags(data_args)),
        EvalRunArguments(output_dir=str(output_dir), feature_cache_dir=str(output_dir / "feature_cache"),
                         batch_size=training_args.per_device_eval_batch_size),
        KNNArguments(ks=ks),
        dataset=dataset,
    )
    if not training_args.process_index == 0:
        return None
    payload["table"] = "\n" + format_results_table(payload)
    return payload


def _synthetic_eval_flags(data_args: DataArguments) -> dict:
    """The run's synthetic settings as the evaluation's flags (none for another data source)."""
    from .data.source import SYNTHETIC_FLAGS

    if synthetic_kwargs_of(data_args) is None:
        return {}
    return {flag: getattr(data_args, flag) for flag in SYNTHETIC_FLAGS}
