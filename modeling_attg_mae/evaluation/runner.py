"""Wiring for the evaluation CLIs: checkpoint -> encoder + transform, dataset -> split features (cached, sharded).

Everything here is plumbing between the pieces that hold the logic (`features.extract_features`, `knn`,
`linear_probe`, `feature_cache`, the data module); `run_knn.py` / `run_linear_probe.py` call `run_knn` /
`run_linear_probe` in `evaluation.pipelines`.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..features import extract_features, extract_multi_scale_features
from .feature_cache import cache_key, cached_features, checkpoint_fingerprint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Model types whose encoders `extract_features` understands (CLS first, then optional registers, then patches).
VIT_MODEL_TYPES = ("vit_mae", "vit", "deit", "dinov2", "dinov2_with_registers", "vit_msn")


@dataclass
class EncoderInfo:
    """What the evaluation needs to know about a checkpoint besides its weights."""

    model_name_or_path: str
    model_type: str
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    hidden_size: int
    patch_size: int
    commit_hash: str | None

    def transform_description(self) -> dict:
        return {
            "name": "resize_center_crop",
            "image_size": self.image_size,
            "resize": int(self.image_size * 256 / 224),
            "interpolation": "bicubic",
            "mean": list(self.image_mean),
            "std": list(self.image_std),
        }


def _image_size(config) -> int:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square image_size {size} is not supported by the evaluation transform")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"the checkpoint's config has no usable image_size (got {size!r})")
    return size


def _normalisation(model_name_or_path: str, cache_dir=None, revision=None) -> tuple[tuple, tuple]:
    """Mean/std from the checkpoint's `preprocessor_config.json`, else ImageNet's (as MAE and DINO use)."""
    from transformers.utils import cached_file

    path = cached_file(
        model_name_or_path,
        "preprocessor_config.json",
        cache_dir=cache_dir,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    if path is None:
        return IMAGENET_MEAN, IMAGENET_STD
    config = json.loads(Path(path).read_text())
    mean, std = config.get("image_mean", IMAGENET_MEAN), config.get("image_std", IMAGENET_STD)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{path}: image_mean / image_std must have 3 entries, got {mean} / {std}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def load_encoder(model_name_or_path: str, cache_dir: str | None = None, revision: str | None = None):
    """`(encoder, EncoderInfo)` for any ViT checkpoint: ours, stock `facebook/vit-mae-*`, ViT, DeiT, DINO(v2).

    ViTMAE checkpoints (ours included: model_type stays "vit_mae") load as `ViTMAEModel`, i.e. the encoder
    only; others through `AutoModel`. Anything else (a ResNet, a text model) is a ValueError, before any weights load.
    """
    from transformers import AutoModel, ViTMAEModel
    from transformers.utils import logging as transformers_logging

    from ..model_source import load_config

    config = load_config(model_name_or_path, "--model_name_or_path", cache_dir=cache_dir, revision=revision)
    model_type = getattr(config, "model_type", None)
    if model_type not in VIT_MODEL_TYPES:
        raise ValueError(
            f"{model_name_or_path!r} is a {model_type!r} checkpoint, not a ViT; evaluation supports {VIT_MODEL_TYPES}"
        )
    loader = ViTMAEModel if model_type == "vit_mae" else AutoModel
    kwargs = {"add_pooling_layer": False} if model_type in ("vit", "deit") else {}
    verbosity = transformers_logging.get_verbosity()
    if model_type == "vit_mae":  # the decoder weights of a pre-training checkpoint are unused here, by design
        transformers_logging.set_verbosity_error()
    try:
        model = loader.from_pretrained(model_name_or_path, cache_dir=cache_dir, revision=revision, **kwargs)
    except Exception as error:  # safetensors / torch / OS errors that name neither the checkpoint nor the file
        weights = [os.path.join(model_name_or_path, name) for name in ("model.safetensors", "pytorch_model.bin")
                   if os.path.isfile(os.path.join(os.fspath(model_name_or_path), name))]
        raise ValueError(f"cannot load the weights of --model_name_or_path {model_name_or_path!r} "
                         f"({', '.join(weights) or 'from the Hub'}): {type(error).__name__}: {error}; the file may "
                         "be truncated or incomplete (an interrupted copy or save): copy or export it again") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    model.eval().requires_grad_(False)
    mean, std = _normalisation(model_name_or_path, cache_dir, revision)
    info = EncoderInfo(
        model_name_or_path=str(model_name_or_path),
        model_type=model_type,
        image_size=_image_size(config),
        image_mean=mean,
        image_std=std,
        hidden_size=int(config.hidden_size),
        patch_size=int(config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]),
        commit_hash=getattr(config, "_commit_hash", None),
    )
    return model, info


class _PixelsOnly:
    """Adapts the data module's `(image, map, generator) -> (pixel_values, map)` transforms to `image -> pixel_values`."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image)[0]


def eval_transform_for(info: EncoderInfo):
    """The data module's `EvalTransform` (resize shorter side to size * 256/224 bicubic, center crop, normalise)."""
    return eval_pixels_transform(info.image_size, info.image_mean, info.image_std)


def eval_pixels_transform(image_size: int, mean, std):
    """`image -> pixel_values (3, S, S)`: the evaluation transform of every k-NN / probe (offline and online)."""
    from ..data.transforms import EvalTransform

    return _PixelsOnly(EvalTransform(image_size, mean=mean, std=std))


def probe_train_transform_for(info: EncoderInfo, seed: int | None = None):
    """MAE's linear-probe augmentation: RandomResizedCrop (torchvision's default scale (0.08, 1), bicubic)
    + horizontal flip + normalisation, i.e. the data module's `PretrainTransform` with that scale."""
    from ..data.transforms import PretrainTransform

    transform = PretrainTransform(
        info.image_size, info.patch_size, scale=(0.08, 1.0), mean=info.image_mean, std=info.image_std, seed=seed
    )
    return _PixelsOnly(transform)


def check_split(dataset, split: str) -> None:
    if split not in dataset:
        raise ValueError(f"unknown split {split!r}; the dataset has splits {sorted(dataset.keys())}")


def check_label_column(split_dataset, split: str, image_column: str, label_column: str) -> None:
    """Both columns must exist (and the image column hold images); the message lists the columns that do."""
    import datasets

    from ..data import check_columns

    check_columns(datasets.DatasetDict({split: split_dataset}), image_column, label_column)
    feature = split_dataset.features[label_column]
    dtype = getattr(feature, "dtype", type(feature).__name__)
    if not (isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and (
            dtype.startswith("int") or dtype.startswith("uint")))):
        # torch.as_tensor(..., dtype=long) would truncate floats (2.7 -> 2) and fail on strings with
        # "too many dimensions 'str'"
        raise ValueError(
            f"label_column {label_column!r} in split {split!r} has dtype {dtype}, not integer class ids; convert it "
            f"first, e.g. dataset = dataset.class_encode_column({label_column!r}) (one id per distinct value), or "
            f"pass --label_column_name for the column that holds the class ids"
        )


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


def split_features(
    model,
    info: EncoderInfo,
    dataset,
    split: str,
    dataset_description: dict,
    image_column: str,
    label_column: str,
    transform,
    pooling: str,
    batch_size: int,
    cache_dir: str | None,
    overwrite_cache: bool = False,
    num_workers: int = 0,
    accelerator=None,
    progress: bool = True,
    scales=None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """`(features (N, D), labels (N,), cache_hit)` of one split, through the feature cache (`scales`: see
    `extract_split_features`; `(N, 1 + P, D)` tokens with `pooling="tokens"`, cached under their own key)."""
    check_split(dataset, split)
    split_dataset = dataset[split]
    check_label_column(split_dataset, split, image_column, label_column)
    labels = torch.as_tensor(split_dataset[label_column], dtype=torch.long)
    key = cache_key(
        checkpoint=checkpoint_fingerprint(info.model_name_or_path, info.commit_hash),
        dataset={**dataset_description, "fingerprint": split_dataset._fingerprint, "num_rows": len(split_dataset)},
        split=split,
        transform=info.transform_description(),
        pooling=pooling,
    )
    if scales is not None:  # only then: the k-NN / probe keys (and their cache files) stay what they were
        key["scales"] = [float(s) for s in scales]

    def compute():
        features = extract_split_features(
            model, split_dataset, image_column, transform, pooling, batch_size, num_workers, accelerator, progress,
            split, scales,
        )
        return features, labels

    features, cached_labels, hit = cached_features_of_all_processes(cache_dir, key, compute, overwrite_cache, accelerator)
    if not torch.equal(cached_labels, labels):
        raise ValueError(f"cached labels of split {split!r} differ from the dataset's; rerun with overwrite_cache")
    return features, labels, hit


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


def write_results(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


__all__ = [
    "EncoderInfo",
    "VIT_MODEL_TYPES",
    "load_encoder",
    "eval_transform_for",
    "eval_pixels_transform",
    "probe_train_transform_for",
    "check_split",
    "check_label_column",
    "num_classes_of",
    "extract_split_features",
    "split_features",
    "cached_features_of_all_processes",
    "token_features_gb",
    "write_results",
]
