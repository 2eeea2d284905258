"""The run behind `run_pretrain.py`: config and model from the arguments, every check that needs no data, then
`run()`, which wires data, collators, callbacks and `AttGTrainer` together, trains, and hands over to the export.

The pieces live next door: arguments.py (what the user can ask), dataset.py (the data and its maps), trainer.py
(the Trainer and its callbacks), card.py (export, k-NN, model card); this module is only their order, so that bad
input is refused before any data is opened or weight built. (Not `run.py`: the package re-exports the function
`run`, which would hide a submodule of that name.)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from transformers import TrainingArguments

from ..checkpointing import (
    RunFingerprintCallback,
    check_output_dir,
    check_run_fingerprint,
    mark_run_folder,
    replace_earlier_run,
    resolve_resume_checkpoint,
)
from ..configuration_attg_mae import AttGViTMAEConfig, image_size_of, patch_size_of
from ..data.loading import load_data_source
from ..data.source import write_data_source
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..model_source import checkpoint_normalisation
from ..modeling_attg_mae import AttGViTMAEForPreTraining
from ..temperature import AttGTemperatureCallback
from .arguments import CONFIG_FIELDS, MODEL_PRESETS, AttGArguments, DataArguments, ModelArguments, run_fingerprint
from .card import export_checkpoint, run_image_processor, run_knn_on_checkpoint, write_model_card
from .dataset import StreamPasses, check_attention_arguments, knn_eval_splits, load_pretraining_data
from .outputs import PRETRAINING_OUTPUTS
from .trainer import AttGTrainer, AugmentationEpochCallback, ReconstructionPictureCallback

logger = logging.getLogger(__name__)


def build_config(model_args: ModelArguments, attg_args: AttGArguments) -> AttGViTMAEConfig:
    """The run's config, before any weight is loaded: a preset or a checkpoint's config (which must be a ViTMAE),
    the run's AttG knobs and masking (`CONFIG_FIELDS`, whose defaults are the config class's), then
    `--config_overrides` (a key the config does not have is an error, not a silent extra).

    A checkpoint's own knobs are replaced by the run's: they describe how *it* was trained, and its `mask_ratio`
    is 0 for stock feature extraction (`save_for_inference_and_pretraining`)."""
    knobs = {name: getattr(model_args if hasattr(model_args, name) else attg_args, name) for name in CONFIG_FIELDS}
    if model_args.model_name_or_path:
        check_vit_mae_checkpoint(model_args.model_name_or_path, model_args.cache_dir)
        config = AttGViTMAEConfig.from_pretrained(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                                  attg_pretraining_mask_ratio=None, **knobs)
    else:
        config = AttGViTMAEConfig(**MODEL_PRESETS[model_args.model_preset], **knobs)
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as error:
            known = ", ".join(sorted(k for k in config.to_dict() if not k.startswith("_")))
            raise ValueError(f"--config_overrides {model_args.config_overrides!r}: {error}; the config's keys are: "
                             f"{known}") from None  # update_from_string validates the AttG fields itself
    return config


def check_vit_mae_checkpoint(model_name_or_path: str, cache_dir: str | None = None) -> None:
    """Refuse a checkpoint that is not a ViTMAE (a BERT or a ResNet would otherwise start a random ViTMAE whose
    card names the wrong base model), or that cannot be found, before any data or model work."""
    from ..model_source import load_config

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


def check_run_arguments(model_args: ModelArguments, data_args: DataArguments, attg_args: AttGArguments,
                        training_args: TrainingArguments) -> AttGViTMAEConfig:
    """Every check that needs no data and no weights, in one place, before any data or model work; returns the
    run's config. (Data-dependent checks follow as soon as the dataset is opened, before the maps.)"""
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(training_args, name)}")
    check_output_dir(training_args, attg_args, PRETRAINING_OUTPUTS, sources=[
        ("--train_dir", data_args.train_dir), ("--validation_dir", data_args.validation_dir),
        ("--dataset_name", data_args.dataset_name), ("--model_name_or_path", model_args.model_name_or_path),
        ("--attention_model_name_or_path", data_args.attention_model_name_or_path)])
    training_args.resume_from_checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint,
                                                                     training_args.output_dir)
    # a resume continues this run only: not an old run's checkpoint-N, nor one of a run with other arguments
    check_run_fingerprint(training_args.resume_from_checkpoint,
                          run_fingerprint(model_args, data_args, attg_args, training_args))
    if attg_args.run_knn and data_args.train_dir and not data_args.validation_dir:
        raise ValueError("--run_knn evaluates on the splits besides the training one, but --train_dir was given "
                         "without --validation_dir; add one, or drop --run_knn and run run_knn.py later")
    config = build_config(model_args, attg_args)
    check_label_free_run(data_args, attg_args, training_args)
    if data_args.streaming:
        uses_maps = attg_args.attg_guidance != "none" or attg_args.maps_for_vanilla_mae
        check_streaming_arguments(data_args, attg_args, training_args,
                                  stored_maps=uses_maps and not data_args.attention_online)
    if attg_args.attg_guidance != "none" or attg_args.maps_for_vanilla_mae:
        check_attention_arguments(data_args)
    if data_args.attention_placebo is not None and attg_args.attg_guidance == "none":
        raise ValueError(f"--attention_placebo {data_args.attention_placebo} changes the maps the guided loss is "
                         "weighted with, but --attg_guidance is none (a plain MAE): choose a guidance mode (attg)")
    return config


# the oldest transformers on which a resumed self-maps run was checked to equal the uninterrupted one (on the
# minimum-versions stack, 5.16, its losses differ from the first resumed step: tests/test_label_free.py)
SELF_MAPS_RESUME_MIN = "5.24"


def self_maps_resume_verified() -> bool:
    from packaging.version import Version

    from .._dependencies import installed_version

    return Version(installed_version("transformers")) >= Version(SELF_MAPS_RESUME_MIN)


def check_label_free_run(data_args: DataArguments, attg_args: AttGArguments, training_args: TrainingArguments) -> None:
    """Online / self-bootstrapped maps against the rest of the run (their own flag combinations are checked when
    the data arguments are parsed)."""
    if data_args.attention_method == "self":
        if attg_args.attg_guidance == "none":
            raise ValueError("--attention_method self gives maps for the guided loss, but --attg_guidance is none "
                             "(a plain MAE); choose a guidance mode (e.g. attg) or drop --attention_method self")
        if training_args.dataloader_persistent_workers:
            raise ValueError("--attention_method self hands each epoch's workers the maps of the last refresh; "
                             "persistent workers would keep the first ones: drop --dataloader_persistent_workers")
        check_self_maps_schedule(data_args, training_args)  # with --max_steps: again once the data is known
        if training_args.resume_from_checkpoint and not self_maps_resume_verified():
            from .._dependencies import installed_version

            raise ValueError(
                f"resuming a --attention_method self run is verified with transformers >= {SELF_MAPS_RESUME_MIN}; "
                f"with {installed_version('transformers')} the resumed run was measured to diverge from the "
                "uninterrupted one (different losses from the first resumed step), so it is refused rather than "
                f"continued silently: upgrade transformers to >= {SELF_MAPS_RESUME_MIN}, or start the run again")
    if data_args.attention_online and attg_args.attg_guidance == "none" and not attg_args.maps_for_vanilla_mae:
        raise ValueError("--attention_online computes maps, but --attg_guidance none uses none; add "
                         "--maps_for_vanilla_mae (to log object_loss_share) or drop --attention_online")


def run(model_args: ModelArguments, data_args: DataArguments, attg_args: AttGArguments,
        training_args: TrainingArguments, dataset=None) -> dict:
    """Pre-train, save a stock-loadable checkpoint with image processor and model card; return where things are.

    `dataset`: a `DatasetDict` or a streaming `IterableDatasetDict` to train on instead of the source the data
    arguments name. A streaming source needs `--max_steps` and maps that need no pass over the data (online, or
    none); it has no length, so no k-NN evaluation."""
    from transformers import set_seed

    from ..data import EvalTransform, PretrainCollator, PretrainTransform, training_rows

    config = check_run_arguments(model_args, data_args, attg_args, training_args)
    uses_maps = attg_args.attg_guidance != "none" or attg_args.maps_for_vanilla_mae
    self_maps = data_args.attention_method == "self"
    # a stored map column (computed once, or given): not for online maps nor for self-bootstrapped ones
    needs_maps = uses_maps and not data_args.attention_online and not self_maps
    patch, size = patch_size_of(config), image_size_of(config)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if model_args.model_name_or_path:  # continued pre-training keeps the checkpoint's normalisation
        recorded = checkpoint_normalisation(model_args.model_name_or_path, model_args.cache_dir)
        if recorded is None:
            logger.warning("no image processor in %s: using ImageNet mean/std", model_args.model_name_or_path)
        else:
            mean, std = recorded

    if dataset is None:
        with training_args.main_process_first(desc="dataset loading"):
            # class ids aligned across splits either way (the same splits, and cached maps, with or without the
            # k-NN flags); a class only an eval split holds is refused only where the k-NN would score it
            source = load_data_source(data_args, model_args.cache_dir,
                                      new_classes="refuse" if attg_args.run_knn or attg_args.knn_monitor else "append")
    else:
        source = dataset
    streaming = check_streaming_run(source, data_args, attg_args, training_args, needs_maps or self_maps)
    if data_args.attention_placebo is not None and not streaming:  # before the maps, which can take hours
        from ..object_discovery.placebo import check_placebo_batches

        rows = len(source[data_args.train_split])
        check_placebo_batches(data_args.attention_placebo, min(rows, data_args.max_train_samples or rows),
                              training_args.per_device_train_batch_size, training_args.world_size,
                              training_args.dataloader_drop_last)
    splits = load_pretraining_data(data_args, model_args, training_args.main_process_first, with_maps=needs_maps,
                                   run_knn=attg_args.run_knn or attg_args.knn_monitor, dataset=source)
    if data_args.attention_online or self_maps:
        splits = {name: without_stored_maps(part) for name, part in splits.items()}
    if self_maps:
        check_self_maps_schedule(data_args, training_args, len(splits[data_args.train_split]))

    set_seed(training_args.seed)
    model = build_model(model_args, attg_args, config)
    train = splits[data_args.train_split]
    validation = splits.get(data_args.validation_split) if data_args.validation_split else None
    # augmentation and masking draw from (seed, epoch/step, row) streams, not from the global RNG: a resumed run
    # repeats the uninterrupted one exactly (the Trainer restores RNG states only after prefetching a batch)
    # (add_column concatenates an in-memory column: the image data is not rewritten, unlike a map)
    if streaming:  # no length: the pass and the row index (the position in the shuffled pass) come with each example
        # the Trainer shuffles a map-style split with its sampler but a stream not at all: shuffle it through a
        # buffer, reshuffled each pass; the passes are one endless epoch for the Trainer (see StreamPasses)
        train = StreamPasses(train.shuffle(seed=training_args.seed, buffer_size=data_args.streaming_shuffle_buffer))
    else:
        train = train.add_column("__index__", list(range(len(train))))
    # constant maps are counted where they are made, on the CPU (not on the device in every forward)
    collator = PretrainCollator(PretrainTransform(size, patch, mean=mean, std=std), data_args.image_column_name,
                                require_attention_map=needs_maps, seed=training_args.seed,
                                warn_constant_maps=attg_args.attg_guidance != "none")
    eval_collator = PretrainCollator(EvalTransform(size, patch, mean=mean, std=std), data_args.image_column_name,
                                     require_attention_map=needs_maps)
    if data_args.attention_placebo is not None:
        from ..object_discovery.placebo import PlaceboCollator

        collator = PlaceboCollator(collator, data_args.attention_placebo, training_args.seed)
    online = None
    if data_args.attention_online and uses_maps:
        online = build_online_maps(data_args, training_args, mean, std)
    refresher = None
    if self_maps:
        from .self_maps import SelfAttentionMapCallback, SelfMapCollator

        collator = SelfMapCollator(collator)
        refresher = SelfAttentionMapCallback(
            collator, train, data_args.image_column_name, mean, std, data_args.attention_grid_size,
            data_args.attention_refresh_epochs, _warmup_epochs(data_args), data_args.attention_batch_size,
            attg_args.num_pictures)
    callbacks = [AttGTemperatureCallback(), AugmentationEpochCallback(collator),
                 RunFingerprintCallback(run_fingerprint(model_args, data_args, attg_args, training_args))]
    if refresher is not None:
        callbacks.append(refresher)
    pictures = None
    if validation is None:
        training_args.eval_strategy = "no"
    elif attg_args.num_pictures > 0:
        rows = (list(validation.take(attg_args.num_pictures)) if streaming else
                [validation[i] for i in range(min(attg_args.num_pictures, len(validation)))])
        examples = eval_collator(rows)
        if online is not None:  # the frozen detector's maps of the pictures' center crops: the same at every step
            examples["attention_map"] = online(examples["pixel_values"]).cpu()
        pictures = ReconstructionPictureCallback(examples, mean, std)
        callbacks.append(pictures)
    monitor = None
    if attg_args.knn_monitor:
        monitor = build_knn_monitor(source, data_args, attg_args, training_args, size, mean, std, len(train))
        callbacks.append(monitor)
    # batches of the collator's columns read through Arrow in one call (stored maps as one array), see data/rows.py
    rows = training_rows(train, [data_args.image_column_name, "attention_map", "__index__"])
    # every check has passed: only now does --overwrite_output_dir remove the earlier run's outputs (main process)
    with training_args.main_process_first(local=False, desc="replacing the earlier run"):
        if training_args.process_index == 0:
            replace_earlier_run(training_args, attg_args, PRETRAINING_OUTPUTS)
            mark_run_folder(training_args.output_dir, PRETRAINING_OUTPUTS)
    # processing_class: the Trainer saves the run's image processor into each checkpoint-N, which the evaluation and
    # the export then read (a checkpoint of a killed run has no run folder processor to fall back on)
    trainer = AttGTrainer(model=model, args=training_args, train_dataset=rows, eval_dataset=validation,
                          data_collator=collator, eval_data_collator=eval_collator, callbacks=callbacks,
                          online_attention_maps=online, maps_optional=self_maps,
                          processing_class=run_image_processor(size, mean, std))
    for callback in (pictures, monitor, refresher):
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
    if training_args.push_to_hub and trainer.is_world_process_zero():
        from ..hub import push_checkpoint_to_hub

        push_checkpoint_to_hub(output_dir, training_args.hub_model_id or output_dir.name,
                               private=bool(training_args.hub_private_repo))
    return paths


def without_stored_maps(part):
    """`part` without the stored `attention_map` column a source may hold: online and self-bootstrapped maps come
    from the detector / the model, but the collators pass on any map the examples carry, so such a column would
    silently replace them (and turn the self maps' warm-up, evaluation and pictures into guided ones)."""
    import datasets

    if isinstance(part, datasets.IterableDataset):  # its columns may be unknown; a missing column is skipped
        return part.remove_columns("attention_map")
    if "attention_map" in part.column_names:
        logger.info("ignoring the dataset's stored attention_map column: the maps are online / self-bootstrapped")
        return part.remove_columns("attention_map")
    return part


def check_streaming_run(source, data_args: DataArguments, attg_args: AttGArguments, training_args: TrainingArguments,
                        stored_maps: bool) -> bool:
    """Whether the training split streams (an `IterableDataset`); if so, refuse what needs its length or a pass
    over it, before any model is built."""
    import datasets

    if data_args.train_split not in source:
        return False  # load_pretraining_data names the missing split
    if not isinstance(source[data_args.train_split], datasets.IterableDataset):
        return False
    check_streaming_arguments(data_args, attg_args, training_args, stored_maps)
    return True


def check_streaming_arguments(data_args: DataArguments, attg_args: AttGArguments, training_args: TrainingArguments,
                              stored_maps: bool) -> None:
    """What a streaming training split cannot do: run before any data work with `--streaming`, and again when a
    streaming dataset is handed to `run` directly."""
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("a streaming training split has no length: pass --max_steps (the number of optimizer steps)")
    if stored_maps:
        raise ValueError("a streaming training split cannot get a stored map column (nor self-bootstrapped maps, "
                         "which are recomputed over every row): use --attention_online, or --attg_guidance none")
    if attg_args.run_knn or attg_args.knn_monitor:
        raise ValueError("--run_knn / --knn_monitor need splits with a length; a streaming source has none: drop "
                         "them and run run_knn.py on the exported checkpoint")
    # the passes over a stream are one endless epoch for the Trainer (StreamPasses), which ends with the run
    per_epoch = [f"--{name} epoch" for name in ("save_strategy", "eval_strategy", "logging_strategy")
                 if str(getattr(getattr(training_args, name), "value", getattr(training_args, name))) == "epoch"]
    if per_epoch:
        raise ValueError(f"{', '.join(per_epoch)}: a streaming training split is read pass after pass as one epoch of "
                         "--max_steps steps, which ends with the run; use the steps strategy (--save_steps, "
                         "--eval_steps, --logging_steps)")


def check_self_maps_schedule(data_args: DataArguments, training_args: TrainingArguments,
                             num_train_rows: int | None = None) -> None:
    """Refuse a self-maps run that ends before its first maps: they are computed at the start of epoch W (the
    warm-up, `_warmup_epochs`; then every K epochs, see self_maps.is_refresh_epoch), so a run of W epochs or fewer
    trains a plain MAE throughout, under a card that says AttG with self maps. With `--num_train_epochs` it is
    known from the arguments; with `--max_steps` from the number of steps an epoch has (`num_train_rows`, as the
    Trainer counts them)."""
    warmup = _warmup_epochs(data_args)
    if warmup == 0:
        return  # the first maps come from the initial weights, before the first step
    flags = (f"--attention_warmup_epochs {warmup}" if data_args.attention_warmup_epochs is not None else
             f"--attention_refresh_epochs {warmup}, the warm-up when --attention_warmup_epochs is unset")
    fix = ("lower --attention_warmup_epochs (0: the first maps from the initial weights) or train longer, or use "
           "--attg_guidance none for a plain MAE")
    if training_args.max_steps is None or training_args.max_steps <= 0:
        epochs = training_args.num_train_epochs
        if warmup >= epochs:
            raise ValueError(f"--attention_method self computes its first maps at the start of epoch {warmup} "
                             f"({flags}), but --num_train_epochs {epochs:g} ends the run before: it would train a "
                             f"plain MAE throughout, under a card that says self maps; {fix}")
        return
    if num_train_rows is None:
        return
    per_step = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    batches = num_train_rows // per_step if training_args.dataloader_drop_last else math.ceil(num_train_rows / per_step)
    steps_per_epoch = max(math.ceil(batches / training_args.gradient_accumulation_steps), 1)  # as the Trainer counts
    if warmup * steps_per_epoch >= training_args.max_steps:
        raise ValueError(f"--attention_method self computes its first maps at the start of epoch {warmup} "
                         f"({flags}), after {warmup * steps_per_epoch} steps ({steps_per_epoch} an epoch: "
                         f"{num_train_rows} training images), but --max_steps {training_args.max_steps} ends the run "
                         f"before: it would train a plain MAE throughout, under a card that says self maps; {fix}")


def _warmup_epochs(data_args: DataArguments) -> int:
    """`--attention_warmup_epochs`, unset meaning `--attention_refresh_epochs`: K epochs of plain MAE first."""
    if data_args.attention_warmup_epochs is None:
        return data_args.attention_refresh_epochs
    return data_args.attention_warmup_epochs


def training_dtype(training_args: TrainingArguments) -> str:
    """The precision the model trains in, for the frozen detector of online maps."""
    return "bfloat16" if training_args.bf16 else "float16" if training_args.fp16 else "float32"


def build_online_maps(data_args: DataArguments, training_args: TrainingArguments, mean, std):
    """The frozen detector of `--attention_online` on the training device, in the training precision."""
    from ..object_discovery.online import OnlineAttentionMaps

    return OnlineAttentionMaps.build(data_args.attention_method, data_args.attention_model_name_or_path,
                                     device=training_args.device, dtype=training_dtype(training_args),
                                     image_mean=mean, image_std=std, check_finite=data_args.attention_online_check)


def build_knn_monitor(source, data_args: DataArguments, attg_args: AttGArguments, training_args: TrainingArguments,
                      image_size: int, mean, std, num_train: int):
    """The online k-NN monitor on a fixed seeded bank from the train split and every other split (seeded subsets),
    with the evaluation transform; once per epoch unless `--knn_monitor_steps` says otherwise."""
    from ..evaluation.monitor import KNNMonitorCallback, monitor_subset
    from ..evaluation.runner import eval_pixels_transform, num_classes_of

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


