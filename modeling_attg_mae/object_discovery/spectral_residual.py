"""`spectral_residual`: weights-free saliency (Hou & Zhang, CVPR 2007), for offline use or where no detector fits.

On a grayscale image downscaled to 64x64 (the paper's size; here the whole image, aspect not kept):
    L = log |FFT(I)|,  P = angle(FFT(I)),  R = L - box3x3(L),
    S = gaussian_blur(|IFFT(exp(R + i P))|^2).
The 3x3 box filter wraps around (circular padding) because the spectrum is periodic. The paper blurs with
sigma = 8 px at 64 px; the default here is 3 px, because the map is then area-pooled onto the patch grid
(about 4.6 px per cell for a 14x14 grid), which smooths it again.
"""

from collections.abc import Sequence

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .preprocessing import decode_image, to_rgb, to_size, _rows
from .registry import ObjectDiscoveryMethod, register

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's convert("L"): L = R * 299/1000 + G * 587/1000 + B * 114/1000


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of `(B, H, W)`, reflect padding, kernel radius ceil(3 sigma) (capped by the size)."""
    if sigma <= 0:
        return images
    height, width = images.shape[-2:]
    radius = min(math.ceil(3 * sigma), height - 1, width - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(images[:, None], (radius, radius, radius, radius), mode="reflect")  # (B, 1, H + 2r, W + 2r)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))
    return out[:, 0]


def spectral_residual_saliency(gray: torch.Tensor, blur_sigma: float = 3.0) -> torch.Tensor:
    """Spectral-residual saliency of grayscale images `(B, H, W)` in [0, 1] -> `(B, H, W)` float32, >= 0."""
    if gray.dim() != 3:
        raise ValueError(f"gray must have shape (B, H, W), got {tuple(gray.shape)}")
    spectrum = torch.fft.fft2(gray.float())
    log_amplitude = torch.log(spectrum.abs().clamp_min(1e-8))  # a black image has zero amplitude
    phase = torch.angle(spectrum)
    smoothed = F.avg_pool2d(F.pad(log_amplitude[:, None], (1, 1, 1, 1), mode="circular"), 3, stride=1)[:, 0]
    residual = log_amplitude - smoothed
    saliency = torch.fft.ifft2(torch.polar(torch.exp(residual), phase)).abs() ** 2
    return gaussian_blur(saliency, blur_sigma)


@register
class SpectralResidual(ObjectDiscoveryMethod):
    """Spectral residual saliency; no weights.

    Args:
        image_size: size of the downscaled grayscale image (64, as in the paper).
        blur_sigma: Gaussian blur in pixels of the downscaled image (3.0; the paper uses 8).
    """

    name = "spectral_residual"

    def __init__(self, image_size: int | Sequence[int] = 64, blur_sigma: float = 3.0, device="cpu"):
        self.image_size = to_size(image_size)
        if min(self.image_size) < 4:
            raise ValueError(f"image_size must be at least 4 px, got {self.image_size}")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        self.blur_sigma = float(blur_sigma)
        self.device = torch.device(device)

    def preprocess(self, images, row_offset=None) -> torch.Tensor:
        """Images -> grayscale `(B, H, W)` in [0, 1] (bicubic resize of the whole image)."""
        if len(images) == 0:
            raise ValueError("preprocess got an empty batch")
        height, width = self.image_size
        arrays = []
        for image, row in zip(images, _rows(len(images), row_offset)):
            gray = to_rgb(decode_image(image, row)).convert("L").resize((width, height), Image.BICUBIC)
            arrays.append(np.asarray(gray, dtype=np.float32) / 255.0)
        return torch.from_numpy(np.stack(arrays))

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """RGB `(B, 3, H, W)` in [0, 1] -> grayscale `(B, h, w)`: PIL's "L" weights (ITU-R 601-2), then the
        bicubic resize of `preprocess` (unlike PIL, the gray values are not rounded to 1/255)."""
        from .preprocessing import resize_pixels

        weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        gray = (pixels.float() * weights).sum(dim=1, keepdim=True)  # (B, 1, H, W)
        return resize_pixels(gray, self.image_size)[:, 0]

    def params(self) -> dict:
        return {"image_size": self.image_size, "blur_sigma": self.blur_sigma}

    def compute(self, gray: torch.Tensor) -> torch.Tensor:
        return spectral_residual_saliency(gray, self.blur_sigma)
