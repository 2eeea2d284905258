"""On-disk cache of extracted features (safetensors), keyed by everything that changes them.

Key = checkpoint (its path or Hub id + a hash of its weights, or the Hub commit), dataset (its description and
the split's `datasets` fingerprint), split, evaluation transform (size, crop, mean/std, interpolation) and
pooling ("cls", "mean", "cls+mean", or "tokens": every token, for the attentive probe; the key's format is
unchanged, so entries written before "tokens" existed stay valid). Any change gives a new file, so a stale entry is
never read; `overwrite=True` recomputes anyway.
File: `<cache_dir>/<sha256 of the key>.safetensors` with tensors "features" `(N, D)` (tokens: `(N, 1 + P, D)`)
float32 and "labels" `(N,)` int64, and the key itself as JSON in the metadata (for humans and for a collision check).
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def sha256_file(path: Path, block: int = 2**22) -> str:
    """The sha256 of a file's bytes, read in blocks (weights, ground-truth files, checkpoints of the study)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_fingerprint(model_name_or_path: str, commit_hash: str | None = None) -> dict:
    """Identity of a checkpoint's weights.

    A local folder: its resolved path and the sha256 of its weight files (every shard of a sharded checkpoint).
    A Hub id: the id and the commit it was loaded from (`config._commit_hash`, set by `from_pretrained`).
    """
    path = Path(model_name_or_path)
    if path.is_dir():
        files = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        for index in [f for f in files if f.suffix == ".json"]:
            files += sorted({path / shard for shard in json.loads(index.read_text())["weight_map"].values()})
        if not files:
            raise ValueError(f"no weight file ({', '.join(WEIGHT_FILES)}) in checkpoint folder {path}")
        return {"checkpoint": str(path.resolve()), "weights": {f.name: sha256_file(f) for f in files}}
    if commit_hash is None:
        raise ValueError(
            f"{model_name_or_path!r} is not a local folder and no Hub commit is known for it; cannot key the feature cache"
        )
    return {"checkpoint": model_name_or_path, "commit": commit_hash}


def cache_key(checkpoint: dict, dataset: dict, split: str, transform: dict, pooling: str) -> dict:
    """The full key (JSON-serialisable); its sha256 names the cache file."""
    return {"checkpoint": checkpoint, "dataset": dataset, "split": split, "transform": transform, "pooling": pooling}


def cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"{digest}.safetensors"


def load_cached_features(path: Path, key: dict) -> tuple[torch.Tensor, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        stored_key = json.loads(handle.metadata()["key"])
        if stored_key != json.loads(json.dumps(key)):
            raise ValueError(f"feature cache file {path} holds a different key; delete it or pass overwrite_cache")
        return handle.get_tensor("features"), handle.get_tensor("labels")


def save_cached_features(path: Path, key: dict, features: torch.Tensor, labels: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(
        {"features": features.contiguous().float().cpu(), "labels": labels.contiguous().long().cpu()},
        str(tmp),
        metadata={"key": json.dumps(key, sort_keys=True)},
    )
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def cached_features(
    cache_dir: str | os.PathLike | None,
    key: dict,
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    overwrite: bool = False,
    write: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """`(features (N, D), labels (N,), hit)`: read the entry for `key`, or `compute()` it and store it.

    `cache_dir=None` disables the cache. `write=False` lets non-main processes compute without writing.
    """
    if cache_dir is None:
        features, labels = compute()
        return features, labels, False
    path = cache_path(cache_dir, key)
    if path.is_file() and not overwrite:
        features, labels = load_cached_features(path, key)
        return features, labels, True
    features, labels = compute()
    if write:
        save_cached_features(path, key, features, labels)
    return features, labels, False


__all__ = ["checkpoint_fingerprint", "cache_key", "cache_path", "cached_features", "load_cached_features", "save_cached_features"]
