"""Image preprocessing for the detectors (PIL + torch, no torchvision).

Every detector sees the WHOLE image, resized as a whole to its input size: the aspect ratio is not kept.
The map therefore covers the whole image with relative coordinates, and the data pipeline later applies the
training crop to the map with the same relative box as to the image. (Official TokenCut pads instead of
resizing; with a fixed-size map column a whole-image resize is the only choice that keeps every pixel.)
"""

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`224` or `(224, 224)` -> `(height, width)`, validated."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size


def decode_image(value, row: int | str = "?") -> Image.Image:
    """A `datasets` image entry (PIL image, `{"bytes", "path"}` dict, path, or uint8 array) -> PIL image.

    Raises a ValueError naming `row` when the entry cannot be read, so that one bad file in a large dataset
    can be found.
    """
    try:
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif value.get("path"):
                image = Image.open(value["path"])
            else:
                raise ValueError("entry has neither bytes nor path")
        elif isinstance(value, str):
            image = Image.open(value)
        elif isinstance(value, np.ndarray):
            if value.dtype != np.uint8 or value.ndim not in (2, 3):
                raise ValueError(f"array images must be uint8 (H, W) or (H, W, C), got {value.dtype} {value.shape}")
            image = Image.fromarray(value)
        elif value is None:
            raise ValueError("entry is None")
        else:
            raise ValueError(f"unsupported image type {type(value).__name__}")
        image.load()  # force the decode here, where the row is known
        return image
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...); re-raise with the row
        raise ValueError(f"cannot read the image in row {row}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette, RGBA, CMYK, 16-bit ... -> 8-bit RGB.

    Alpha is dropped (as transformers' `convert_rgb` does); 16-bit and 32-bit integer images are scaled to
    8 bits instead of being clipped at 255.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0  # float images are usually in [0, 1]
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


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
