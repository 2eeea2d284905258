"""What AttG-MAE adds to the HF Trainer: `AttGTrainer` and the callbacks of a pre-training run.

The Trainer owns distribution (Accelerate), mixed precision, gradient accumulation, checkpoints, resume and
logging. `AttGTrainer` adds MAE's masking noise from a seeded stream (exact resumes, paired study arms), the logged
tau and object-loss share, evaluation with a non-augmenting collator, and checkpoint loading that keeps every layer
weight (see checkpointing.py). The callbacks tell the collator the epoch and draw reconstruction pictures; the
temperature schedule's callback lives next to its formula (temperature.py), the online k-NN's with the evaluation
(evaluation/monitor.py). This module itself imports no data or evaluation code.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ..checkpointing import FullWeightsResumeMixin
from ..modeling_attg_mae import normalize_attention_map, patch_grid, resample_attention_map
from ..object_discovery.placebo import OBJECT_MAP_KEY
from ..seeding import seeded_generator

logger = logging.getLogger(__name__)


class AttGTrainer(FullWeightsResumeMixin, Trainer):
    """Trainer (resuming with every weight, see `FullWeightsResumeMixin`) that also logs tau and the share of the (weighted) loss that falls on object patches, and
    evaluates with its own (non-augmenting) collator."""

    def __init__(self, *args, eval_data_collator=None, online_attention_maps=None, maps_optional: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        # online maps (object_discovery/online.py): the detector lives here, not on the model, so that it is in no
        # state dict, optimizer or checkpoint
        self.online_attention_maps = online_attention_maps
        # self-bootstrapped maps: a batch without maps (warm-up, evaluation) trains / evaluates as a plain MAE
        self.maps_optional = maps_optional
        self._object_share = []
        self.eval_data_collator = eval_data_collator  # evaluation sees center crops, not training augmentation
        self.can_return_loss = True  # the reconstruction loss needs no `labels`: report eval_loss anyway

    def get_resumed_dataloader(self, dataloader, num_batches):
        """On resume, a stream read by `StreamPasses` starts `num_batches` batches in by dropping undecoded rows,
        rather than by accelerate's skip, which decodes and collates every skipped batch. Only where the rows of a
        batch are the next `batch size` rows of the one stream: one process, no DataLoader worker (workers read
        shards of their own; with several processes accelerate dispatches); elsewhere the Trainer's own skip."""
        dataset = self.train_dataset
        if (hasattr(dataset, "skip_rows_on_next_iteration") and self.args.world_size == 1
                and self.args.dataloader_num_workers == 0 and getattr(dataloader, "dataset", None) is dataset):
            dataset.skip_rows_on_next_iteration(num_batches * self._train_batch_size)
            return dataloader
        return super().get_resumed_dataloader(dataloader, num_batches)

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
        # a placebo batch (object_discovery/placebo.py) weights the loss with other maps than the image's own,
        # which it carries for the object share alone: not a model input
        inputs = dict(inputs)
        own_map = inputs.pop(OBJECT_MAP_KEY, None)
        if self.online_attention_maps is not None and inputs.get("attention_map") is None:
            inputs = {**inputs, "attention_map": self.online_attention_maps(inputs["pixel_values"])}
        vanilla = self.maps_optional and inputs.get("attention_map") is None
        if vanilla:
            guidance = "none"
        if model.training and "noise" not in inputs and guidance != "input_masking":
            inputs = {**inputs, "noise": self._masking_noise(inputs["pixel_values"])}
        with vanilla_mae(self.model.config) if vanilla else nullcontext():
            outputs = model(**inputs)
        loss = outputs.loss
        if model.training and inputs.get("attention_map") is not None and hasattr(outputs, "patch_weights"):
            self._object_share.append(object_loss_share(
                outputs, inputs["attention_map"] if own_map is None else own_map))
        return (loss, outputs) if return_outputs else loss

    def _masking_noise(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """MAE's random masking noise from a (seed, step, micro-batch, process) stream, for exact resumes."""
        step = self.state.global_step
        micro = self._micro_batch + 1 if getattr(self, "_noise_step", None) == step else 0
        self._noise_step, self._micro_batch = step, micro
        generator = seeded_generator(self.args.seed, step, micro, self.args.process_index)
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


@contextmanager
def vanilla_mae(config):
    """Within the block the model computes MAE's unweighted loss (`attg_guidance` "none"), then its own again: the
    warm-up of self-bootstrapped maps, before any map exists."""
    guidance = getattr(config, "attg_guidance", None)  # a stock ViTMAE config has none: nothing to switch off
    if guidance is None:
        yield
        return
    config.attg_guidance = "none"
    try:
        yield
    finally:
        config.attg_guidance = guidance


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
        self._epoch = None  # the Trainer's epoch counter, which it does not hand to callbacks

    def on_train_begin(self, args, state, control, **kwargs):
        self._epoch = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        # The first epoch of a train() call: state.epoch is k at the start of epoch k and a fraction when resuming
        # inside one. The later ones count up by one, as the Trainer's loop does. (A streamed split is one endless
        # epoch for the Trainer, StreamPasses: its examples carry their pass, which the collator uses instead.)
        if self._epoch is None:
            self._epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
        else:
            self._epoch += 1
        self.collator.epoch = self._epoch


class ReconstructionPictureCallback(TrainerCallback):
    """At each evaluation: a grid image | map | weights | reconstruction (`visualize.reconstruction_grid`), saved as
    `<output_dir>/pictures/step-<N>.png` and sent to TensorBoard as `reconstructions`."""

    def __init__(self, examples: dict, image_mean, image_std):
        self.examples = examples  # {"pixel_values": (K, 3, H, W), "attention_map": (K, h, w)}
        self.mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std).view(1, 3, 1, 1)
        self.trainer = None  # set by run(): callbacks are not handed the trainer, whose TensorBoard writer we use

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        import numpy as np

        from ..visualize import reconstruction_grid

        # no maps (self-bootstrapped maps, which the validation images do not have): drawn as a plain MAE
        with vanilla_mae(model.config) if self.examples.get("attention_map") is None else nullcontext():
            picture = reconstruction_grid(model, self.examples, self.mean, self.std)
        path = Path(args.output_dir) / "pictures" / f"step-{state.global_step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        writer = _tensorboard_writer(self.trainer) if self.trainer is not None else None
        if writer is not None:
            writer.add_image("reconstructions", np.asarray(picture), state.global_step, dataformats="HWC")
            writer.flush()


def _tensorboard_writer(trainer):
    for callback in trainer.callback_handler.callbacks:
        writer = getattr(callback, "tb_writer", None)
        if writer is not None:
            return writer
    return None

