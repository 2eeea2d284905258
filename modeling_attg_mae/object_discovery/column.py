"""`column`: an attention map from a mask or segmentation column the dataset already has (e.g. `object_mask`).

Foreground = mask value > `threshold` (0: any labelled pixel; palette segmentations give class indices).
Each mask is area-pooled (bilinear if smaller) to `image_size` with `resample_attention_map`, so the map is
the foreground fraction of each cell; the map step pools it again onto the patch grid.
"""

from collections.abc import Sequence

import torch

from ..data.images import mask_to_array
from ..modeling_attg_mae import resample_attention_map
from .preprocessing import to_size, _rows
from .registry import ObjectDiscoveryMethod, register


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
