"""Training-free baselines: what a k-NN reads from the images (or the maps) with no training at all.

A study whose pre-trained encoders do no better than these cannot say whether pre-training, let alone the guided
loss, helped: the class is then readable from a statistic a histogram or a pixel comparison computes. Every study
report shows them as rows beside the arms, measured with the same k-NN (`knn_classify`, DINO's weighted vote,
cosine similarity, T = 0.07, the train split as the bank) and the same top-1 (percent, one decimal) as the encoders.

* `raw_pixels`: the image, normalised as the encoder's input, flattened: what a comparison of aligned pixels finds
  (the background texture, a centred object's colours).
* `rgb_histogram`: a joint 8 x 8 x 8 RGB histogram of the whole image, square-rooted (the Hellinger embedding, so
  that the cosine is the Bhattacharyya coefficient): the colours, wherever they are.
* `hue_histogram`: a 36-bin hue histogram of the image's saturated pixels (saturation >= 0.5), square-rooted:
  the colour of the object where the object is the most saturated thing in the image.
* `mask`: the object mask alone, averaged onto the patch grid (where the data has masks): what the maps of an
  oracle detector tell about the class. If it classifies, "guidance by the object" is guidance by a label proxy.

The same architecture at random initialisation is the fifth baseline; it goes through the encoders' own evaluation
(it is a checkpoint like theirs), see `benchmarks/attg_vs_mae.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.images import decode_image
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .knn import DEFAULT_TEMPERATURE, knn_classify

TRAINING_FREE = ("raw_pixels", "rgb_histogram", "hue_histogram", "mask")
HISTOGRAM_BINS = 8  # per RGB channel
HUE_BINS = 36
SATURATED = 0.5


def _rgb_arrays(images: Sequence, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 in [0, 1], each image resized (bicubic, as the evaluation transform) if needed."""
    from PIL import Image

    arrays = []
    for row, image in enumerate(images):
        image = decode_image(image, row).convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    return np.stack(arrays)


def raw_pixel_features(images: Sequence, size: int) -> torch.Tensor:
    """`(N, 3 * size * size)`: the pixels normalised with ImageNet's mean and std, as the encoder reads them."""
    mean, std = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)
    pixels = (_rgb_arrays(images, size) - mean) / std
    return torch.from_numpy(pixels.reshape(len(pixels), -1))


def rgb_histogram_features(images: Sequence, size: int, bins: int = HISTOGRAM_BINS) -> torch.Tensor:
    """`(N, bins ** 3)`: the square root of each image's joint RGB histogram (fractions of its pixels)."""
    pixels = _rgb_arrays(images, size)
    index = np.minimum((pixels * bins).astype(np.int64), bins - 1)  # (N, H, W, 3)
    flat = (index[..., 0] * bins + index[..., 1]) * bins + index[..., 2]
    counts = np.stack([np.bincount(row.ravel(), minlength=bins**3) for row in flat]).astype(np.float32)
    return torch.from_numpy(np.sqrt(counts / counts.sum(1, keepdims=True)))


def hue_histogram_features(images: Sequence, size: int, bins: int = HUE_BINS,
                           saturated: float = SATURATED) -> torch.Tensor:
    """`(N, bins)`: the square root of each image's hue histogram over its pixels of saturation >= `saturated`
    (HSV as `colorsys` defines it); an image with no such pixel gets a zero row (cosine 0 to every image)."""
    pixels = _rgb_arrays(images, size)
    high, low = pixels.max(-1), pixels.min(-1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-12), 0.0)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    safe = np.maximum(chroma, 1e-12)
    hue = np.where(high == r, (g - b) / safe, np.where(high == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.mod(hue / 6.0, 1.0)
    index = np.minimum((hue * bins).astype(np.int64), bins - 1)
    keep = (saturation >= saturated) & (chroma > 0)
    counts = np.stack([np.bincount(i[k], minlength=bins) for i, k in zip(index, keep)]).astype(np.float32)
    totals = counts.sum(1, keepdims=True)
    return torch.from_numpy(np.sqrt(counts / np.maximum(totals, 1.0)))


def mask_features(masks: Sequence, grid_size: int) -> torch.Tensor:
    """`(N, grid_size ** 2)`: each object mask's foreground fraction per patch-grid cell."""
    from ..data.images import mask_fractions

    return mask_fractions(masks, grid_size).flatten(1)


def _features(name: str, split, image_column: str, mask_column: str | None, size: int, grid_size: int):
    if name == "mask":
        return mask_features(split[mask_column], grid_size)
    images = split[image_column]
    if name == "raw_pixels":
        return raw_pixel_features(images, size)
    if name == "rgb_histogram":
        return rgb_histogram_features(images, size)
    if name == "hue_histogram":
        return hue_histogram_features(images, size)
    raise ValueError(f"unknown training-free baseline {name!r}; expected one of {TRAINING_FREE}")


def training_free_knn(dataset, train_split: str, eval_splits: Sequence[str], image_size: int, grid_size: int,
                      label_column: str = "label", image_column: str = "image", mask_column: str | None = None,
                      k: int = 20, temperature: float = DEFAULT_TEMPERATURE,
                      baselines: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """`{baseline: {split: k-NN top-1 in percent}}` of the training-free baselines, the train split as the bank.

    `mask` is measured only with a `mask_column` (data with object masks); the others need only the images.
    """
    names = list(baselines) if baselines is not None else [
        name for name in TRAINING_FREE if name != "mask" or mask_column is not None]
    unknown = [name for name in names if name not in TRAINING_FREE]
    if unknown:
        raise ValueError(f"unknown training-free baseline(s) {unknown}; expected some of {TRAINING_FREE}")
    from ..data.loading import align_class_labels

    # class ids by name, the train split's in every split (the one loader's rule): a split encoded on its own would
    # otherwise be scored against other classes' ids
    dataset = align_class_labels(dataset, train_split, label_column, [train_split, *eval_splits], "refuse")
    if "mask" in names and (mask_column is None or mask_column not in dataset[train_split].column_names):
        raise ValueError(f"the mask baseline needs the object masks: column {mask_column!r} is not in the "
                         f"{train_split!r} split (columns {dataset[train_split].column_names})")
    bank_labels = torch.as_tensor(dataset[train_split][label_column])
    num_classes = int(bank_labels.max()) + 1
    results = {}
    for name in names:
        bank = _features(name, dataset[train_split], image_column, mask_column, image_size, grid_size)
        results[name] = {}
        for split in eval_splits:
            queries = _features(name, dataset[split], image_column, mask_column, image_size, grid_size)
            ranked = knn_classify(bank, bank_labels, queries, ks=[k], temperature=temperature,
                                  num_classes=num_classes, num_ranked=1)[k]
            labels = torch.as_tensor(dataset[split][label_column])
            results[name][split] = round(100.0 * float((ranked[:, 0] == labels).float().mean()), 1)
    return results


__all__ = ["TRAINING_FREE", "hue_histogram_features", "mask_features", "raw_pixel_features",
           "rgb_histogram_features", "training_free_knn"]
