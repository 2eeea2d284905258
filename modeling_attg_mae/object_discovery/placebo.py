"""Placebo maps: the AttG loss with maps that carry no object information for the image they weight.

"Object guidance helps" needs AttG above MAE *and* above a placebo; otherwise the gain may come from any
re-weighting of the loss (fewer effective patches, a centre bias, a larger loss scale). Two placebos:

* `permuted`: each training batch's maps (cut with each image's own crop) are handed to the other images of the
  batch by a seeded derangement: the maps the loss sees have exactly the batch's distribution (the same multiset
  of maps), but no image gets its own. The derangement is drawn from (seed, epoch, the batch's rows), so a resumed
  run sees the same one.
* `centre`: one fixed map for every image, a centred Gaussian (sd a quarter of the grid side) on the patch grid:
  a centre prior with no per-image information.

`PlaceboCollator` wraps the run's collator. The own image's map stays in the batch as `object_map`, which the
trainer reads for `object_loss_share` (the share of the loss on the image's own object) and drops before the
forward. Evaluation batches and pictures keep the real maps.
"""

from __future__ import annotations

import torch

from ..seeding import seeded_generator

PLACEBOS = ("permuted", "centre")
OBJECT_MAP_KEY = "object_map"
CENTRE_SD = 0.25  # of the grid side


def derangement(num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation `p` of `range(num)` with `p[i] != i` for every i: one cycle through a random order
    (image `order[j]` takes the map of `order[j + 1]`). Needs num >= 2."""
    if num < 2:
        raise ValueError(f"a derangement needs at least 2 items (no image may keep its own map), got {num}")
    order = torch.randperm(num, generator=generator)
    permutation = torch.empty(num, dtype=torch.long)
    permutation[order] = order.roll(-1)
    return permutation


def centre_prior(grid_h: int, grid_w: int, sd: float = CENTRE_SD) -> torch.Tensor:
    """`(grid_h, grid_w)` float32: a Gaussian centred on the grid, its peak 1, sd `sd` of each side."""
    rows = (torch.arange(grid_h, dtype=torch.float32) + 0.5) / grid_h - 0.5
    cols = (torch.arange(grid_w, dtype=torch.float32) + 0.5) / grid_w - 0.5
    return torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sd**2))


def placebo_maps(maps: torch.Tensor, placebo: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The maps the loss sees instead of `maps` `(B, gh, gw)`."""
    if placebo == "permuted":
        return maps[derangement(maps.shape[0], generator)]
    if placebo == "centre":
        return centre_prior(*maps.shape[1:]).expand_as(maps).clone().to(maps.dtype)
    raise ValueError(f"unknown placebo {placebo!r}; expected one of {PLACEBOS}")


def check_placebo(placebo: str | None) -> None:
    if placebo is not None and placebo not in PLACEBOS:
        raise ValueError(f"--attention_placebo must be one of {PLACEBOS} (or unset), got {placebo!r}")


def check_placebo_batches(placebo: str | None, num_rows: int, batch_size: int, world_size: int = 1,
                          drop_last: bool = False) -> None:
    """Refuse, before any map or training work, a permuted placebo whose epochs end in a batch of one image (which
    no other image's map can reach). With several processes each reads ceil(rows / processes) rows (the sampler
    pads the last ones), in batches of `batch_size`."""
    if placebo != "permuted" or drop_last:
        return
    per_process = -(-num_rows // world_size)
    if per_process % batch_size == 1:
        raise ValueError(f"--attention_placebo permuted hands each image another image of its batch's map, but "
                         f"{num_rows} training rows in batches of {batch_size}"
                         + (f" on {world_size} processes" if world_size > 1 else "")
                         + " leave a last batch of one image: add --dataloader_drop_last, or choose another batch size")


class PlaceboCollator:
    """The run's collator with the batch's maps replaced by the placebo's; the real ones kept as `object_map`."""

    def __init__(self, collator, placebo: str, seed: int, index_column: str = "__index__"):
        check_placebo(placebo)
        self.collator, self.placebo, self.seed, self.index_column = collator, placebo, seed, index_column

    @property
    def epoch(self):
        return self.collator.epoch

    @epoch.setter
    def epoch(self, value):  # AugmentationEpochCallback sets the epoch: the wrapped collator's crops need it
        self.collator.epoch = value

    def __call__(self, examples):
        batch = self.collator(examples)
        maps = batch.get("attention_map")
        if maps is None:
            raise ValueError(f"the {self.placebo} placebo replaces the batch's attention maps, but the batch has "
                             "none: it needs a stored map source (--attention_method, not online or self maps)")
        rows = [int(example.get(self.index_column, index)) for index, example in enumerate(examples)]
        generator = seeded_generator(self.seed, int(self.epoch), min(rows), len(rows))
        if maps.shape[0] < 2 and self.placebo == "permuted":
            raise ValueError(f"a batch of one image (row {rows[0]}) cannot take another image's map: use "
                             "--dataloader_drop_last, or a batch size that does not leave one image over")
        return {**batch, "attention_map": placebo_maps(maps, self.placebo, generator), OBJECT_MAP_KEY: maps}


__all__ = ["CENTRE_SD", "OBJECT_MAP_KEY", "PLACEBOS", "PlaceboCollator", "centre_prior", "check_placebo",
           "check_placebo_batches",
           "derangement", "placebo_maps"]
