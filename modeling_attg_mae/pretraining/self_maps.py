"""Self-bootstrapped maps (`--attention_method self`): the training model's own encoder is the detector.

No second model: every `--attention_refresh_epochs` K epochs, after `--attention_warmup_epochs` W epochs of plain
MAE, the maps of every training row are recomputed from the current weights as the last-layer CLS -> patch
attention averaged over heads (DINO's map, the `dino` method run on the encoder with masking off and patch order
kept), on the un-augmented image (the whole image resized to the model's input, as a stored map covers it). They
are held like a stored map column (`(rows, G, G)` float16, normalised per image) and the collator crops them with
the image exactly like stored maps. Before the first refresh the loss is the vanilla MAE loss (guidance none).

Why the current weights and not an EMA teacher: the map at a refresh point is then a function of the checkpoint
at that epoch alone (reproducible, nothing else to store or tune), and maps refreshed once every K epochs already
average the model's state over time the way the EMA would; an EMA copy would double the encoder's memory and add a
momentum to choose. The maps are saved with each checkpoint (`self_attention_maps.pt`) and restored on resume, so
a run resumed inside an epoch uses exactly the maps of the uninterrupted run (recomputing them from resumed weights
taken mid-epoch would not).

At every refresh the map quality is logged: `self_map_iou`, the IoU with the object masks when the training split
has an `object_mask` column (the synthetic set), with the map thresholded at its per-image mean and the mask at a
foreground fraction >= 0.5 of each grid cell; and a picture image | map of the first rows is written to
`<output_dir>/pictures/self-maps-epoch-<E>.png` and TensorBoard (`self_attention_maps`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

MAPS_FILE = "self_attention_maps.pt"
QUALITY_COLUMN = "object_mask"


def is_refresh_epoch(epoch: int, refresh_epochs: int, warmup_epochs: int) -> bool:
    """Maps are (re)computed at the start of epochs W, W + K, W + 2K, ..."""
    return epoch >= warmup_epochs and (epoch - warmup_epochs) % refresh_epochs == 0


def last_refresh_epoch(epoch: int, refresh_epochs: int, warmup_epochs: int) -> int | None:
    """The refresh point whose maps epoch `epoch` trains with (None during the warm-up)."""
    if epoch < warmup_epochs:
        return None
    return warmup_epochs + (epoch - warmup_epochs) // refresh_epochs * refresh_epochs


@torch.no_grad()
def self_attention_maps(model, dataset, image_column: str, image_mean, image_std, grid_size: int,
                        batch_size: int = 64) -> torch.Tensor:
    """The model's own maps of every row of `dataset` (images decoded or not): `(rows, G, G)` float16 on the CPU,
    min-max normalised per image, exactly as a stored map column (`map_step.to_stored_grid`, which refuses a NaN or
    inf map naming its row)."""
    from ..object_discovery.dino import DinoAttention
    from ..object_discovery.map_step import to_stored_grid

    encoder = model.vit  # ViTMAEModel: run by the dino method with masking off and patch order kept
    was_training = encoder.training
    encoder.eval()
    try:
        method = DinoAttention(encoder, image_size=encoder.config.image_size, image_mean=image_mean,
                               image_std=image_std)
        maps = []
        for start in range(0, len(dataset), batch_size):  # a slice at a time: the images never all sit in memory
            images = dataset[start:start + batch_size][image_column]
            pixels = method.preprocess(images, row_offset=start)
            # refused here, at each refresh, should the current weights give a NaN / inf map (a diverged run)
            maps.append(to_stored_grid(method.compute(pixels.to(method.device)), grid_size,
                                       rows=range(start, start + len(pixels))))
        return torch.cat(maps)
    finally:
        encoder.train(was_training)


def mask_grids(masks, grid_size: int) -> torch.Tensor:
    """Object masks (PIL / undecoded rows) -> `(B, G, G)` bool: the cell's foreground fraction is >= 0.5."""
    from ..data.images import mask_fractions

    return mask_fractions(masks, grid_size) >= 0.5


def map_iou(maps: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of IoU(map >= its per-image mean, mask), `(B, G, G)` each."""
    maps = maps.float().flatten(1)
    predicted = maps >= maps.mean(dim=1, keepdim=True)
    masks = masks.flatten(1)
    union = (predicted | masks).sum(1).clamp_min(1)
    return float(((predicted & masks).sum(1) / union).mean())


class SelfMapCollator:
    """The run's collator, with each example's self map (by its `__index__` row) added once maps exist; before
    that the examples go through without maps (plain MAE)."""

    def __init__(self, collator, index_column: str = "__index__"):
        self.collator, self.index_column = collator, index_column
        self.maps: torch.Tensor | None = None  # (rows, G, G) float16, set at each refresh

    @property
    def epoch(self):  # AugmentationEpochCallback sets the wrapped collator's epoch through this
        return self.collator.epoch

    @epoch.setter
    def epoch(self, value):
        self.collator.epoch = value

    def __call__(self, examples):
        if self.maps is not None:
            examples = [{**example, "attention_map": self.maps[int(example[self.index_column])]}
                        for example in examples]
        return self.collator(examples)


class SelfAttentionMapCallback(TrainerCallback):
    """Refreshes the self maps at the start of the refresh epochs, logs their quality, saves and restores them with
    the checkpoints. `trainer` is set by run() (for its log and TensorBoard writer)."""

    def __init__(self, collator: SelfMapCollator, train, image_column: str, image_mean, image_std, grid_size: int,
                 refresh_epochs: int, warmup_epochs: int, batch_size: int = 64, num_pictures: int = 8):
        self.collator, self.train, self.image_column = collator, train, image_column
        self.image_mean, self.image_std, self.grid_size = tuple(image_mean), tuple(image_std), grid_size
        self.refresh_epochs, self.warmup_epochs = refresh_epochs, warmup_epochs
        self.batch_size, self.num_pictures = batch_size, num_pictures
        self.refreshed_epoch: int | None = None
        self.trainer = None
        self._masks = None

    @property
    def ready(self) -> bool:
        return self.collator.maps is not None

    def on_train_begin(self, args, state, control, **kwargs):
        checkpoint = args.resume_from_checkpoint
        position = state.epoch or 0.0
        epoch = int(math.floor(position + 1e-6))
        expected = last_refresh_epoch(epoch, self.refresh_epochs, self.warmup_epochs)
        if not checkpoint or expected is None:
            return
        if expected == epoch and position - epoch < 1e-6:
            # resumed at the very start of a refresh epoch: on_epoch_begin computes its maps from the resumed weights,
            # the weights the uninterrupted run computed them from (the checkpoint holds none, or the previous ones)
            return
        path = Path(checkpoint) / MAPS_FILE
        if not path.is_file():
            raise ValueError(f"--resume_from_checkpoint {checkpoint} has no {MAPS_FILE}, but epoch {epoch} of a "
                             f"--attention_method self run trains with the maps of epoch {expected}; resume from a "
                             "checkpoint of this run, or start it again")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["maps"].shape[0] != len(self.train):
            raise ValueError(f"{path} holds maps of {saved['maps'].shape[0]} rows, the training split has "
                             f"{len(self.train)}: the checkpoint is from a run on other data")
        if int(saved["epoch"]) != expected:
            raise ValueError(f"{path} holds the maps of epoch {int(saved['epoch'])}, but with "
                             f"--attention_refresh_epochs {self.refresh_epochs} and --attention_warmup_epochs "
                             f"{self.warmup_epochs} epoch {epoch} trains with those of epoch {expected}: the "
                             "checkpoint is from a run with another refresh schedule; resume with its flags")
        from ..data.transforms import check_finite_attention_maps

        check_finite_attention_maps(saved["maps"], [f"{path}, row {row}" for row in range(len(saved["maps"]))])
        self.collator.maps, self.refreshed_epoch = saved["maps"], int(saved["epoch"])

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        epoch = int(math.floor((state.epoch or 0.0) + 1e-6))
        if not is_refresh_epoch(epoch, self.refresh_epochs, self.warmup_epochs) or self.refreshed_epoch == epoch:
            return  # not a refresh point, or resumed inside the epoch whose maps were restored
        model = model if model is not None else self.trainer.model
        self.collator.maps = self_attention_maps(model, self.train, self.image_column, self.image_mean,
                                                 self.image_std, self.grid_size, self.batch_size)
        self.refreshed_epoch = epoch
        self._report(args, state, epoch)

    def on_save(self, args, state, control, **kwargs):
        if self.collator.maps is None or not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            torch.save({"maps": self.collator.maps, "epoch": self.refreshed_epoch}, folder / MAPS_FILE)

    def _report(self, args, state, epoch: int) -> None:
        logs = {"self_map_refresh_epoch": epoch}
        if QUALITY_COLUMN in self.train.column_names:
            if self._masks is None:
                self._masks = mask_grids(self.train[QUALITY_COLUMN], self.grid_size)
            logs["self_map_iou"] = round(map_iou(self.collator.maps, self._masks), 4)
        logger.info("self-bootstrapped maps refreshed at epoch %d: %s", epoch, logs)
        if self.trainer is not None:
            self.trainer.log(logs)
        if not state.is_world_process_zero or self.num_pictures < 1:
            return
        from ..data.images import decode_image
        from ..visualize import guidance_grid

        count = min(self.num_pictures, len(self.train))
        pictures = [decode_image(image, row) for row, image in enumerate(self.train[:count][self.image_column])]
        picture = guidance_grid(pictures, self.collator.maps[:count].float())
        path = Path(args.output_dir) / "pictures" / f"self-maps-epoch-{epoch:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        if self.trainer is not None:
            from .trainer import _tensorboard_writer

            writer = _tensorboard_writer(self.trainer)
            if writer is not None:
                writer.add_image("self_attention_maps", np.asarray(picture), state.global_step, dataformats="HWC")
                writer.flush()
