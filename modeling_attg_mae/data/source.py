"""Which data a checkpoint was pre-trained on, and one label that names a dataset precisely.

`write_data_source(output_dir, data_args)` records the data source of a run in `<output_dir>/attg_mae_data.json`.
The evaluation CLIs read it back (`read_data_source`) when they are given no data flag at all, so that
`run_knn.py --model_name_or_path outputs/attg-mae-demo` evaluates on the demo's 32 px data, not on the 64 px
synthetic default. `dataset_label` turns a source into the name used in the results JSON and the model card:
results on different data get different labels, so one never replaces the other's entries in the card.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

DATA_SOURCE_FILE = "attg_mae_data.json"
DATA_SOURCE_VERSION = 1
# the flags that choose the data (shared by pre-training's DataArguments and the evaluations' EvalDataArguments)
SOURCE_FLAGS = ("dataset_name", "dataset_config_name", "train_dir", "validation_dir")
SYNTHETIC_FLAGS = {"synthetic_num_train": "num_train", "synthetic_num_validation": "num_validation",
                   "synthetic_image_size": "image_size", "synthetic_seed": "seed",
                   "synthetic_object_color": "object_color"}


def synthetic_defaults() -> dict:
    """The synthetic generator's own defaults for the synthetic flags (read from its signature: one home)."""
    from .synthetic import load_synthetic_dataset

    parameters = inspect.signature(load_synthetic_dataset).parameters
    return {name: parameters[name].default for name in SYNTHETIC_FLAGS.values()}


def _absolute(path) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


def has_data_flags(data_args) -> bool:
    """Whether any flag choosing the data (source or synthetic parameter) was set (is not None)."""
    return any(getattr(data_args, name, None) is not None for name in (*SOURCE_FLAGS, *SYNTHETIC_FLAGS))


def synthetic_kwargs_of(data_args) -> dict | None:
    """`load_synthetic_dataset` kwargs (unset flags take the generator's defaults), or None for a non-synthetic source."""
    if getattr(data_args, "dataset_name", None) is not None or getattr(data_args, "train_dir", None) is not None:
        return None
    kwargs = synthetic_defaults()
    for flag, name in SYNTHETIC_FLAGS.items():
        value = getattr(data_args, flag, None)
        if value is not None:
            kwargs[name] = value
    return kwargs


def data_source(data_args) -> dict:
    """The data source named by an arguments object (pre-training's `DataArguments` or `EvalDataArguments`).

    Local folders are made absolute, so the record stays valid from any working directory.
    """
    name = getattr(data_args, "dataset_name", None)
    if name is not None and os.path.isdir(name):  # a save_to_disk folder passed as dataset_name
        name = _absolute(name)
    return {
        "version": DATA_SOURCE_VERSION,
        "dataset_name": name,
        "dataset_config_name": getattr(data_args, "dataset_config_name", None),
        "train_dir": _absolute(getattr(data_args, "train_dir", None)),
        "validation_dir": _absolute(getattr(data_args, "validation_dir", None)),
        "synthetic": synthetic_kwargs_of(data_args),
        "image_column_name": getattr(data_args, "image_column_name", "image"),
        "train_split": getattr(data_args, "train_split", "train"),
    }


def write_data_source(output_dir, data_args) -> Path:
    """Write `<output_dir>/attg_mae_data.json`, the data source of `data_args` (see `data_source`). Returns its path."""
    path = Path(output_dir) / DATA_SOURCE_FILE
    path.write_text(json.dumps(data_source(data_args), indent=2, sort_keys=True) + "\n")
    return path


def read_data_source(checkpoint) -> dict | None:
    """The record of a local checkpoint folder, or None (no record, or not a local folder)."""
    path = Path(os.fspath(checkpoint)) / DATA_SOURCE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                         "fix or delete it, or pass the data flags explicitly") from None
    missing = [key for key in (*SOURCE_FLAGS, "synthetic") if key not in record]
    if not isinstance(record, dict) or missing:
        raise ValueError(f"{path} is not a data-source record (missing {missing}); fix or delete it, or pass the "
                         "data flags explicitly")
    return record


def dataset_label(source: dict) -> str:
    """A name for the data of `source` that differs whenever the data does.

    Synthetic: `attg-mae-synthetic-{size}px-train{n}-val{m}-seed{s}` (+ `-colourrandom` for shape-only classes); a Hub dataset: `name` or `name/config`;
    image folders: `imagefolder:<train_dir>` (+ `+<validation_dir>`).
    """
    if source.get("dataset_name"):
        config = source.get("dataset_config_name")
        return source["dataset_name"] + (f"/{config}" if config else "")
    if source.get("train_dir"):
        label = f"imagefolder:{source['train_dir']}"
        return label + (f"+{source['validation_dir']}" if source.get("validation_dir") else "")
    synthetic = {**synthetic_defaults(), **(source.get("synthetic") or {})}
    colour = "" if synthetic["object_color"] == "per_class" else f"-colour{synthetic['object_color']}"
    return (f"attg-mae-synthetic-{synthetic['image_size']}px-train{synthetic['num_train']}-"
            f"val{synthetic['num_validation']}-seed{synthetic['seed']}{colour}")


__all__ = ["DATA_SOURCE_FILE", "data_source", "dataset_label", "has_data_flags", "read_data_source",
           "synthetic_kwargs_of", "write_data_source"]
