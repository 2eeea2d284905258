"""MAE's fine-tuning augmentation without torchvision: RandomResizedCrop (scale 0.08-1) + flip, RandAugment
("rand-m9-mstd0.5-inc1"), normalisation, RandomErasing (p 0.25, per-pixel noise); and its evaluation transform
(`fine_tune_eval_transform`).

RandAugment and RandomErasing follow timm's `auto_augment.py` / `random_erasing.py` (Apache-2.0), which MAE's
`main_finetune.py` calls through `timm.data.create_transform`; timm itself is not a dependency because its import
needs torchvision's compiled ops, which the PyPI torchvision wheel does not provide for a CPU torch build. Only the
operations and level mappings of the "increasing" op set MAE uses are kept. Every random draw comes from the
generators passed in, so a (seed, epoch, image) triple always gives the same augmented image.
"""

from __future__ import annotations

import math
import random

import torch
from PIL import Image, ImageEnhance, ImageOps

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, JointRandomResizedCrop, to_normalized_tensor

_MAX_LEVEL = 10.0


def eval_resize_ratio(image_size: int) -> float:
    """Shorter side before the center crop, over the crop: MAE's `main_finetune.py` (`build_transform`) takes
    crop_pct 224/256 up to 224 px and 1.0 above, i.e. a larger image is resized to its size and not cropped further."""
    return 256 / 224 if image_size <= 224 else 1.0


def fine_tune_image_processor(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The image processor saved with every fine-tuned model, and the evaluation's preprocessing itself (see
    `fine_tune_eval_transform`): a stock `CLIPImageProcessor` (PIL backend), bicubic resize of the shorter side to
    `int(S * eval_resize_ratio(S))`, center crop S, rescale, normalise. A `ViTImageProcessor` cannot crop (it
    resizes the whole image to S x S), so the stock image-classification pipeline on the saved model disagreed with
    the reported accuracy on some images."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": int(image_size * eval_resize_ratio(image_size))},
        crop_size={"height": image_size, "width": image_size}, resample=3, image_mean=list(mean), image_std=list(std),
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True, do_convert_rgb=True)


class _ProcessorPixels:
    """`image -> pixel_values (3, S, S)` by an image processor, after `to_rgb_image` (which scales 16-bit images
    to 8 bits, where PIL's conversion inside the processor would clip them white; 8-bit images pass unchanged)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        from ..data.images import to_rgb_image

        return self.processor(to_rgb_image(image), return_tensors="pt")["pixel_values"][0]


def fine_tune_eval_transform(image_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """`image -> pixel_values (3, S, S)`: MAE's evaluation (bicubic resize of the shorter side to
    `int(S * eval_resize_ratio(S))`, center crop S, normalise), computed by the saved image processor
    (`fine_tune_image_processor`), so that the stock pipeline on a fine-tuned model gives the reported accuracy.
    One difference from torchvision's crop, which MAE uses: the crop's offset is transformers' `(w - S) // 2`, not
    `round((w - S) / 2)`, at most one pixel apart."""
    return _ProcessorPixels(fine_tune_image_processor(image_size, mean, std))


def fill_color(mean) -> tuple[int, ...]:
    """Pixels an op uncovers (rotate, shear, translate): the normalisation mean in 0-255, as timm's
    `transforms_imagenet_train` sets `img_mean`; they normalise to about 0. ImageNet's mean gives (124, 116, 104)."""
    return tuple(min(255, round(255 * float(m))) for m in mean)


_FILL = fill_color(IMAGENET_MEAN)


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(image, matrix, fill):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BICUBIC, fillcolor=fill)


def _posterize(image, bits: int):
    # timm's "increasing" level reaches 0 bits at magnitude 10, i.e. a black image (old Pillow's posterize(img, 0));
    # Pillow 13 refuses bits < 1, so the 0-bit case is the lookup table it would have used
    if bits >= 1:
        return ImageOps.posterize(image, bits)
    return image.point([0] * 256 * len(image.getbands()))


def _solarize_add(image, add):
    table = [min(255, i + add) if i < 128 else i for i in range(256)]
    return image.point(table * len(image.getbands()))


# name -> (image, level in [0, 10], rng, fill) -> image; levels map as timm's `_RAND_INCREASING_TRANSFORMS` do
RAND_AUGMENT_OPS = {
    "AutoContrast": lambda im, m, rng, fill: ImageOps.autocontrast(im),
    "Equalize": lambda im, m, rng, fill: ImageOps.equalize(im),
    "Invert": lambda im, m, rng, fill: ImageOps.invert(im),
    "Rotate": lambda im, m, rng, fill: im.rotate(_signed(m / _MAX_LEVEL * 30.0, rng), resample=Image.BICUBIC,
                                                 fillcolor=fill),
    "PosterizeIncreasing": lambda im, m, rng, fill: _posterize(im, 4 - int(m / _MAX_LEVEL * 4)),
    "SolarizeIncreasing": lambda im, m, rng, fill: ImageOps.solarize(im, 256 - int(m / _MAX_LEVEL * 256)),
    "SolarizeAdd": lambda im, m, rng, fill: _solarize_add(im, int(m / _MAX_LEVEL * 110)),
    "ColorIncreasing": lambda im, m, rng, fill: ImageEnhance.Color(im).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9, rng)),
    "ContrastIncreasing": lambda im, m, rng, fill: ImageEnhance.Contrast(im).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9, rng)),
    "BrightnessIncreasing": lambda im, m, rng, fill: ImageEnhance.Brightness(im).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9, rng)),
    "SharpnessIncreasing": lambda im, m, rng, fill: ImageEnhance.Sharpness(im).enhance(1.0 + _signed(m / _MAX_LEVEL * 0.9, rng)),
    "ShearX": lambda im, m, rng, fill: _affine(im, (1, _signed(m / _MAX_LEVEL * 0.3, rng), 0, 0, 1, 0), fill),
    "ShearY": lambda im, m, rng, fill: _affine(im, (1, 0, 0, _signed(m / _MAX_LEVEL * 0.3, rng), 1, 0), fill),
    "TranslateXRel": lambda im, m, rng, fill: _affine(im, (1, 0, _signed(m / _MAX_LEVEL * 0.45, rng) * im.size[0], 0, 1, 0), fill),
    "TranslateYRel": lambda im, m, rng, fill: _affine(im, (1, 0, 0, 0, 1, _signed(m / _MAX_LEVEL * 0.45, rng) * im.size[1]), fill),
}


class RandAugment:
    """`num_ops` ops drawn uniformly (with replacement), each applied with probability `prob` at magnitude
    `N(magnitude, magnitude_std)` clipped to [0, 10] (timm's "rand-m9-mstd0.5-inc1": 2 ops, p 0.5, m 9, std 0.5)."""

    def __init__(self, magnitude: float = 9.0, magnitude_std: float = 0.5, num_ops: int = 2, prob: float = 0.5):
        if not 0 <= magnitude <= _MAX_LEVEL or magnitude_std < 0 or num_ops < 0 or not 0 <= prob <= 1:
            raise ValueError(f"RandAugment needs magnitude in [0, 10], magnitude_std >= 0, num_ops >= 0, prob in [0, 1]; "
                             f"got {magnitude}, {magnitude_std}, {num_ops}, {prob}")
        self.magnitude, self.magnitude_std, self.num_ops, self.prob = magnitude, magnitude_std, num_ops, prob
        self.names = list(RAND_AUGMENT_OPS)

    def __call__(self, image: Image.Image, rng: random.Random, fill: tuple[int, ...] = _FILL) -> Image.Image:
        """`fill`: 0-255 colour of uncovered pixels, `fill_color(mean)` of the normalisation that follows."""
        for name in rng.choices(self.names, k=self.num_ops):
            if rng.random() > self.prob:
                continue
            level = self.magnitude if self.magnitude_std == 0 else rng.gauss(self.magnitude, self.magnitude_std)
            image = RAND_AUGMENT_OPS[name](image, min(_MAX_LEVEL, max(0.0, level)), rng, fill)
        return image


def random_erasing(pixels: torch.Tensor, prob: float, generator: torch.Generator,
                   scale=(0.02, 1 / 3), log_ratio=(math.log(0.3), math.log(1 / 0.3))) -> torch.Tensor:
    """timm's RandomErasing, mode "pixel", one box: with probability `prob`, a box of area `scale` of the image and
    aspect in `log_ratio` (10 tries) is filled with N(0, 1) noise (the normalised image's scale). In place."""
    if prob <= 0 or float(torch.rand(1, generator=generator)) >= prob:
        return pixels
    channels, height, width = pixels.shape
    for _ in range(10):
        area = height * width * float(torch.empty(1).uniform_(*scale, generator=generator))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio, generator=generator)))
        box_h, box_w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if box_h < height and box_w < width:
            top = int(torch.randint(0, height - box_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - box_w + 1, (1,), generator=generator))
            pixels[:, top:top + box_h, left:left + box_w] = torch.randn(
                (channels, box_h, box_w), generator=generator, dtype=pixels.dtype)
            break
    return pixels


class FineTuneTrainTransform:
    """`(image, generator) -> pixel_values (3, size, size)`: MAE's fine-tuning training transform.

    `rand_augment=None` and `random_erase_prob=0` leave the bare crop + flip (the benchmark's baseline)."""

    def __init__(self, size: int, patch_size: int, rand_augment: RandAugment | None = None,
                 random_erase_prob: float = 0.25, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if not 0 <= random_erase_prob <= 1:
            raise ValueError(f"--random_erase must be in [0, 1], got {random_erase_prob}")
        self.crop = JointRandomResizedCrop(size, patch_size, scale=(0.08, 1.0))
        self.rand_augment, self.random_erase_prob, self.mean, self.std = rand_augment, random_erase_prob, mean, std
        self.fill = fill_color(mean)  # the checkpoint's mean, not ImageNet's: uncovered pixels normalise to ~0

    def __call__(self, image, generator: torch.Generator) -> torch.Tensor:
        image, _ = self.crop(image, None, generator)
        if self.rand_augment is not None:
            rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
            image = self.rand_augment(image, rng, self.fill)
        pixels = to_normalized_tensor(image, self.mean, self.std)
        return random_erasing(pixels, self.random_erase_prob, generator)


__all__ = ["RandAugment", "RAND_AUGMENT_OPS", "random_erasing", "fill_color", "FineTuneTrainTransform",
           "eval_resize_ratio", "fine_tune_eval_transform", "fine_tune_image_processor"]
