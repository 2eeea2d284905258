"""Batching for pre-training: raw examples (`image` [+ `attention_map`]) -> model inputs.

Two equivalent routes, sharing `transform_examples` (images one by one, the batch's maps in one call):

* `PretrainCollator(transform)` as the DataLoader / Trainer `data_collator`: the transform runs in the
  DataLoader workers. The Trainer must then keep the raw columns: `remove_unused_columns=False`.
* `with_pretrain_transform(dataset, transform)` (`Dataset.with_transform`) + `stack_pretrain_batch` as the
  collator, for code that indexes the dataset directly.

Output: `pixel_values` float32 `(B, 3, S, S)` and, when the examples have maps, `attention_map` float32
`(B, gh, gw)` on the model's patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import logging

import torch

import datasets

from ..seeding import seeded_generator
from .images import decode_image
from .transforms import MapCrop, as_attention_maps, check_finite_attention_maps


logger = logging.getLogger(__name__)


def warn_constant_maps(attention_map: torch.Tensor, where: str = "a training batch") -> bool:
    """Warn when maps of a batch are constant (every patch weight 1: those images train as a plain MAE), which
    usually means a broken map source; returns whether it warned. Called on the CPU, where the collator made the
    maps: on the training device the count would be a device-to-host read every step."""
    if torch.is_tensor(attention_map):  # (B, h, w): one reduction for the batch (this runs on every batch)
        flat = attention_map.detach().flatten(1)
        constant, count = int((flat.amax(1) == flat.amin(1)).sum()), flat.shape[0]
    else:  # a list of (h, w) maps of different grids
        constant, count = sum(bool(m.max() == m.min()) for m in attention_map), len(attention_map)
    if constant:
        logger.warning(
            "%d of %d attention maps in %s are constant: those images get weight 1 on every patch and train as a "
            "plain MAE. Check the map source (--attention_method / the attention column); maps that are constant "
            "for every image make this run a vanilla MAE", constant, count, where)
    return bool(constant)


class Transform(Protocol):
    """What the collator needs of a transform (`PretrainTransform`, `EvalTransform`): the image of one example
    with the box it was cut with, then the maps of the whole batch cut in one call."""

    def transform_image(self, image, generator: torch.Generator | None = None) -> tuple[torch.Tensor, MapCrop]: ...

    def crop_maps(self, attention_maps, crops: Sequence[MapCrop]) -> torch.Tensor: ...


def _check_all_or_none(has_map: list[bool]) -> bool:
    if any(has_map) and not all(has_map):
        missing = [i for i, present in enumerate(has_map) if not present]
        raise ValueError(f"examples {missing} of the batch have no attention_map while the others do; "
                         "every example needs one (or none)")
    return bool(has_map) and all(has_map)


def transform_examples(examples: Sequence[dict], transform: Transform, image_column: str = "image",
                       attention_map_column: str = "attention_map", require_attention_map: bool = True,
                       generators: Sequence[torch.Generator | None] | None = None, inspect_maps=None):
    """Transform a batch of raw examples: `(pixel_values [(3, S, S)] * B, attention_map (B, gh, gw) or None)`.

    `inspect_maps(maps, rows)`, if given, sees the batch's maps as the source gave them, before they are cut.

    Images are decoded and cut one by one (PIL); the maps of the batch are then read and cut in one call
    (`transform.crop_maps`), which gives the numbers a per-example call gives, at a fraction of the cost.
    Clear errors name the example or dataset row that lacks a column or holds an unreadable map.

    Why here and not on the training device: once batched, cutting 128 demo maps is one small gather and one
    area average (2.5 ms of CPU, reading the nested lists included, against 20 ms one map at a time, on a busy
    2-core machine), and the batch stays self-contained: the Trainer, the evaluation collator, the pictures and
    a resumed run all see finished maps on the patch grid. Carrying boxes to the device would change the model's
    inputs for no measurable gain. The map cost that remains is reading the column from the dataset, which no
    device move removes.
    """
    if len(examples) == 0:
        raise ValueError("cannot collate an empty batch")
    pixel_values, crops, maps, rows = [], [], [], []
    for index, example in enumerate(examples):
        if image_column not in example:
            raise ValueError(f"example {index} has no {image_column!r} column; it has {sorted(example)}")
        attention_map = example.get(attention_map_column)
        if attention_map is None and require_attention_map:
            raise ValueError(
                f"example {index} has no {attention_map_column!r} (its columns: {sorted(example)}); compute the maps "
                "with the object-discovery step first, or pass require_attention_map=False for a vanilla MAE"
            )
        # decoded here, where the dataset row and the file are known (the dataset keeps the column undecoded,
        # `undecoded_images`); an already decoded PIL image passes through
        row = example.get("__index__", index)
        image = decode_image(example[image_column], row)
        generator = None if generators is None else generators[index]
        try:
            pixels, crop = transform.transform_image(image, generator)
        except ValueError as error:
            raise ValueError(f"row {row}: {error}") from error
        if not (torch.is_tensor(pixels) and pixels.dim() == 3):
            raise ValueError(f"the transform must return pixel_values of shape (3, S, S), got "
                             f"{getattr(pixels, 'shape', type(pixels).__name__)}")
        pixel_values.append(pixels)
        crops.append(crop)
        maps.append(attention_map)
        rows.append(row)
    if not _check_all_or_none([m is not None for m in maps]):
        return pixel_values, None
    # a malformed or non-finite map fails here naming its row, so that it can be found and fixed: on the CPU, once
    # per batch, where the model's forward would need a device-to-host read every step
    names = [f"row {row}" for row in rows]
    decoded = as_attention_maps(maps, names=names)
    check_finite_attention_maps(decoded, names)
    if inspect_maps is not None:
        inspect_maps(decoded, rows)
    return pixel_values, transform.crop_maps(decoded, crops)


def stack_pretrain_batch(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack `{"pixel_values": (3, S, S)[, "attention_map": (gh, gw)]}` items into a batch."""
    if len(items) == 0:
        raise ValueError("cannot collate an empty batch")
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items]).float()}  # (B, 3, S, S)
    if _check_all_or_none([item.get("attention_map") is not None for item in items]):
        batch["attention_map"] = torch.stack([item["attention_map"] for item in items]).float()  # (B, gh, gw)
    return batch


class PretrainCollator:
    """`data_collator` turning raw examples into `pixel_values` (B, 3, S, S) and `attention_map` (B, gh, gw).

    Args:
        transform: `PretrainTransform` / `EvalTransform`, or an object with their `transform_image` / `crop_maps`.
        image_column: the column holding the images.
        attention_map_column: the column holding the maps (any grid; a PIL mask works too).
        require_attention_map: raise when an example has no map (AttG); False for a vanilla MAE, in which case
            maps are still passed on when every example of the batch has one.
        seed: with `seed`, examples that carry their dataset row in `index_column` are augmented with a generator
            seeded by (seed, `epoch`, row): the augmentation of a row no longer depends on the global RNG or on
            which batches ran before, so a resumed run sees exactly the crops of the uninterrupted one.
            Set `epoch` before each epoch (the pre-training Trainer does). An example that carries its own pass
            over the data in `epoch_column` (a stream read pass after pass, where one batch may hold the end of a
            pass and the start of the next) is seeded with that pass instead.
        warn_constant_maps: warn (once per collator copy, i.e. once per DataLoader worker) when a batch holds
            constant maps, which a guided loss treats as a plain MAE's (`warn_constant_maps`).
    """

    def __init__(self, transform: Transform, image_column: str = "image", attention_map_column: str = "attention_map",
                 require_attention_map: bool = True, seed: int | None = None, index_column: str = "__index__",
                 epoch_column: str = "__epoch__", warn_constant_maps: bool = False):
        self.transform = transform
        self.warn_constant_maps, self._warned_constant_maps = warn_constant_maps, False
        self.image_column, self.attention_map_column = image_column, attention_map_column
        self.require_attention_map = require_attention_map
        self.seed, self.index_column, self.epoch_column, self.epoch = seed, index_column, epoch_column, 0

    def _warn_constant(self, maps, rows) -> None:
        # the maps as stored, not as cut: a crop that misses the object is constant by design, a stored map is not
        self._warned_constant_maps = warn_constant_maps(maps, f"a training batch (rows {rows[0]}..{rows[-1]})")

    def _generator(self, example: dict) -> torch.Generator | None:
        if self.seed is None or self.index_column not in example:
            return None
        epoch = example.get(self.epoch_column, self.epoch)
        return seeded_generator(self.seed, int(epoch), int(example[self.index_column]))

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        pixel_values, attention_map = transform_examples(
            examples, self.transform, self.image_column, self.attention_map_column, self.require_attention_map,
            [self._generator(example) for example in examples],
            self._warn_constant if self.warn_constant_maps and not self._warned_constant_maps else None)
        batch = {"pixel_values": torch.stack(pixel_values).float()}  # (B, 3, S, S)
        if attention_map is not None:
            batch["attention_map"] = attention_map  # (B, gh, gw) float32
        return batch


def with_pretrain_transform(dataset: datasets.Dataset, transform: Transform, image_column: str = "image",
                            attention_map_column: str = "attention_map",
                            require_attention_map: bool = True) -> datasets.Dataset:
    """A view of `dataset` whose rows are `{"pixel_values", "attention_map"}` (via `Dataset.with_transform`).

    Collate its rows with `stack_pretrain_batch`. The original dataset is left untouched.
    """
    missing = [c for c in ([image_column] + ([attention_map_column] if require_attention_map else []))
               if c not in dataset.column_names]
    if missing:
        raise ValueError(f"column(s) {missing} not found; the dataset has columns {dataset.column_names}"
                         + ("; compute attention maps first or pass require_attention_map=False"
                            if attention_map_column in missing else ""))

    def apply(batch: dict[str, list]) -> dict[str, list]:
        examples = [{column: values[index] for column, values in batch.items()}
                    for index in range(len(batch[image_column]))]
        pixel_values, attention_map = transform_examples(examples, transform, image_column, attention_map_column,
                                                         require_attention_map)
        out = {"pixel_values": pixel_values}
        if attention_map is not None:
            out["attention_map"] = list(attention_map)
        return out

    return dataset.with_transform(apply)
