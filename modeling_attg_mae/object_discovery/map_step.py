"""The `datasets` map step that adds an `attention_map` column, once, with a cacheable fingerprint.

    step = AttentionMapStep("tokencut", "facebook/dino-vits16", grid_size=14)
    dataset = dataset.map(step, batched=True, with_indices=True, with_rank=True, num_proc=n_gpus,
                          new_fingerprint=step.fingerprint_for(dataset), features=step.output_features(dataset.features))

or simply `add_attention_maps(dataset, "tokencut", "facebook/dino-vits16")`, which also makes unreadable
images fail with their row index (it maps over the undecoded image bytes).

`step.fingerprint` identifies the step (method, model id, every parameter with defaults filled in, grid).
The cache file of a map is named after `new_fingerprint` alone, and the splits of one DatasetDict share a cache
folder, so `new_fingerprint` must also depend on the input dataset: use `fingerprint_for(dataset)`.
"""

import hashlib
import inspect
import json
import os
from typing import Literal

import datasets
import numpy as np
import torch

from ..data.transforms import check_finite_attention_maps
from ..modeling_attg_mae import normalize_attention_map, resample_attention_map
from .registry import METHODS, build_method

FINGERPRINT_VERSION = 1  # bump when a method's output changes for the same parameters
MapDevice = Literal["auto", "cpu"] | str


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise ValueError(f"parameter value {value!r} of type {type(value).__name__} cannot be part of a fingerprint")


def _resolved_params(method: str, params: dict) -> dict:
    """`params` with the method's defaults filled in; unknown names raise."""
    cls = METHODS[method]
    signature = inspect.signature(cls.__init__)
    accepted = [name for name in signature.parameters if name not in ("self", "model", "device")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for method {method!r}; it accepts {accepted}")
    resolved = {name: signature.parameters[name].default for name in accepted}
    resolved.update(params)
    return resolved


def _local_weights_stamp(model_name_or_path: str | None) -> list:
    """Size and mtime of a local checkpoint's files, so that overwriting it in place misses the cache."""
    if not model_name_or_path or not os.path.isdir(model_name_or_path):
        return []
    stamp = []
    for name in sorted(os.listdir(model_name_or_path)):
        path = os.path.join(model_name_or_path, name)
        if os.path.isfile(path):
            info = os.stat(path)
            stamp.append([name, info.st_size, info.st_mtime_ns])
    return stamp


class AttentionMapStep:
    """Callable for `Dataset.map(batched=True, with_rank=True[, with_indices=True])`: `{"attention_map": ...}`.

    The detector is built lazily, in the worker, on `cuda:{rank % n_gpus}` when CUDA exists, else on the CPU
    (or on `device` when given). Each map is resampled onto the `grid_size x grid_size` grid with
    `resample_attention_map` (area when shrinking) and, with `normalize=True`, min-max normalised per image,
    which the guided loss does anyway (Eq. 1) and which keeps small raw values (Grad-CAM, DINO ~1/N) well
    inside float16. Stored as `Array2D((G, G), "float16")`.

    Args:
        method: a name in `METHODS` (dino, tokencut, gradcam, spectral_residual, column).
        model_name_or_path: Hub id or local folder for the methods that need a model, else None.
        image_column: the column the method reads (the mask column for `column`).
        grid_size: G, side of the stored map grid.
        revision: Hub revision of the model (part of the fingerprint).
        model_flag: the command-line flag that gave `model_name_or_path`, named in error messages.
        **params: the method's own parameters (e.g. `head="max"`, `output="eigenvector"`, `image_size=448`).
    """

    def __init__(
        self,
        method: str,
        model_name_or_path: str | None = None,
        image_column: str = "image",
        grid_size: int = 14,
        normalize: bool = True,
        device: MapDevice = "auto",
        revision: str | None = None,
        model_flag: str = "--model_name_or_path",
        **params,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown object-discovery method {method!r}; choose one of {sorted(METHODS)}")
        cls = METHODS[method]
        if cls.needs_model and not model_name_or_path:
            raise ValueError(
                f"method {method!r} needs a model: pass model_name_or_path, e.g. {cls.default_model!r}"
            )
        if not cls.needs_model and model_name_or_path:
            raise ValueError(f"method {method!r} uses no model, but model_name_or_path={model_name_or_path!r} was given")
        if not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"grid_size must be a positive int, got {grid_size!r}")
        if cls.needs_model and cls.check_model is not None:
            # the detector's config (cheap, no weights): a wrong or missing checkpoint fails here, before data work
            cls.check_model(model_name_or_path, revision, model_flag)
        self.method, self.model_name_or_path, self.image_column = method, model_name_or_path, image_column
        self.grid_size, self.normalize, self.device, self.revision = grid_size, normalize, device, revision
        self.params = _resolved_params(method, params)
        if cls.needs_model:
            self.params["revision"] = revision
        description = {
            "version": FINGERPRINT_VERSION, "method": method, "model": model_name_or_path, "revision": revision,
            "local_weights": _local_weights_stamp(model_name_or_path), "params": _jsonable(self.params),
            "grid_size": grid_size, "normalize": normalize, "image_column": image_column,
        }
        self.fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]
        self._detector = None

    @property
    def feature(self) -> datasets.Array2D:
        return datasets.Array2D(shape=(self.grid_size, self.grid_size), dtype="float16")

    def output_features(self, features: datasets.Features) -> datasets.Features:
        """The input features plus (or with a replaced) `attention_map` column."""
        if self.image_column not in features:
            raise ValueError(f"column {self.image_column!r} not in the dataset; its columns are {list(features)}")
        out = features.copy()
        out["attention_map"] = self.feature
        return out

    def fingerprint_for(self, dataset: datasets.Dataset) -> str:
        """`new_fingerprint` for mapping this step over `dataset`: the step's and the dataset's fingerprints."""
        return hashlib.sha256(f"{dataset._fingerprint}/{self.fingerprint}".encode()).hexdigest()[:32]

    def detector(self, rank: int | None = None):
        if self._detector is None:
            if self.device != "auto":
                device = self.device
            elif torch.cuda.is_available():
                device = f"cuda:{(rank or 0) % torch.cuda.device_count()}"
            else:
                device = "cpu"
            if rank is not None and str(device) == "cpu":
                # a forked worker must not enter the OpenMP pool its parent already used (GNU OpenMP hangs
                # after fork); one thread per worker also avoids oversubscribing the cores num_proc splits
                torch.set_num_threads(1)
            params = {k: v for k, v in self.params.items() if k != "revision"}
            kwargs = {"revision": self.revision} if METHODS[self.method].needs_model else {}
            self._detector = build_method(self.method, self.model_name_or_path, device=device, **kwargs, **params)
        return self._detector

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_detector"] = None  # workers build their own detector on their own device
        return state

    def __call__(self, batch: dict, *extra) -> dict:
        # datasets passes (batch, indices, rank), (batch, rank) or (batch, indices)
        indices, rank = None, None
        for arg in extra:
            if isinstance(arg, (list, range, np.ndarray)):
                indices = [int(i) for i in arg]
            else:
                rank = arg
        if self.image_column not in batch:
            raise ValueError(f"column {self.image_column!r} not in the dataset; its columns are {list(batch)}")
        images = batch[self.image_column]
        try:
            maps = self.detector(rank)(images, row_offset=indices)  # (B, h, w) on the detector's grid
            rows = indices if indices is not None else range(len(maps))
            grid = to_stored_grid(maps, self.grid_size, self.normalize, rows).numpy()  # (B, G, G) float16
        except ValueError as error:
            if getattr(self, "split", None) is None:
                raise
            raise ValueError(f"split {self.split!r}: {error}") from error
        return {"attention_map": list(grid)}


def to_stored_grid(maps: torch.Tensor, grid_size: int, normalize: bool = True, rows=None) -> torch.Tensor:
    """Maps `(B, h, w)` on a detector's grid -> a stored map column's rows: `(B, G, G)` float16 on the CPU,
    resampled with `resample_attention_map` and (with `normalize`) min-max normalised per image.

    A map with NaN or inf values is refused here, where it is made (`check_finite_attention_maps`, naming its
    dataset row from `rows`): before the normalisation, which would turn it into a constant map (weight 1, a silent
    plain MAE), and, without it, after the float16 cast too (a raw value beyond 65504 becomes inf)."""
    names = None if rows is None else [f"row {row}" for row in rows]
    grid = resample_attention_map(maps.float(), (grid_size, grid_size))  # (B, G * G)
    check_finite_attention_maps(grid, names)  # an offline step: reading the maps back here stalls no training
    if normalize:
        grid = normalize_attention_map(grid)
    stored = grid.view(-1, grid_size, grid_size).cpu().to(torch.float16)  # (B, G, G)
    if not normalize:
        check_finite_attention_maps(stored, names)
    return stored


def _named_split(part: datasets.Dataset, split: str) -> datasets.Dataset:
    # a Dataset built with from_dict has no split name; error messages of the map step use it
    if part.split is None:
        part._split = datasets.NamedSplit(split)  # metadata only: the rows and the fingerprint are unchanged
    return part


def add_attention_maps(
    dataset: datasets.Dataset | datasets.DatasetDict,
    method: str,
    model_name_or_path: str | None = None,
    image_column: str = "image",
    grid_size: int = 14,
    batch_size: int = 32,
    num_proc: int | None = None,
    normalize: bool = True,
    device: MapDevice = "auto",
    revision: str | None = None,
    desc: str | None = None,
    **params,
) -> datasets.Dataset | datasets.DatasetDict:
    """Add an `attention_map` column `Array2D((G, G), float16)` to every row (every split of a DatasetDict).

    Cached like any map of a dataset with cache files: the same call on the same data is a cache hit. For
    several GPUs pass `num_proc=n_gpus` (each worker takes `cuda:{rank}`); CUDA workers need the "spawn"
    start method (`multiprocess.set_start_method("spawn")`) when CUDA was initialised in the parent.
    """
    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({
            split: add_attention_maps(_named_split(part, split), method, model_name_or_path, image_column, grid_size, batch_size,
                                      num_proc, normalize, device, revision, desc or f"attention maps ({split})",
                                      **params)
            for split, part in dataset.items()
        })
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    if image_column not in dataset.column_names:
        raise ValueError(f"column {image_column!r} not in the dataset; its columns are {dataset.column_names}")
    step = AttentionMapStep(method, model_name_or_path, image_column, grid_size, normalize, device, revision, **params)
    step.split = dataset.split if dataset.split is None else str(dataset.split)  # for error messages only
    original = dataset.features[image_column]
    # map over the undecoded bytes: datasets would otherwise fail to decode a broken image before our code
    # runs, with no row index in the message
    undecoded = isinstance(original, datasets.Image) and original.decode
    if undecoded:
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    result = dataset.map(
        step,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        with_rank=True,
        num_proc=num_proc,
        features=step.output_features(dataset.features),
        new_fingerprint=step.fingerprint_for(dataset),
        desc=desc or f"attention maps ({method})",
    )
    if undecoded:
        result = result.cast_column(image_column, original)
    return result
