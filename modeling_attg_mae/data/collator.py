"""Batching for pre-training: raw examples (`image` [+ `attention_map`]) -> model inputs.

Two equivalent routes, sharing `transform_example`:

* `PretrainCollator(transform)` as the DataLoader / Trainer `data_collator`: the transform runs in the
  DataLoader workers. The Trainer must then keep the raw columns: `remove_unused_columns=False`.
* `with_pretrain_transform(dataset, transform)` (`Dataset.with_transform`) + `stack_pretrain_batch` as the
  collator, for code that indexes the dataset directly.

Output: `pixel_values` float32 `(B, 3, S, S)` and, when the examples have maps, `attention_map` float32
`(B, gh, gw)` on the model's patch grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

import datasets

from .images import decode_image

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def transform_example(example: dict, index: int, transform: Transform, image_column: str = "image",
                      attention_map_column: str = "attention_map", require_attention_map: bool = True,
                      generator: torch.Generator | None = None):
    """Apply `transform(image, attention_map)` to one example; clear errors for what is missing."""
    if image_column not in example:
        raise ValueError(f"example {index} has no {image_column!r} column; it has {sorted(example)}")
    attention_map = example.get(attention_map_column)
    if attention_map is None and require_attention_map:
        raise ValueError(
            f"example {index} has no {attention_map_column!r} (its columns: {sorted(example)}); compute the maps with "
            "the object-discovery step first, or pass require_attention_map=False for a vanilla MAE"
        )
    # decoded here, where the dataset row and the file are known (the dataset keeps the column undecoded,
    # `undecoded_images`); an already decoded PIL image passes through
    row = example.get("__index__", index)
    image = decode_image(example[image_column], row)
    try:
        if generator is None:
            pixel_values, attention_map = transform(image, attention_map)
        else:
            pixel_values, attention_map = transform(image, attention_map, generator=generator)
    except ValueError as error:  # e.g. a malformed map: say which row, so that it can be found and fixed
        raise ValueError(f"row {row}: {error}") from error
    if not (torch.is_tensor(pixel_values) and pixel_values.dim() == 3):
        raise ValueError(f"the transform must return pixel_values of shape (3, S, S), got "
                         f"{getattr(pixel_values, 'shape', type(pixel_values).__name__)}")
    return pixel_values, attention_map


def stack_pretrain_batch(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack `{"pixel_values": (3, S, S)[, "attention_map": (gh, gw)]}` items into a batch."""
    if len(items) == 0:
        raise ValueError("cannot collate an empty batch")
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items]).float()}  # (B, 3, S, S)
    has_map = [item.get("attention_map") is not None for item in items]
    if any(has_map):
        if not all(has_map):
            missing = [i for i, present in enumerate(has_map) if not present]
            raise ValueError(f"examples {missing} of the batch have no attention_map while the others do; "
                             "every example needs one (or none)")
        batch["attention_map"] = torch.stack([item["attention_map"] for item in items]).float()  # (B, gh, gw)
    return batch


class PretrainCollator:
    """`data_collator` turning raw examples into `pixel_values` (B, 3, S, S) and `attention_map` (B, gh, gw).

    Args:
        transform: `PretrainTransform` / `EvalTransform` or any callable with their signature.
        image_column: the column holding the images.
        attention_map_column: the column holding the maps (any grid; a PIL mask works too).
        require_attention_map: raise when an example has no map (AttG); False for a vanilla MAE, in which case
            maps are still passed on when every example of the batch has one.
        seed: with `seed`, examples that carry their dataset row in `index_column` are augmented with a generator
            seeded by (seed, `epoch`, row): the augmentation of a row no longer depends on the global RNG or on
            which batches ran before, so a resumed run sees exactly the crops of the uninterrupted one.
            Set `epoch` before each epoch (the pre-training Trainer does).
    """

    def __init__(self, transform: Transform, image_column: str = "image", attention_map_column: str = "attention_map",
                 require_attention_map: bool = True, seed: int | None = None, index_column: str = "__index__"):
        self.transform = transform
        self.image_column, self.attention_map_column = image_column, attention_map_column
        self.require_attention_map = require_attention_map
        self.seed, self.index_column, self.epoch = seed, index_column, 0

    def _generator(self, example: dict) -> torch.Generator | None:
        if self.seed is None or self.index_column not in example:
            return None
        mixed = (self.seed * 0x9E3779B1 + self.epoch * 0x85EBCA77 + int(example[self.index_column]) * 0xC2B2AE3D)
        return torch.Generator().manual_seed(mixed % (2**63))

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        items = []
        for index, example in enumerate(examples):
            pixel_values, attention_map = transform_example(example, index, self.transform, self.image_column,
                                                            self.attention_map_column, self.require_attention_map,
                                                            self._generator(example))
            items.append({"pixel_values": pixel_values, "attention_map": attention_map})
        return stack_pretrain_batch(items)


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
        size = len(batch[image_column])
        out = {"pixel_values": [], "attention_map": []}
        for index in range(size):
            example = {column: values[index] for column, values in batch.items()}
            pixel_values, attention_map = transform_example(example, index, transform, image_column,
                                                            attention_map_column, require_attention_map)
            out["pixel_values"].append(pixel_values)
            out["attention_map"].append(attention_map)
        if all(m is None for m in out["attention_map"]):
            del out["attention_map"]
        return out

    return dataset.with_transform(apply)
