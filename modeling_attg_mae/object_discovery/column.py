"""`column`: an attention map from a mask or segmentation column the dataset already has (e.g. `object_mask`).

Foreground = mask value > `threshold` (0: any labelled pixel; palette segmentations give class indices).
Each mask is area-pooled (bilinear if smaller) to `image_size` with `resample_attention_map`, so the map is
the foreground fraction of each cell; the map step pools it again onto the patch grid.
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..modeling_attg_mae import resample_attention_map
from .preprocessing import decode_image, to_size, _rows
from .registry import ObjectDiscoveryMethod, register

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


@register
class ColumnMap(ObjectDiscoveryMethod):
    """Mask / segmentation column -> foreground-fraction map `(B, H, W)` at `image_size`."""

    name = "column"
    online = False  # reads a dataset column, not pixels

    def __init__(self, image_size: int | Sequence[int] = 224, threshold: float = 0.0, device="cpu"):
        self.image_size = to_size(image_size)
        self.threshold = float(threshold)
        self.device = torch.device(device)

    def preprocess(self, masks, row_offset=None) -> torch.Tensor:
        if len(masks) == 0:
            raise ValueError("preprocess got an empty batch")
        maps = []
        for mask, row in zip(masks, _rows(len(masks), row_offset)):
            foreground = torch.from_numpy(mask_to_array(mask, row) > self.threshold).float()[None]  # (1, h, w)
            maps.append(resample_attention_map(foreground, self.image_size).view(*self.image_size))
        return torch.stack(maps)  # (B, H, W)

    def params(self) -> dict:
        return {"image_size": self.image_size, "threshold": self.threshold}

    def compute(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.float()
