"""Image transforms that move an attention map together with its image (PIL + torch, no torchvision).

The guided loss weights patch i by the map's value at patch i, so every geometric change of the image must be
applied to the map as well, or the weights land on the wrong patches. Maps cover the whole image on their own
grid (a 14x14 DINO map, a 64x64 object mask, ...). A crop box is therefore carried over in *relative*
coordinates: the map is sampled (nearest cell) at the centres of a fine grid of points covering the box, flipped
with the image, and then area-averaged onto the model's patch grid by
`modeling_attg_mae.modeling_attg_mae.resample_attention_map`, the one resampling function of the package.
Per patch, the samples form a k x k lattice with k = max(pixels per patch, map cells per patch in the box):
each output pixel takes the map cell under its centre, like the image pixel it weights, and a patch gets the
mean over its lattice, i.e. the area-weighted mean of the map cells it covers (exact when cell edges fall on
sample boundaries). The full image with a map already on the patch grid comes back unchanged (to float
rounding). Nearest cells
rather than bilinear interpolation: a map cell is the score of an image region, and blurring it across the
crop would move weight onto neighbouring patches.

The crop of a whole batch of maps is one gather and one area-average (`crop_attention_maps`): the collator decodes
each image and draws its box one by one, then cuts every map at once (`transform_image` + `crop_maps`), which is
where per-sample map handling cost a few percent of the CPU training loop (benchmarks/pretrain_throughput.py).

`PretrainTransform` is MAE's pre-training augmentation (RandomResizedCrop scale (0.2, 1), ratio (3/4, 4/3),
bicubic, horizontal flip, ImageNet normalisation); `EvalTransform` is resize(size * 256 / 224) + center crop.
Both are callables `(image, attention_map=None, generator=None) -> (pixel_values (3, S, S), map (gh, gw) | None)`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from ..modeling_attg_mae import resample_attention_map
from .images import to_rgb_image  # noqa: F401  (re-exported: the one RGB conversion)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Interpolation = Literal["bicubic", "bilinear", "nearest"]
_PIL_RESAMPLING = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class CropParameters:
    """A crop box in pixels of the source image (`top`, `left`, `height`, `width`) and whether to flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


@dataclass(frozen=True)
class MapCrop:
    """Where an image's map must be cut: the image's crop `box` `(x0, y0, x1, y1)` in relative coordinates (0..1)
    of the source image, and whether the crop was mirrored left-right."""

    box: tuple[float, float, float, float]
    flip: bool = False


def to_normalized_tensor(image: Image.Image, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """ToTensor + Normalize: RGB PIL image -> float32 `(3, H, W)`, `(x / 255 - mean) / std`."""
    array = np.asarray(to_rgb_image(image), dtype=np.float32) / 255.0  # (H, W, 3)
    pixels = torch.from_numpy(array).permute(2, 0, 1)  # (3, H, W)
    mean = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (pixels - mean) / std


def as_attention_map(attention_map) -> torch.Tensor:
    """A float32 `(h, w)` map from a tensor, array, nested list (a `datasets` Array2D row) or PIL image.

    A flat map of square length is read as a square grid; a PIL image (e.g. an "L" object mask) is scaled to
    [0, 1] for 8-bit modes. The map's absolute scale does not matter to the model (it is min-max normalised).
    """
    if isinstance(attention_map, Image.Image):
        scale = 255.0 if attention_map.mode in ("L", "P", "RGB", "RGBA", "LA") else 1.0
        if attention_map.mode not in ("L", "1", "I", "F", "I;16"):
            attention_map = attention_map.convert("L")
        attention_map = np.asarray(attention_map, dtype=np.float32) / scale
    if not torch.is_tensor(attention_map):
        try:
            attention_map = torch.as_tensor(np.asarray(attention_map, dtype=np.float32))
        except (TypeError, ValueError) as error:
            raise ValueError(f"attention_map must be a 2-D grid of numbers (tensor, array, nested list or PIL image), "
                             f"got {type(attention_map).__name__}: {error}") from None
    if attention_map.dim() == 1:
        side = math.isqrt(attention_map.numel())
        if side * side != attention_map.numel() or side == 0:
            raise ValueError(f"a flat attention_map must have a square number of entries, got {attention_map.numel()}; "
                             "pass it as (h, w)")
        attention_map = attention_map.reshape(side, side)
    if attention_map.dim() != 2 or attention_map.numel() == 0:
        raise ValueError(f"attention_map of one image must have shape (h, w), got {tuple(attention_map.shape)}")
    if not (attention_map.is_floating_point() or attention_map.dtype in (torch.uint8, torch.int32, torch.int64,
                                                                          torch.bool)):
        raise ValueError(f"attention_map must be real-valued, got dtype {attention_map.dtype}")
    return attention_map.float()


def as_attention_maps(attention_maps, names=None) -> torch.Tensor | list[torch.Tensor]:
    """The maps of a batch, each read as `as_attention_map` reads it: float32 `(B, h, w)` when they share a grid
    (a `datasets` Array2D column), else a list of `(h, w)` maps.

    Nested lists and arrays of one shape are converted in one numpy call (per-row conversion of a batch of
    python lists is a measurable share of the loader's time); the float32 values are the same either way.
    `names` (e.g. `["row 17", ...]`) prefix the error of a map that cannot be read.
    """
    if torch.is_tensor(attention_maps) and attention_maps.dim() == 3 and attention_maps.numel():
        if not (attention_maps.is_floating_point() or attention_maps.dtype in (torch.uint8, torch.int32, torch.int64,
                                                                                torch.bool)):
            raise ValueError(f"attention maps must be real-valued, got dtype {attention_maps.dtype}")
        return attention_maps.float()
    maps = list(attention_maps)
    if maps and all(isinstance(m, (list, np.ndarray)) for m in maps):
        try:
            batch = np.asarray(maps, dtype=np.float32)
        except (TypeError, ValueError):  # ragged or malformed: read one by one below, which names the bad map
            batch = None
        if batch is not None and batch.ndim == 3 and batch.size:
            return torch.from_numpy(batch)
    decoded = []
    for i, attention_map in enumerate(maps):
        try:
            decoded.append(as_attention_map(attention_map))
        except ValueError as error:
            raise ValueError(f"{names[i] if names is not None else f'map {i}'}: {error}") from None
    return decoded


NON_FINITE_MAP = "attention_map contains NaN or inf values; fix the maps (e.g. recompute them)"


def check_finite_attention_maps(attention_maps, names=None) -> None:
    """Refuse maps with a NaN or inf value, naming the first such map (`names[i]`, e.g. "row 17", else "map i").

    The one check of this fact, made where maps are made or loaded: the collator (stored and self maps, per batch,
    on the CPU), the map step and the self maps (after computing, before the normalisation that would flatten a NaN
    map into a constant one), and online maps under their opt-in debug flag. Not in the model's forward: reading a
    device value on the host there would stall every step and keep `torch.export` / `torch.compile(fullgraph=True)`
    from tracing it (the forward only makes such a map's loss NaN, without reading it).

    Args:
        attention_maps: a `(B, ...)` tensor (on any device: on an accelerator this reads B flags back, a sync) or a
            sequence of per-map tensors / arrays.
    """
    if torch.is_tensor(attention_maps) and attention_maps.dim() > 0:
        finite = torch.isfinite(attention_maps.detach().reshape(len(attention_maps), -1)).all(dim=1).cpu().tolist()
    else:  # isfinite is True everywhere for an integer or bool map
        finite = [bool(torch.isfinite(torch.as_tensor(m)).all()) for m in attention_maps]
    if not all(finite):
        index = finite.index(False)
        raise ValueError(f"{names[index] if names is not None else f'map {index}'}: {NON_FINITE_MAP}")


def check_attention_map_column(dataset, column: str = "attention_map", split: str | None = None,
                               rows: tuple[int, ...] = (0, -1)) -> None:
    """Read a few rows of a map column (first and last by default) as `as_attention_map` will during training,
    so that a column of the wrong kind fails when the data is opened, naming the split, column and row, and
    not at the first training batch."""
    for row in sorted({r % len(dataset) for r in rows}) if len(dataset) else []:
        try:
            as_attention_map(dataset[row][column])
        except ValueError as error:
            feature = dataset.features.get(column) if dataset.features is not None else None
            raise ValueError(f"split {split!r}, column {column!r} ({type(feature).__name__ if feature else '?'}), "
                             f"row {row}: not a usable attention map: {error}") from None


def crop_attention_maps(
    attention_maps,
    crops: Sequence[MapCrop],
    output_size: int,
    grid_size: tuple[int, int],
) -> torch.Tensor:
    """Carry the crops (+ flips) of a batch of images over to their maps, and put the results on the patch grid.

    Args:
        attention_maps: B maps, each `(h, w)` covering its whole source image: a `(B, h, w)` tensor or a sequence
            of anything `as_attention_map` reads (grids may differ between maps).
        crops: B `MapCrop`s, the relative box and flip each image was cut with.
        output_size: side of the output image in pixels (a map gets at least one sample per output pixel).
        grid_size: `(gh, gw)`, the model's patch grid; `output_size` must be divisible by both.

    Returns:
        float32 `(B, gh, gw)`: each patch holds the area-weighted mean of the map cells it covers. Map i's result
        is bit-identical to cutting it alone (`crop_attention_map`): the index arithmetic is the same float64
        numpy expression per element, and the area average runs plane by plane.
    """
    maps = as_attention_maps(attention_maps)
    if len(maps) != len(crops):
        raise ValueError(f"got {len(maps)} attention maps but {len(crops)} crops; pass one crop per map")
    if len(crops) == 0:
        raise ValueError("no attention map to crop (empty batch)")
    grid_h, grid_w = grid_size
    if output_size % grid_h or output_size % grid_w:
        raise ValueError(f"output_size {output_size} is not divisible by the patch grid {grid_h}x{grid_w}")
    boxes = np.array([crop.box for crop in crops], dtype=np.float64).reshape(len(crops), -1)  # (B, 4) x0 y0 x1 y1
    if boxes.shape[1] != 4:
        raise ValueError(f"a crop box is (x0, y0, x1, y1), got {crops[0].box}")
    x0, y0, x1, y1 = boxes.T
    valid = (0.0 <= x0) & (x0 < x1) & (x1 <= 1.0) & (0.0 <= y0) & (y0 < y1) & (y1 <= 1.0)
    if not valid.all():
        box = crops[int(np.argmin(valid))].box
        raise ValueError(f"crop box {box} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (relative coordinates)")
    flips = np.array([bool(crop.flip) for crop in crops])
    heights = np.array([m.shape[0] for m in maps], dtype=np.int64)
    widths = np.array([m.shape[1] for m in maps], dtype=np.int64)
    # samples per patch: one per output pixel (what the image shows), and no sparser than the map's cells
    # inside the box, so that no cell of a fine map (e.g. a full-resolution mask) falls between two samples
    per_patch_h = np.maximum(output_size // grid_h, np.ceil(heights * (y1 - y0) / grid_h).astype(np.int64))
    per_patch_w = np.maximum(output_size // grid_w, np.ceil(widths * (x1 - x0) / grid_w).astype(np.int64))
    # one gather + one area average per group of maps sharing a grid and a sampling lattice (the whole batch for
    # a stored map column at the demo's sizes, where per_patch is output_size // grid)
    groups: dict[tuple[int, int, int, int], list[int]] = {}
    for i, key in enumerate(zip(heights.tolist(), widths.tolist(), per_patch_h.tolist(), per_patch_w.tolist())):
        groups.setdefault(key, []).append(i)
    out = torch.empty(len(crops), grid_h, grid_w)
    for (height, width, pph, ppw), members in groups.items():
        index = np.asarray(members)
        n_h, n_w = grid_h * pph, grid_w * ppw
        # index arithmetic in numpy float64: tiny arrays, where torch's per-op overhead dominates; written as the
        # single-map expression y0 + (k + 0.5) / n * (y1 - y0), broadcast over the group, so each value is the same
        rows_rel = y0[index, None] + (np.arange(n_h, dtype=np.float64) + 0.5) / n_h * (y1 - y0)[index, None]
        cols_rel = x0[index, None] + (np.arange(n_w, dtype=np.float64) + 0.5) / n_w * (x1 - x0)[index, None]
        # the left column of a flipped crop shows the right edge of the box
        cols_rel = np.where(flips[index, None], cols_rel[:, ::-1], cols_rel)
        rows = np.clip(np.floor(rows_rel * height).astype(np.int64), 0, height - 1)  # nearest cell under each sample
        cols = np.clip(np.floor(cols_rel * width).astype(np.int64), 0, width - 1)
        group = maps[torch.from_numpy(index)] if torch.is_tensor(maps) else torch.stack([maps[i] for i in members])
        fine = group[torch.arange(len(members))[:, None, None], torch.from_numpy(rows)[:, :, None],
                     torch.from_numpy(cols)[:, None, :]]  # (b, gh * pph, gw * ppw)
        resampled = resample_attention_map(fine, (grid_h, grid_w)).reshape(-1, grid_h, grid_w)  # (b, gh, gw)
        if len(groups) == 1:
            return resampled
        out[torch.from_numpy(index)] = resampled
    return out


def crop_attention_map(
    attention_map,
    box: tuple[float, float, float, float],
    flip: bool,
    output_size: int,
    grid_size: tuple[int, int],
) -> torch.Tensor:
    """Carry a crop (+ flip) of one image over to its map, and put the result on the patch grid.

    Args:
        attention_map: `(h, w)` map covering the whole source image (anything `as_attention_map` reads).
        box: `(x0, y0, x1, y1)` of the crop in relative coordinates of the source image (0..1).
        flip: whether the crop is mirrored left-right.
        output_size: side of the output image in pixels (the map gets at least one sample per output pixel).
        grid_size: `(gh, gw)`, the model's patch grid; `output_size` must be divisible by both.

    Returns:
        float32 `(gh, gw)`: each patch holds the area-weighted mean of the map cells it covers
        (`crop_attention_maps` of a batch of one).
    """
    return crop_attention_maps([as_attention_map(attention_map)], [MapCrop(tuple(box), bool(flip))], output_size,
                               grid_size)[0]


def _check_size(size: int, patch_size: int | None) -> tuple[int, int] | None:
    if not (isinstance(size, int) and size > 0):
        raise ValueError(f"size must be a positive int (square output), got {size!r}")
    if patch_size is None:
        return None
    if not (isinstance(patch_size, int) and patch_size > 0) or size % patch_size:
        raise ValueError(f"size {size} must be a positive multiple of patch_size {patch_size!r}")
    return size // patch_size, size // patch_size


def _check_normalization(mean, std):
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 entries (RGB), got mean={mean} std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std entries must be > 0, got {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


class JointRandomResizedCrop:
    """RandomResizedCrop + horizontal flip applied with the same box and flip to an image and its attention map.

    Args:
        size: side of the square output image, pixels.
        patch_size: the model's patch size; the map is returned on the `(size // patch_size)` square grid.
        scale: range of the crop's area as a fraction of the image's (MAE: (0.2, 1.0)).
        ratio: range of the crop's aspect ratio width / height, sampled log-uniformly (MAE: (3/4, 4/3)).
        interpolation: image resampling filter.
        flip_probability: probability of a left-right flip.
        seed: None draws from torch's global RNG (which a DataLoader seeds per worker); an int gives this object
            its own `torch.Generator`, seeded from `seed` and the DataLoader worker id (so workers differ).
    """

    def __init__(
        self,
        size: int,
        patch_size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: Interpolation = "bicubic",
        flip_probability: float = 0.5,
        seed: int | None = None,
    ):
        self.grid_size = _check_size(size, patch_size)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {ratio}")
        if interpolation not in _PIL_RESAMPLING:
            raise ValueError(f"interpolation must be one of {list(_PIL_RESAMPLING)}, got {interpolation!r}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        self.size, self.patch_size = size, patch_size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation, self.flip_probability, self.seed = interpolation, flip_probability, seed
        self._generator, self._generator_owner = None, None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_generator"], state["_generator_owner"] = None, None  # each process / worker seeds its own
        return state

    def _resolve_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        if generator is not None or self.seed is None:
            return generator
        worker = torch.utils.data.get_worker_info()
        owner = (os.getpid(), None if worker is None else worker.id)
        if self._generator_owner != owner:  # a forked DataLoader worker must not replay its parent's stream
            offset = 0 if worker is None else worker.id + 1
            self._generator = torch.Generator().manual_seed(self.seed + 1_000_003 * offset)
            self._generator_owner = owner
        return self._generator

    def sample_parameters(self, height: int, width: int, generator: torch.Generator | None = None) -> CropParameters:
        """torchvision's RandomResizedCrop.get_params (10 tries, then a central crop) plus the flip draw."""
        generator = self._resolve_generator(generator)
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        box = None
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio, generator=generator).item())
            crop_w = int(round(math.sqrt(target_area * aspect)))
            crop_h = int(round(math.sqrt(target_area / aspect)))
            if 0 < crop_w <= width and 0 < crop_h <= height:
                top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator).item())
                left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator).item())
                box = (top, left, crop_h, crop_w)
                break
        if box is None:  # central crop with the ratio clamped into range
            in_ratio = width / height
            if in_ratio < self.ratio[0]:
                crop_w, crop_h = width, int(round(width / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                crop_h, crop_w = height, int(round(height * self.ratio[1]))
            else:
                crop_w, crop_h = width, height
            box = ((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)
        flip = bool(torch.rand(1, generator=generator).item() < self.flip_probability)
        return CropParameters(*box, flip=flip)

    def apply_to_image(self, image, parameters: CropParameters) -> tuple[Image.Image, MapCrop]:
        """Crop, resize and flip `image` with the given parameters.

        Returns `(PIL RGB image size x size, the MapCrop that carries the same cut over to its map)`.
        """
        image = to_rgb_image(image)
        width, height = image.size
        p = parameters
        if not (0 <= p.top and 0 <= p.left and 0 < p.height and 0 < p.width
                and p.top + p.height <= height and p.left + p.width <= width):
            raise ValueError(f"crop {p} does not fit in the {width}x{height} image")
        box = (p.left, p.top, p.left + p.width, p.top + p.height)
        # resize(box=...) is crop-then-resize in one resampling pass
        image = image.resize((self.size, self.size), resample=_PIL_RESAMPLING[self.interpolation], box=box)
        if p.flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image, MapCrop((box[0] / width, box[1] / height, box[2] / width, box[3] / height), p.flip)

    def apply(self, image, attention_map, parameters: CropParameters):
        """Crop, resize and flip `image` and `attention_map` (`(h, w)` or None) with the given parameters.

        Returns `(PIL RGB image size x size, map float32 (gh, gw) or None)`.
        """
        image, crop = self.apply_to_image(image, parameters)
        if attention_map is None:
            return image, None
        return image, crop_attention_map(attention_map, crop.box, crop.flip, self.size, self.grid_size)

    def __call__(self, image, attention_map=None, generator: torch.Generator | None = None):
        """Sample a box and a flip, apply them to both. Returns `(PIL image, map (gh, gw) or None)`."""
        image = to_rgb_image(image)
        parameters = self.sample_parameters(image.size[1], image.size[0], generator)
        return self.apply(image, attention_map, parameters)


class PretrainTransform:
    """MAE pre-training augmentation for an image and its map: `JointRandomResizedCrop`, then ToTensor + Normalize.

    Args: those of `JointRandomResizedCrop`, plus `mean` / `std` (ImageNet's by default; use the checkpoint's
    image processor values when continuing from one).

    Call: `(image, attention_map=None, generator=None) -> (pixel_values float32 (3, size, size),
    attention_map float32 (size // patch_size, size // patch_size) or None)`. For a batch (the collator):
    `transform_image` per image, then `crop_maps` once for all maps; the same numbers as calling it per image.
    """

    def __init__(
        self,
        size: int,
        patch_size: int,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: Interpolation = "bicubic",
        flip_probability: float = 0.5,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int | None = None,
    ):
        self.crop = JointRandomResizedCrop(size, patch_size, scale, ratio, interpolation, flip_probability, seed)
        self.mean, self.std = _check_normalization(mean, std)
        self.size, self.patch_size, self.grid_size = size, patch_size, self.crop.grid_size

    def transform_image(self, image, generator: torch.Generator | None = None) -> tuple[torch.Tensor, MapCrop]:
        """Draw a box and a flip, apply them to `image`. Returns `(pixel_values (3, size, size), MapCrop)`."""
        image = to_rgb_image(image)
        parameters = self.crop.sample_parameters(image.size[1], image.size[0], generator)
        image, crop = self.crop.apply_to_image(image, parameters)
        return to_normalized_tensor(image, self.mean, self.std), crop

    def crop_maps(self, attention_maps, crops: Sequence[MapCrop]) -> torch.Tensor:
        """The maps of a batch cut like their images: float32 `(B, gh, gw)` (`crop_attention_maps`)."""
        return crop_attention_maps(attention_maps, crops, self.size, self.grid_size)

    def __call__(self, image, attention_map=None, generator: torch.Generator | None = None):
        pixel_values, crop = self.transform_image(image, generator)
        if attention_map is None:
            return pixel_values, None
        return pixel_values, self.crop_maps([as_attention_map(attention_map)], [crop])[0]


class EvalTransform:
    """Evaluation preprocessing: resize the shorter side to `int(size * 256 / 224)`, center crop `size`, normalise.

    Deterministic. When `patch_size` is given, an attention map is cropped with the same (relative) box and
    returned on the `(size // patch_size)` grid; without it, passing a map is an error.

    Call: `(image, attention_map=None, generator=None) -> (pixel_values float32 (3, size, size), map or None)`;
    `generator` is accepted (and unused) so that both transforms share one signature (also `transform_image` /
    `crop_maps`, the batch route).
    """

    def __init__(
        self,
        size: int,
        patch_size: int | None = None,
        interpolation: Interpolation = "bicubic",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        resize_ratio: float = 256 / 224,
    ):
        self.grid_size = _check_size(size, patch_size)
        if interpolation not in _PIL_RESAMPLING:
            raise ValueError(f"interpolation must be one of {list(_PIL_RESAMPLING)}, got {interpolation!r}")
        if not resize_ratio >= 1.0:
            raise ValueError(f"resize_ratio must be >= 1 (the center crop must fit), got {resize_ratio}")
        self.size, self.patch_size, self.interpolation = size, patch_size, interpolation
        self.resize_size = int(size * resize_ratio)
        self.mean, self.std = _check_normalization(mean, std)

    def transform_image(self, image, generator: torch.Generator | None = None) -> tuple[torch.Tensor, MapCrop]:
        """Resize, center crop, normalise. Returns `(pixel_values (3, size, size), MapCrop)`; `generator` unused."""
        image = to_rgb_image(image)
        width, height = image.size
        # torchvision Resize(int): the shorter side becomes resize_size, the other keeps the aspect (floored)
        if width <= height:
            new_w, new_h = self.resize_size, int(self.resize_size * height / width)
        else:
            new_w, new_h = int(self.resize_size * width / height), self.resize_size
        image = image.resize((new_w, new_h), resample=_PIL_RESAMPLING[self.interpolation])
        top, left = int(round((new_h - self.size) / 2.0)), int(round((new_w - self.size) / 2.0))
        image = image.crop((left, top, left + self.size, top + self.size))
        # the resize keeps relative coordinates, so the crop's box in the resized image is the map's box
        box = (left / new_w, top / new_h, (left + self.size) / new_w, (top + self.size) / new_h)
        return to_normalized_tensor(image, self.mean, self.std), MapCrop(box, False)

    def crop_maps(self, attention_maps, crops: Sequence[MapCrop]) -> torch.Tensor:
        """The maps of a batch cut like their images: float32 `(B, gh, gw)` (`crop_attention_maps`)."""
        if self.grid_size is None:
            raise ValueError("EvalTransform got an attention_map but no patch_size: pass patch_size=<the model's> "
                             "to crop the map onto the patch grid")
        return crop_attention_maps(attention_maps, crops, self.size, self.grid_size)

    def __call__(self, image, attention_map=None, generator: torch.Generator | None = None):
        pixel_values, crop = self.transform_image(image, generator)
        if attention_map is None:
            return pixel_values, None
        return pixel_values, self.crop_maps([as_attention_map(attention_map)], [crop])[0]
