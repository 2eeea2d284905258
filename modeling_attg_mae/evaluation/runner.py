"""From images to features: the evaluation transforms, and the features of a split (decoded, transformed, encoded,
sharded over processes) with the feature cache shared by every process.

`EvaluationSession.features` (session.py) is the caller for the labelled evaluations; the online k-NN monitor and
retrieval's revisited layout call `extract_split_features` directly. The encoder itself comes from
`model_source.load_encoder`.
"""

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..features import extract_features, extract_multi_scale_features
from ..model_source import EncoderInfo
from .feature_cache import cached_features


class _PixelsOnly:
    """Adapts the data module's `(image, map, generator) -> (pixel_values, map)` transforms to `image -> pixel_values`."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image)[0]


def eval_transform_for(info: EncoderInfo):
    """The data module's `EvalTransform` (resize shorter side to size * 256/224 bicubic, center crop, normalise)."""
    return eval_pixels_transform(info.image_size, info.image_mean, info.image_std)


def eval_pixels_transform(image_size: int, mean, std, resize_ratio: float = 256 / 224):
    """`image -> pixel_values (3, S, S)`: the evaluation transform of every k-NN / probe (offline and online), and of
    fine-tuning with its own `resize_ratio` (`fine_tuning.augment.eval_resize_ratio`)."""
    from ..data.transforms import EvalTransform

    return _PixelsOnly(EvalTransform(image_size, mean=mean, std=std, resize_ratio=resize_ratio))


def probe_train_transform_for(info: EncoderInfo, seed: int | None = None):
    """MAE's linear-probe augmentation: RandomResizedCrop (torchvision's default scale (0.08, 1), bicubic)
    + horizontal flip + normalisation, i.e. the data module's `PretrainTransform` with that scale."""
    from ..data.transforms import PretrainTransform

    transform = PretrainTransform(
        info.image_size, info.patch_size, scale=(0.08, 1.0), mean=info.image_mean, std=info.image_std, seed=seed
    )
    return _PixelsOnly(transform)


def num_classes_of(split_dataset, label_column: str, labels: torch.Tensor) -> int:
    """From the `ClassLabel` feature when there is one (classes absent from a split still count), else max + 1."""
    feature = split_dataset.features[label_column]
    names = getattr(feature, "names", None)
    return len(names) if names else int(labels.max()) + 1


class _TransformedImages(Dataset):
    """The images of a split, decoded by `decode_image` (errors name the split, row and file), then transformed."""

    def __init__(self, split_dataset, indices, image_column: str, transform, split: str | None = None):
        from ..data.images import undecoded_images

        if hasattr(split_dataset, "cast_column"):
            split_dataset = undecoded_images(split_dataset, image_column)
        self.data, self.indices, self.column, self.transform = split_dataset, indices, image_column, transform
        self.split = split

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, position):
        from ..data.images import decode_image

        row = int(self.indices[position])
        value = self.data[row][self.column]
        if torch.is_tensor(value):  # pixels prepared once by the caller (the online k-NN monitor's cache)
            return self.transform(value)
        return self.transform(decode_image(value, row, self.split))


@torch.no_grad()
def extract_split_features(
    model,
    split_dataset,
    image_column: str,
    transform,
    *,
    pooling: str = "cls",
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator=None,
    progress: bool = True,
    split: str | None = None,
    scales=None,
) -> torch.Tensor:
    """Features `(N, D)` of every image of a split (named `split` in error messages), in dataset order; with
    `pooling="tokens"`, the tokens `(N, 1 + P, D)` (see `extract_features`).

    `scales=None`: `extract_features` at the transform's size. A sequence of factors: the retrieval features of
    `extract_multi_scale_features` (position embeddings interpolated, so images of any size; L2-normalised).

    With an `accelerate.Accelerator` of several processes, process r encodes the r-th contiguous shard (padded
    to equal length with the last index), one `gather` collects them, and the padding is dropped: every process
    ends with all N features in order.
    """
    num_images = len(split_dataset)
    if num_images == 0:
        raise ValueError("cannot extract features of an empty split")
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    per_process = -(-num_images // world)
    indices = [min(i, num_images - 1) for i in range(rank * per_process, (rank + 1) * per_process)]
    loader = DataLoader(
        _TransformedImages(split_dataset, indices, image_column, transform, split),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    chunks = []
    for pixel_values in tqdm(loader, desc=f"features [{rank}/{world}]", unit="batch", disable=not progress):
        pixel_values = pixel_values.to(device)
        if scales is None:
            chunks.append(extract_features(model, pixel_values, pooling))  # (b, D) or (b, 1 + P, D)
        else:
            chunks.append(extract_multi_scale_features(model, pixel_values, pooling, scales))  # (b, D)
    features = torch.cat(chunks)  # (per_process, ...)
    if world > 1:
        features = accelerator.gather(features.contiguous())  # (world * per_process, ...), rank-major
    return features[:num_images].cpu()


def cached_features_of_all_processes(cache_dir, key: dict, compute, overwrite: bool = False, accelerator=None):
    """`cached_features` when every process runs this: only the main process writes, and all of them read the
    same file state, because they must agree on hit or miss (a miss runs a collective gather)."""
    is_main = accelerator is None or accelerator.is_main_process
    if accelerator is not None and cache_dir is not None:
        accelerator.wait_for_everyone()
    result = cached_features(cache_dir, key, compute, overwrite, write=is_main)
    if accelerator is not None and cache_dir is not None:
        accelerator.wait_for_everyone()
    return result


def token_features_gb(info: EncoderInfo, num_images: int) -> float:
    """Size in GB (1e9 bytes) of the float32 tokens `(num_images, 1 + P, D)` of `extract_features(..., "tokens")`
    at the evaluation transform's size; known from the config alone, so it is checked before any image is encoded."""
    num_tokens = 1 + (info.image_size // info.patch_size) ** 2
    return num_images * num_tokens * info.hidden_size * 4 / 1e9


__all__ = [
    "eval_transform_for",
    "eval_pixels_transform",
    "probe_train_transform_for",
    "num_classes_of",
    "extract_split_features",
    "cached_features_of_all_processes",
    "token_features_gb",
]
