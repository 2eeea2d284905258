"""The one place where stored images become PIL images (`decode_image`) and RGB (`to_rgb_image`).

Pre-training (collator), the evaluations (feature extraction) and the object-discovery map step all decode
through `decode_image`, from the undecoded `datasets.Image(decode=False)` entries (`undecoded_images`), so
that an unreadable file fails with its split, row and path rather than as a bare PIL error inside `datasets`.
They all convert through `to_rgb_image`, so that a 16-bit PNG looks the same to every path.
"""

from __future__ import annotations

import io

import datasets
import numpy as np
from PIL import Image

_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _where(row, split, path) -> str:
    parts = ([f"split {split!r}"] if split is not None else []) + [f"row {row}"]
    return ", ".join(parts) + (f" (file {path})" if path else "")


def decode_image(value, row: int | str = "?", split: str | None = None) -> Image.Image:
    """A `datasets` image entry (PIL image, `{"bytes", "path"}` dict, path, or uint8 array) -> PIL image, decoded.

    Raises a ValueError naming the split, the row and, when the image came from a file, its path, so that one
    bad file in a large dataset can be found.
    """
    path = None
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, dict):
            path = value.get("path")
            if value.get("bytes") is not None:
                image = Image.open(io.BytesIO(value["bytes"]))
            elif path:
                image = Image.open(path)
            else:
                raise ValueError("entry has neither bytes nor path")
        elif isinstance(value, str):
            path = value
            image = Image.open(value)
        elif isinstance(value, np.ndarray):
            if value.dtype != np.uint8 or value.ndim not in (2, 3):
                raise ValueError(f"array images must be uint8 (H, W) or (H, W, C), got {value.dtype} {value.shape}")
            image = Image.fromarray(value)
        elif value is None:
            raise ValueError("entry is None")
        else:
            raise ValueError(f"unsupported image type {type(value).__name__}")
        image.load()  # force the decode here, where the row and the file are known
        return image
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ...); re-raise with the place
        raise ValueError(f"cannot read the image in {_where(row, split, path)}: {error}") from error


def to_rgb_image(image) -> Image.Image:
    """8-bit RGB from a PIL image of any mode (L, P, RGBA, CMYK, 16-bit, 32-bit, float) or a uint8 array (H, W[, C]).

    Alpha is dropped (as transformers' `convert_rgb` does). 16-bit and 32-bit integer images are scaled to
    8 bits (`convert("RGB")` would clip them at 255: a 16-bit photo would come out white); float images in
    [0, 1] are scaled by 255.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 of shape (H, W) or (H, W, C), got dtype {image.dtype} "
                             f"shape {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image or a uint8 numpy array, got {type(image).__name__}")
    if image.mode == "RGB":
        return image
    if image.mode in _INTEGER_MODES:
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0  # float images are usually in [0, 1]
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
    return image.convert("RGB")


def undecoded_images(dataset: datasets.Dataset, column: str = "image") -> datasets.Dataset:
    """`dataset` with `column` cast to `datasets.Image(decode=False)` (rows hold `{"bytes", "path"}`), so that
    `decode_image` decodes it and can name the row and file; unchanged when the column is not a decoding Image."""
    feature = dataset.features.get(column) if dataset.features is not None else None
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F")


def mask_to_array(mask, row) -> np.ndarray:
    """A single-channel mask (PIL image of mode 1/L/P/I/F, or a 2-D array) -> float64 `(H, W)`."""
    if isinstance(mask, np.ndarray) or (isinstance(mask, list) and mask and isinstance(mask[0], list)):
        array = np.asarray(mask, dtype=np.float64)
    else:
        image = decode_image(mask, row)
        if image.mode not in MASK_MODES:
            raise ValueError(
                f"the mask in row {row} has mode {image.mode!r}; a mask must be single-channel ({', '.join(MASK_MODES)})"
            )
        array = np.asarray(image, dtype=np.float64)  # palette images give their indices
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"the mask in row {row} must be a non-empty 2-D array, got shape {array.shape}")
    return array


def mask_fractions(masks, grid_size: int):
    """Object masks (PIL / arrays / undecoded rows) -> float32 `(B, G, G)`: each cell's foreground fraction (area
    pooling of mask > 0 onto the G x G grid), for the map-quality measures and the mask-only baseline."""
    import torch

    from ..modeling_attg_mae import resample_attention_map

    grids = [resample_attention_map(torch.from_numpy(mask_to_array(mask, row) > 0).float()[None],
                                    (grid_size, grid_size)).view(grid_size, grid_size) for row, mask in enumerate(masks)]
    return torch.stack(grids).float()


__all__ = ["MASK_MODES", "decode_image", "mask_fractions", "mask_to_array", "to_rgb_image", "undecoded_images"]
