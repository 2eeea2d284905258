"""Online maps: the attention map of every training batch, computed on the training device from the augmented crop.

No stored map column, no map cropping in the loader, exact alignment with the crop the model sees, and it works
with a streaming source. The price is one detector forward per batch (benchmarks/pretrain_throughput.py measures
it against stored maps).

    maps = OnlineAttentionMaps.build("dino", "facebook/dino-vits16", device="cuda", dtype="bfloat16",
                                     image_mean=run_mean, image_std=run_std)
    attention_map = maps(pixel_values)  # (B, h, w) on the detector's grid, min-max normalised per image

`pixel_values` are normalised with the run's mean / std; they are de-normalised to [0, 1] and converted to the
detector's input (its size, its mean / std) by the method's own tensor path (`preprocess_pixels`), so the stored
and the online path share every step but the decode: for an identity crop the two give the same map up to the
resize (none when the detector's input size is the crop's) and the stored column's float16
(tests/test_label_free.py).

The detector is frozen (`requires_grad_(False)`), in eval mode, run under `torch.no_grad` in the training precision.
It is held by the trainer, never registered on the model: it is not in the state dict, the optimizer or a
checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, check_finite_attention_maps
from ..modeling_attg_mae import normalize_attention_map
from .registry import METHODS, ObjectDiscoveryMethod, build_method



def online_methods() -> tuple[str, ...]:
    """The registered methods with a tensor path (read when asked: the registry fills as the methods import)."""
    return tuple(sorted(name for name, cls in METHODS.items() if cls.online))


def check_online_method(method: str, flag: str = "--attention_method") -> None:
    if method not in METHODS or not METHODS[method].online:
        raise ValueError(f"{flag} {method!r} cannot give online maps (computed from the augmented crop on the "
                         f"training device); choose one of {online_methods()}")


class OnlineAttentionMaps:
    """`maps(pixel_values) -> (B, h, w)` float32 in [0, 1] (min-max normalised per image), on the pixels' device.

    Args:
        method: a built `ObjectDiscoveryMethod` with a tensor path (dino, tokencut, gradcam, spectral_residual).
        image_mean, image_std: the normalisation of the training `pixel_values`, undone before the detector's own.
        check_finite: a debug flag: refuse a map with NaN or inf values when it is made (`check_finite_attention_maps`).
            Off by default: on an accelerator the check reads the maps back on the host every batch, a pipeline
            stall. Without it such a map is not flattened into a constant one: it stays NaN, and the guided loss
            of its batch is NaN (a visible failure, not a silent plain-MAE step).
    """

    def __init__(self, method: ObjectDiscoveryMethod, image_mean: Sequence[float], image_std: Sequence[float],
                 check_finite: bool = False):
        check_online_method(method.name)
        self.method, self.check_finite = method, check_finite
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        model = getattr(method, "model", None)
        if model is not None:  # frozen and in eval mode, whatever the caller built
            model.eval().requires_grad_(False)

    @classmethod
    def build(cls, method: str, model_name_or_path: str | None, device: str | torch.device = "cpu",
              dtype: str = "float32", image_mean: Sequence[float] = IMAGENET_MEAN,
              image_std: Sequence[float] = IMAGENET_STD, check_finite: bool = False,
              **params) -> "OnlineAttentionMaps":
        check_online_method(method)
        if METHODS[method].needs_model:
            params["dtype"] = dtype
        return cls(build_method(method, model_name_or_path, device=device, **params), image_mean, image_std,
                   check_finite)

    @property
    def detector(self) -> torch.nn.Module | None:
        return getattr(self.method, "model", None)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"online maps need pixel_values of shape (B, 3, H, W), got {tuple(pixel_values.shape)}")
        device = self.method.device
        mean = torch.tensor(self.image_mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        rgb = (pixel_values.detach().to(device).float() * std + mean).clamp_(0.0, 1.0)  # the crop in [0, 1]
        maps = self.method.compute(self.method.preprocess_pixels(rgb)).float()  # (B, h, w), the detector's grid
        batch, height, width = maps.shape
        if self.check_finite:
            check_finite_attention_maps(maps)
        # normalised as the stored column is (AttentionMapStep): the loss does it anyway, object_loss_share reads it;
        # a map with NaN or inf stays NaN through it (see check_finite)
        maps = normalize_attention_map(maps.reshape(batch, -1)).view(batch, height, width)
        return maps.to(pixel_values.device)
