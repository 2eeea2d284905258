"""`run_fine_tune`: MAE's fine-tuning recipe on the HF Trainer, full or low-shot, over several seeds.

Output layout: `<output_dir>/seed-<s>/` holds one seed's Trainer run (checkpoints, TensorBoard `runs/`, the final
fine-tuned model and its image processor, `seed_results.json`); `<output_dir>/fine_tune_results.json` holds every
row. Rows (schema version 1, the evaluation's row format; accuracies in percent):

    {"method": "fine_tune", "split": "validation", "k": null, "shots": null, "train_fraction": 0.01, "seed": 0,
     "top1": 61.2, "top5": 95.0, "num_queries": 1000, "num_train_images": 40}
    {"method": "fine_tune", "split": "validation", ..., "seed": null, "top1": <mean>, "top1_std": <sample std>,
     "top5": ..., "top5_std": ..., "num_seeds": 3}

The payload's `recipe` holds what the seeds trained with, as resolved: `learning_rate` (the peak, the head's),
`warmup_steps`, `optim`, `lr_scheduler_type`, and `base_learning_rate` / `warmup_epochs` (null where
`--learning_rate` / `--warmup_steps` decided instead), with the other recipe knobs.
`train_fraction` is 1.0 for a full fine-tune and null with `--shots_per_class` (then `shots` is set). Only the
summary rows (`seed: null`) go into the starting checkpoint's model card, one metric per fraction / shots.
Resume (`--resume_from_checkpoint last`): finished seeds are read back from their `seed_results.json`, the
interrupted one continues from its newest complete checkpoint, later ones start. Only a seed's own run is reused:
`seed_arguments.json` (written when the seed starts, and copied into `seed_results.json`) holds what determines its
result (`seed_arguments`: the start checkpoint's weights, the data, the subset, the recipe and the Trainer's
optimisation flags); a seed folder whose arguments differ from this run's is refused, naming the differences, not
reused nor retrained over (it is the user's earlier result).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from ..checkpointing import RESUME_LATEST, FullWeightsResumeMixin, resolve_resume_checkpoint
from ..output_folders import CHECKPOINT_FOLDER
from ..seeding import seeded_generator
from .arguments import recipe_defaults
from .augment import FineTuneTrainTransform, RandAugment, fine_tune_eval_transform, fine_tune_image_processor
from .drop_path import add_drop_path
from .layer_decay import layer_decay_param_groups
from .low_shot import check_shots, low_shot_indices
from .mixup import Mixup, soft_target_cross_entropy
from .modeling import AttGViTForImageClassification, resize_position_embeddings

logger = logging.getLogger(__name__)
RESULTS_FILE = "fine_tune_results.json"
SEED_RESULTS_FILE = "seed_results.json"
SEED_ARGUMENTS_FILE = "seed_arguments.json"
# the TrainingArguments that change what a seed trains (the rest: where and how often it logs and saves, workers)
_RESULT_TRAINING_FLAGS = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                          "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "optim",
                          "optim_args", "lr_scheduler_type", "lr_scheduler_kwargs", "bf16", "fp16", "tf32",
                          "torch_compile", "data_seed", "dataloader_drop_last", "full_determinism",
                          "gradient_checkpointing", "neftune_noise_alpha")
# checkpoints whose weights sit in ViTForImageClassification's layout (DINOv2's layer scale, for one, does not; a
# distilled DeiT, model type "deit", has a distillation token and position embeddings for it, which ViT lacks)
FINE_TUNE_MODEL_TYPES = ("vit_mae", "vit", "vit_msn")
_VIT_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps",
                    "image_size", "patch_size", "num_channels", "qkv_bias")


def _square(value, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"non-square {what} {value} is not supported")
        value = value[0]
    return int(value)


def classifier_config(model_args, num_labels: int, id2label: dict[int, str] | None = None):
    """`(config, checkpoint_image_size)`: the classifier's `ViTConfig` from the starting checkpoint's config, at the
    fine-tuning image size (the checkpoint's or `--image_size`), and the checkpoint's own size. Checked before any
    weight is loaded: a ViT model type, and an image size divisible by the patch size."""
    from transformers import ViTConfig

    from ..model_source import load_config

    source = load_config(model_args.model_name_or_path, "--model_name_or_path", cache_dir=model_args.cache_dir,
                         revision=model_args.model_revision)
    if source.model_type == "deit":
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path!r} is a distilled DeiT (model type "
                         "'deit': a distillation token next to CLS, and position embeddings for both), which "
                         "fine-tuning does not support: its classifier is a ViT with one CLS token. Supported: "
                         f"{', '.join(FINE_TUNE_MODEL_TYPES)}, among them DeiT without distillation "
                         "(facebook/deit-*-patch16-224, model type 'vit')")
    if source.model_type not in FINE_TUNE_MODEL_TYPES:
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path!r} is a {source.model_type!r} checkpoint; "
                         f"fine-tuning starts from a ViT whose weights ViTForImageClassification holds: "
                         f"{', '.join(FINE_TUNE_MODEL_TYPES)}")
    values = {key: getattr(source, key) for key in _VIT_CONFIG_KEYS if hasattr(source, key)}
    patch = _square(values["patch_size"], "patch_size")
    trained_size = _square(values["image_size"], "image_size")
    size = model_args.image_size or trained_size
    if size % patch:
        flag = "--image_size" if model_args.image_size else "the checkpoint's image_size"
        raise ValueError(f"{flag} {size} is not divisible by the patch size {patch}; pick a multiple of {patch}")
    labels = id2label or {i: str(i) for i in range(num_labels)}
    # the saved config states the size the model runs at, so stock loaders and pipelines need no
    # interpolate_pos_encoding: build_classifier resizes the position embeddings once
    config = ViTConfig(**{**values, "image_size": size, "patch_size": patch}, num_labels=num_labels,
                       id2label=labels, label2id={v: k for k, v in labels.items()})
    config.attg_global_pool = bool(model_args.global_pool)
    return config, trained_size


def build_classifier(model_args, config, drop_path: float, checkpoint_image_size: int | None = None
                     ) -> AttGViTForImageClassification:
    """The starting checkpoint's encoder in an `AttGViTForImageClassification` with a fresh head (and `fc_norm`), drop
    path added; any other missing weight is an error (the checkpoint is not laid out as a ViT). When
    `config.image_size` differs from `checkpoint_image_size`, the checkpoint's position embeddings are resized to
    the new patch grid once, here (`resize_position_embeddings`, as MAE's `interpolate_pos_embed`)."""
    from transformers.utils import logging as transformers_logging

    size = config.image_size
    checkpoint_image_size = checkpoint_image_size or size
    if checkpoint_image_size != size:  # load on the checkpoint's grid, then move the weights to the new one
        config = copy.deepcopy(config)
        config.image_size = checkpoint_image_size

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # the decoder of a pre-training checkpoint is unused, by design
    try:
        model, info = AttGViTForImageClassification.from_pretrained(
            model_args.model_name_or_path, config=config, cache_dir=model_args.cache_dir,
            revision=model_args.model_revision, output_loading_info=True)
    finally:
        transformers_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not k.startswith(("classifier.", "fc_norm."))]
    if missing or info.get("mismatched_keys"):
        raise ValueError(f"--model_name_or_path {model_args.model_name_or_path!r}: its weights do not fill a ViT "
                         f"classifier (missing {sorted(missing)[:5]}, mismatched {list(info.get('mismatched_keys') or [])[:5]})")
    if checkpoint_image_size != size:
        state = model.state_dict()
        key = "vit.embeddings.position_embeddings"
        state[key] = resize_position_embeddings(state[key], size // config.patch_size)
        config.image_size = size
        with torch.random.fork_rng(devices=[]):  # the head's init below draws what it draws at the checkpoint's size
            model = AttGViTForImageClassification(config)
        model.load_state_dict(state)
    # MAE's head init: trunc_normal(std 2e-5) weights and zero bias, so the first logits are near zero
    torch.nn.init.trunc_normal_(model.classifier.weight, std=2e-5)
    torch.nn.init.zeros_(model.classifier.bias)
    add_drop_path(model, drop_path)
    return model


class _Images(Dataset):
    """`{"pixel_values", "labels"}` of the rows `indices` of a split. With a `FineTuneTrainTransform`, row r of
    epoch e draws from a generator seeded with (seed, e, r): the same images for the same seed, on resume too."""

    def __init__(self, split_dataset, indices, image_column: str, label_column: str, transform, train: bool,
                 seed: int = 0, split: str | None = None):
        from ..data.images import undecoded_images

        self.data = undecoded_images(split_dataset, image_column)
        self.indices = list(range(len(split_dataset))) if indices is None else [int(i) for i in indices]
        self.labels = split_dataset[label_column]
        self.image_column, self.transform, self.train, self.seed, self.split = image_column, transform, train, seed, split
        self.epoch = 0

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        from ..data.images import decode_image

        row = self.indices[position]
        image = decode_image(self.data[row][self.image_column], row, self.split)
        if self.train:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + row)
            pixels = self.transform(image, generator)
        else:
            pixels = self.transform(image)
        return {"pixel_values": pixels, "labels": int(self.labels[row])}


class _EpochCallback(TrainerCallback):
    def __init__(self, dataset: _Images):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.epoch = int(state.epoch or 0)


class FineTuneTrainer(FullWeightsResumeMixin, Trainer):
    """Trainer with layer-decay AdamW groups and Mixup / CutMix + smoothing on the device batch."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean: the Trainer divides by the accumulation

    def __init__(self, *args, mixup: Mixup, layer_decay: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup, self.layer_decay = mixup, layer_decay

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            groups = layer_decay_param_groups(model, model.config.num_hidden_layers, self.args.weight_decay,
                                              self.layer_decay)
            for group in groups:
                group["lr"] = self.args.learning_rate * group["lr_scale"]
                del group["names"]
            # the optimizer --optim names, with the Trainer's own kwargs (--optim_args, --adam_*); the ones that
            # replace the groups are refused at parsing (arguments.REFUSED_TRAINING_FLAGS)
            optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    def _mix_generator(self) -> torch.Generator:
        # a (seed, step, micro-batch, process) stream: a resumed run mixes the batches the uninterrupted one did
        step = self.state.global_step
        micro = self._micro + 1 if getattr(self, "_mix_step", None) == step else 0
        self._mix_step, self._micro = step, micro
        return seeded_generator(self.args.seed, step, micro, self.args.process_index)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        if model.training:
            pixel_values, targets = self.mixup(inputs.pop("pixel_values"), labels, self._mix_generator())
            outputs = model(pixel_values=pixel_values, **inputs)
            loss = soft_target_cross_entropy(outputs.logits, targets.to(outputs.logits.device))
        else:  # MAE evaluates with the plain cross entropy
            outputs = model(**inputs)
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
        return (loss, outputs) if return_outputs else loss


def _collate(examples: list[dict]) -> dict:
    return {"pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long)}


def _check_output_dir(training_args, fine_tune_args, model_args, data_args) -> None:
    from ..checkpointing import check_output_dir

    # a start checkpoint inside the folder would be replaced by a seed's output, and the next seed start from that
    check_output_dir(training_args, fine_tune_args, sources=[
        ("--model_name_or_path", model_args.model_name_or_path), ("--train_dir", data_args.train_dir),
        ("--validation_dir", data_args.validation_dir), ("--dataset_name", data_args.dataset_name)])


def seed_arguments(model_args, data, fine_tune_args, args, checkpoint: dict, recipe: dict, num_train: int) -> dict:
    """What determines one seed's result, JSON values: the start checkpoint (`checkpoint_fingerprint`: the weights'
    sha256, or a Hub commit), the data (source, splits, the train labels' hash), the subset, the recipe (resolved
    defaults included) and the optimisation flags of `args`, the seed's TrainingArguments."""
    import hashlib

    labels = data.train_labels.numpy().astype("int64").tobytes()
    values = {
        # a local folder by its absolute path: the same checkpoint named from another working directory is the same
        "model_name_or_path": (os.path.abspath(model_args.model_name_or_path)
                               if os.path.isdir(model_args.model_name_or_path) else model_args.model_name_or_path),
        "model_revision": model_args.model_revision, "checkpoint": checkpoint, "global_pool": bool(model_args.global_pool),
        "dataset": data.description, "train_split": data.train_split, "eval_splits": list(data.eval_splits),
        "image_column_name": data.image_column, "label_column_name": data.label_column,
        "train_labels_sha256": hashlib.sha256(labels).hexdigest(),
        "train_fraction": fine_tune_args.train_fraction, "shots_per_class": fine_tune_args.shots_per_class,
        "num_train_images": num_train, "seed": args.seed, "world_size": args.world_size,
        **{name: getattr(fine_tune_args, name) for name in (
            "label_smoothing", "mixup", "cutmix", "mixup_switch_prob", "mixup_prob", "rand_augment",
            "rand_augment_magnitude", "rand_augment_magnitude_std", "random_erase")},
        **recipe,  # base lr, layer decay, drop path, image size, warmup, learning rate: as resolved for this run
        **{name: getattr(args, name) for name in _RESULT_TRAINING_FLAGS},
    }
    # enums (optim, scheduler) as their names, tuples as lists: the form the file holds
    return json.loads(json.dumps(values, default=lambda value: getattr(value, "value", str(value))))


def _check_seed_arguments(stored: dict | None, current: dict, what: str) -> None:
    """Refuse to reuse `what` (a seed's results or checkpoint) made with arguments other than `current`."""
    if stored is None:
        raise ValueError(f"{what} has no record of the arguments it was made with ({SEED_ARGUMENTS_FILE}: written by "
                         "an older version, or not a run_fine_tune.py seed folder); a resume reuses only this run's "
                         "work. Start over with --overwrite_output_dir (without --resume_from_checkpoint), or choose "
                         "another --output_dir")
    differences = [f"{key} {stored.get(key)!r} there, {current.get(key)!r} now"
                   for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]
    if differences:
        raise ValueError(f"{what} was fine-tuned with other arguments than this run's: {'; '.join(differences)}. A "
                         "resume reuses only its own run's work: rerun with that run's arguments, choose another "
                         "--output_dir, or start over with --overwrite_output_dir (without --resume_from_checkpoint)")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the run was probably killed while writing it: "
                         "remove the file to fine-tune that seed again") from None


def _seed_resume(seed_dir: Path, resume, arguments: dict) -> tuple[str, str | None]:
    """("done", None) when the seed finished, ("resume", checkpoint), or ("start", None); a finished seed or a
    checkpoint is taken only when made with `arguments` (`_check_seed_arguments`)."""
    if not resume:
        return "start", None
    results = _read_json(seed_dir / SEED_RESULTS_FILE)
    if results is not None:
        _check_seed_arguments(results.get("arguments"), arguments, f"the finished seed in {seed_dir}")
        return "done", None
    if str(resume).lower() in RESUME_LATEST:
        try:
            checkpoint = resolve_resume_checkpoint("last", seed_dir)
        except ValueError:
            checkpoint = None
        if checkpoint is None and not (seed_dir / SEED_ARGUMENTS_FILE).is_file():
            return "start", None
    else:
        checkpoint = resolve_resume_checkpoint(resume, seed_dir)
    # the arguments of the seed folder a checkpoint sits in (or of one that never got to a complete checkpoint)
    owner = Path(checkpoint).parent if checkpoint else seed_dir
    _check_seed_arguments(_read_json(owner / SEED_ARGUMENTS_FILE), arguments,
                          f"checkpoint {checkpoint}" if checkpoint else f"the seed folder {seed_dir}")
    return ("resume", checkpoint) if checkpoint else ("start", None)


def _clear_earlier_seed(seed_dir: Path) -> None:
    """Before a seed starts afresh in a folder of an earlier run (--overwrite_output_dir): remove that run's
    checkpoints and results, so that a later `--resume_from_checkpoint last` cannot take them for this run's."""
    import shutil

    if not seed_dir.is_dir():
        return
    for path in seed_dir.iterdir():
        if path.is_dir() and CHECKPOINT_FOLDER.match(path.name):
            shutil.rmtree(path)
        elif path.name in (SEED_RESULTS_FILE, SEED_ARGUMENTS_FILE):
            path.unlink()


def _seed_schedule(args, fine_tune_args, base_lr: float, num_train: int) -> dict:
    """The learning rate and warmup one seed trains with: `learning_rate` (the peak: the head's) is
    `--learning_rate` if given, else base lr * effective batch / 256; `warmup_steps` is `--warmup_steps` if given
    (0: none), else `--warmup_epochs` of optimizer steps. `base_learning_rate` / `warmup_epochs` are None where the
    other flag decided."""
    world = max(args.world_size, 1)
    lr_given = getattr(fine_tune_args, "learning_rate_explicit", False)
    # without the parser (a TrainingArguments passed in), a non-zero warmup_steps is the caller's choice
    warmup_given = getattr(fine_tune_args, "warmup_steps_explicit", bool(args.warmup_steps))
    effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    steps_per_epoch = max(1, math.ceil(num_train / (args.per_device_train_batch_size * world)) // args.gradient_accumulation_steps)
    return {"base_learning_rate": None if lr_given else base_lr,
            "learning_rate": args.learning_rate if lr_given else base_lr * effective / 256,
            "warmup_epochs": None if warmup_given else fine_tune_args.warmup_epochs,
            # a given share (< 1) of the run as the steps the Trainer makes of it, so that the record says what ran
            "warmup_steps": (args.get_warmup_steps(args.max_steps if args.max_steps > 0 else
                                                   math.ceil(args.num_train_epochs * steps_per_epoch))
                             if warmup_given else int(round(fine_tune_args.warmup_epochs * steps_per_epoch)))}


def _write_json(path: Path, value: dict) -> None:
    """Whole or not at all (a kill mid-write leaves the old file or none): written aside, then renamed."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(partial, path)


def run_fine_tune(model_args, data_args, fine_tune_args, training_args, dataset=None) -> dict:
    """Fine-tune once per seed, evaluate top-1 / top-5 on every eval split, write the JSON and the model card."""
    from transformers import set_seed

    from ..evaluation.feature_cache import checkpoint_fingerprint
    from ..evaluation.few_shot import mean_std
    from ..evaluation.metrics import top_k_accuracy
    from ..evaluation.session import EvaluationData, write_results_and_card
    from ..model_source import image_normalisation, load_config

    # 1. everything that needs neither data nor weights
    seeds = fine_tune_args.seeds or [training_args.seed]
    resume = training_args.resume_from_checkpoint
    if resume and str(resume).lower() not in RESUME_LATEST and len(seeds) > 1:
        raise ValueError("--resume_from_checkpoint <folder> names one seed's checkpoint; with several --seeds pass "
                         "--resume_from_checkpoint last (finished seeds are kept, the interrupted one continues)")
    _check_output_dir(training_args, fine_tune_args, model_args, data_args)
    classifier_config(model_args, 2)  # model type, patch divisibility: before the data is read
    # 2. the data: splits, columns (checked once, by EvaluationData), low-shot sizes, before any weight is loaded
    with training_args.main_process_first(desc="dataset loading"):
        data = EvaluationData(data_args, model_args.model_name_or_path, model_args.cache_dir, dataset)
    dataset, train_split, eval_splits = data.dataset, data.train_split, data.eval_splits
    train_labels, num_classes = data.train_labels, data.num_classes
    if fine_tune_args.shots_per_class is not None:
        check_shots(train_labels, fine_tune_args.shots_per_class, train_split)
    names = getattr(dataset[train_split].features[data.label_column], "names", None)
    id2label = dict(enumerate(names)) if names else None
    config, checkpoint_image_size = classifier_config(model_args, num_classes, id2label)
    size = config.image_size
    recipe = recipe_defaults(config.num_hidden_layers, config.hidden_size)
    base_lr = fine_tune_args.base_learning_rate or recipe["base_learning_rate"]
    layer_decay = fine_tune_args.layer_decay or recipe["layer_decay"]
    drop_path = recipe["drop_path"] if model_args.drop_path is None else model_args.drop_path
    mean, std = image_normalisation(model_args.model_name_or_path, model_args.cache_dir, model_args.model_revision)
    # the evaluation's preprocessing is the saved processor's (augment.fine_tune_eval_transform): the stock
    # pipeline on a saved seed reproduces the reported accuracy
    processor = fine_tune_image_processor(size, mean, std)
    eval_transform = fine_tune_eval_transform(size, mean, std)
    rand_augment = (RandAugment(fine_tune_args.rand_augment_magnitude, fine_tune_args.rand_augment_magnitude_std)
                    if fine_tune_args.rand_augment else None)
    train_transform = FineTuneTrainTransform(size, config.patch_size, rand_augment, fine_tune_args.random_erase, mean, std)
    mixup = Mixup(num_classes, fine_tune_args.mixup, fine_tune_args.cutmix, fine_tune_args.mixup_switch_prob,
                  fine_tune_args.mixup_prob, fine_tune_args.label_smoothing)
    fraction = None if fine_tune_args.shots_per_class is not None else (fine_tune_args.train_fraction or 1.0)
    source_commit = getattr(load_config(model_args.model_name_or_path, "--model_name_or_path", cache_dir=model_args.cache_dir,
                                        revision=model_args.model_revision), "_commit_hash", None)
    # the start checkpoint's identity: a local folder's weights (sha256), a Hub id's commit
    checkpoint = (checkpoint_fingerprint(model_args.model_name_or_path, source_commit) if source_commit or
                  Path(model_args.model_name_or_path).is_dir() else
                  {"checkpoint": model_args.model_name_or_path, "revision": model_args.model_revision})
    output_dir = Path(training_args.output_dir)
    rows, used = [], []
    for seed in seeds:
        seed_dir = output_dir / f"seed-{seed}"
        indices = low_shot_indices(train_labels, seed, fine_tune_args.train_fraction, fine_tune_args.shots_per_class)
        train = _Images(dataset[train_split], indices, data_args.image_column_name, data_args.label_column_name,
                        train_transform, True, seed, train_split)
        args = copy.deepcopy(training_args)
        args.output_dir, args.seed = str(seed_dir), seed
        args.push_to_hub = False  # the Trainer would push every checkpoint of every seed to one repo: see push_seeds
        schedule = _seed_schedule(args, fine_tune_args, base_lr, len(train))
        args.learning_rate, args.warmup_steps = schedule["learning_rate"], schedule["warmup_steps"]
        resolved = {**schedule, "layer_decay": layer_decay, "drop_path": drop_path, "image_size": size}
        arguments = seed_arguments(model_args, data, fine_tune_args, args, checkpoint, resolved, len(train))
        used.append(arguments)
        state, resume_checkpoint = _seed_resume(seed_dir, resume, arguments)
        if state == "done":
            logger.warning("seed %d finished earlier with this run's arguments: its results are read from %s", seed,
                           seed_dir / SEED_RESULTS_FILE)
            rows += json.loads((seed_dir / SEED_RESULTS_FILE).read_text())["results"]
            continue
        set_seed(seed)
        model = build_classifier(model_args, config, drop_path, checkpoint_image_size)
        trainer = FineTuneTrainer(model=model, args=args, train_dataset=train, data_collator=_collate,
                                  callbacks=[_EpochCallback(train)], mixup=mixup, layer_decay=layer_decay)
        if trainer.is_world_process_zero():
            if state == "start":
                _clear_earlier_seed(seed_dir)
            seed_dir.mkdir(parents=True, exist_ok=True)
            _write_json(seed_dir / SEED_ARGUMENTS_FILE, arguments)
        trainer.accelerator.wait_for_everyone()
        trainer.train(resume_from_checkpoint=resume_checkpoint)
        seed_rows = []
        for split in eval_splits:
            images = _Images(dataset[split], None, data_args.image_column_name, data_args.label_column_name,
                             eval_transform, False, split=split)
            prediction = trainer.predict(images, metric_key_prefix=f"eval_{split}")
            logits, labels = torch.as_tensor(prediction.predictions), torch.as_tensor(prediction.label_ids)
            accuracy = top_k_accuracy(logits.topk(min(5, num_classes), dim=1).indices, labels)
            seed_rows.append({"method": "fine_tune", "split": split, "k": None, "shots": fine_tune_args.shots_per_class,
                              "train_fraction": fraction, "seed": seed, "top1": 100.0 * accuracy["top1"],
                              "top5": 100.0 * accuracy["top5"], "num_queries": int(labels.shape[0]),
                              "num_train_images": len(train), "eval_loss": prediction.metrics.get(f"eval_{split}_loss")})
        # every process: under FSDP / DeepSpeed the weights are gathered from all of them (the Trainer writes on the
        # main one only); a rank-0-only call would hang there
        trainer.save_model(str(seed_dir))
        if trainer.is_world_process_zero():
            processor.save_pretrained(seed_dir)
            _write_json(seed_dir / SEED_RESULTS_FILE, {"arguments": arguments, "results": seed_rows})
        trainer.accelerator.wait_for_everyone()
        rows += seed_rows
    for split in eval_splits:
        per_seed = [r for r in rows if r["split"] == split]
        (top1, top1_std), (top5, top5_std) = mean_std([r["top1"] for r in per_seed]), mean_std([r["top5"] for r in per_seed])
        rows.append({**{k: per_seed[0][k] for k in ("method", "split", "k", "shots", "train_fraction", "num_queries",
                                                     "num_train_images")},
                     "seed": None, "top1": top1, "top1_std": top1_std, "top5": top5, "top5_std": top5_std,
                     "num_seeds": len(per_seed)})
    pooling = "mean" if model_args.global_pool else "cls"
    # what the seeds trained with, as resolved (learning rate, warmup, optimizer): one value, as every seed has the
    # same batch and subset size
    first = used[0]
    payload = {"schema_version": 1, "checkpoint": model_args.model_name_or_path, "dataset": data.label,
               "train_split": train_split, "pooling": pooling, "num_classes": num_classes,
               "num_processes": training_args.world_size,
               "recipe": {**{key: first[key] for key in ("base_learning_rate", "layer_decay", "drop_path")},
                          "weight_decay": training_args.weight_decay,
                          **{key: first[key] for key in ("warmup_epochs", "warmup_steps", "learning_rate", "optim",
                                                         "lr_scheduler_type")},
                          # the run's length as the Trainer read it: --max_steps overrides the epochs when > 0
                          "epochs": None if training_args.max_steps > 0 else training_args.num_train_epochs,
                          "max_steps": training_args.max_steps if training_args.max_steps > 0 else None,
                          "label_smoothing": fine_tune_args.label_smoothing,
                          "mixup": fine_tune_args.mixup, "cutmix": fine_tune_args.cutmix,
                          "rand_augment": fine_tune_args.rand_augment, "random_erase": fine_tune_args.random_erase,
                          "image_size": size, "global_pool": model_args.global_pool},
               "results": rows}
    if training_args.process_index != 0:
        return payload
    run_args = _CardArguments(str(output_dir), fine_tune_args.update_model_card)
    payload = write_results_and_card(payload, RESULTS_FILE, model_args, run_args, data.label, pooling)
    if training_args.push_to_hub:
        payload["pushed"] = push_seeds(payload, model_args, training_args, seeds)
    return payload


def seed_repo_id(repo_id: str, seed: int, num_seeds: int) -> str:
    """One repo per seed: `repo_id` for a run of one seed, `<repo_id>-seed-<s>` for several. Not the best seed by
    its validation top-1: the reported splits are the ones it would be picked on, so its card's number would be
    biased upward (the more so the more seeds); every seed's card gives its own numbers and the mean over seeds."""
    return repo_id if num_seeds == 1 else f"{repo_id}-seed-{seed}"


def push_seeds(payload: dict, model_args, training_args, seeds) -> dict[int, str]:
    """Render each seed's card and push the seed folder to its repo (`seed_repo_id`); `{seed: commit url}`."""
    from ..hub import push_fine_tuned_to_hub, render_fine_tuned_card
    from .arguments import hub_base_model

    base_model = hub_base_model(model_args)
    output_dir = Path(training_args.output_dir)
    repo_id = training_args.hub_model_id or output_dir.resolve().name
    pushed = {}
    for seed in seeds:
        seed_repo = seed_repo_id(repo_id, seed, len(seeds))
        render_fine_tuned_card(output_dir / f"seed-{seed}", base_model=base_model, payload=payload, seed=seed,
                               repo_id=seed_repo)
        pushed[seed] = push_fine_tuned_to_hub(output_dir / f"seed-{seed}", seed_repo,
                                              private=bool(training_args.hub_private_repo))
    return pushed


class _CardArguments:
    """What `write_results_and_card` reads of the evaluation's run arguments (the starting checkpoint's card is
    not pushed: the run pushes its own models, `push_seeds`)."""

    def __init__(self, output_dir: str, update_model_card: bool):
        self.output_dir, self.update_model_card, self.push_to_hub, self.hub_model_id = output_dir, update_model_card, False, None


def format_fine_tune_table(payload: dict) -> str:
    """The summary rows: split, subset, top-1 / top-5 mean ± std over the seeds."""
    lines = [f"{'split':<26}{'subset':<14}{'seeds':>6}{'top1':>16}{'top5':>16}"]
    for row in payload["results"]:
        if row["seed"] is not None:
            continue
        subset = f"{row['shots']} per class" if row["shots"] else f"{100 * row['train_fraction']:g}%"
        lines.append(f"{row['split']:<26}{subset:<14}{row['num_seeds']:>6}"
                     f"{row['top1']:>10.2f}±{row['top1_std']:<5.2f}{row['top5']:>10.2f}±{row['top5_std']:<5.2f}")
    return "\n".join(lines)


__all__ = ["run_fine_tune", "classifier_config", "build_classifier", "FineTuneTrainer", "format_fine_tune_table",
           "FINE_TUNE_MODEL_TYPES", "RESULTS_FILE"]
