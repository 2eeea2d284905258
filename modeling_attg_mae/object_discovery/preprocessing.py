"""Image preprocessing for the detectors (PIL + torch, no torchvision).

Every detector sees the WHOLE image, resized as a whole to its input size: the aspect ratio is not kept.
The map therefore covers the whole image with relative coordinates, and the data pipeline later applies the
training crop to the map with the same relative box as to the image. (Official TokenCut pads instead of
resizing; with a fixed-size map column a whole-image resize is the only choice that keeps every pixel.)
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# one decode and one RGB conversion for every path (pre-training, evaluation, maps): they live in the data module
from ..data.images import decode_image
from ..data.images import to_rgb_image as to_rgb
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (the one home; re-exported for the detectors)



def to_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`224` or `(224, 224)` -> `(height, width)`, validated."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size


def preprocess_images(
    images: Sequence,
    image_size: int | Sequence[int],
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    row_offset: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Images -> normalised `pixel_values` of shape `(B, 3, H, W)`, float32.

    Each image is converted to RGB, resized as a whole (bicubic, aspect not kept) to `image_size`, scaled to
    [0, 1] and normalised with `image_mean` / `image_std`. `row_offset` (first row index, or one index per
    image) only serves error messages.
    """
    height, width = to_size(image_size)
    if len(images) == 0:
        raise ValueError("preprocess_images got an empty batch")
    rows = _rows(len(images), row_offset)
    arrays = []
    for image, row in zip(images, rows):
        rgb = to_rgb(decode_image(image, row))
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _rows(count: int, row_offset) -> list:
    if row_offset is None:
        return [f"{i} of the batch" for i in range(count)]
    if isinstance(row_offset, int):
        return list(range(row_offset, row_offset + count))
    rows = list(row_offset)
    if len(rows) != count:
        raise ValueError(f"got {len(rows)} row indices for {count} images")
    return rows


def resize_pixels(pixels: torch.Tensor, image_size: int | Sequence[int]) -> torch.Tensor:
    """The tensor twin of the PIL path's resize: `(B, C, H, W)` in [0, 1] -> `(B, C, *image_size)` in [0, 1].

    Bicubic with antialiasing (torch's PIL-compatible filter when shrinking), clamped to [0, 1] as PIL's uint8
    output is; unchanged when the size already matches. Online maps (computed on the training device from the
    augmented crop) go through here, so that they see what the stored maps' detector saw, up to PIL's uint8
    rounding.
    """
    height, width = to_size(image_size)
    if tuple(pixels.shape[-2:]) == (height, width):
        return pixels
    resized = F.interpolate(pixels.float(), size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp_(0.0, 1.0)


def normalize_pixels(pixels: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]) -> torch.Tensor:
    """`(B, 3, H, W)` in [0, 1] -> `(pixels - mean) / std` with the detector's statistics, on the pixels' device."""
    mean = torch.tensor(image_mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() - mean) / std
