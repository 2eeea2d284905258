"""Which data a checkpoint was pre-trained on, and one label that names a dataset precisely.

`write_data_source(output_dir, data_args)` records the data source of a run in `<output_dir>/attg_mae_data.json`.
The evaluation CLIs read it back (`use_recorded_source`) when they are given no data flag at all, so that
`run_knn.py --model_name_or_path outputs/attg-mae-demo` evaluates on the demo's 32 px data, not on the 64 px
synthetic default. `dataset_label` turns a source into the name used in the results JSON and the model card:
results on different data get different labels, so one never replaces the other's entries in the card.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..output_folders import run_folder_of
from .arguments import (
    SOURCE_FLAGS,
    SYNTHETIC_FLAGS,
    DataSourceArguments,
    has_data_flags,
    synthetic_defaults,
    recorded_synthetic,
    synthetic_kwargs_of,
)

logger = logging.getLogger(__name__)
DATA_SOURCE_FILE = "attg_mae_data.json"
DATA_SOURCE_VERSION = 1


def _absolute(path) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


def data_source(data_args: DataSourceArguments) -> dict:
    """The data source named by the data flags (a `DataSourceArguments`; its train split when it has one).

    Local folders are made absolute, so the record stays valid from any working directory.
    """
    name = data_args.dataset_name
    if name is not None and os.path.isdir(name):  # a save_to_disk (or Hub-layout) folder passed as dataset_name
        name = _absolute(name)
    return {
        "version": DATA_SOURCE_VERSION,
        "dataset_name": name,
        "dataset_config_name": data_args.dataset_config_name,
        "train_dir": _absolute(data_args.train_dir),
        "validation_dir": _absolute(data_args.validation_dir),
        "synthetic": recorded_synthetic(synthetic_kwargs_of(data_args)),
        "image_column_name": data_args.image_column_name,
        "train_split": getattr(data_args, "train_split", "train"),  # the maps CLI's arguments have no split roles
    }


def write_data_source(output_dir, data_args: DataSourceArguments) -> Path:
    """Write `<output_dir>/attg_mae_data.json`, the data source of `data_args` (see `data_source`). Returns its path."""
    path = Path(output_dir) / DATA_SOURCE_FILE
    path.write_text(json.dumps(data_source(data_args), indent=2, sort_keys=True) + "\n")
    return path


def data_source_path(checkpoint) -> Path | None:
    """The data record that applies to a local checkpoint folder: its own, else its run folder's (a `checkpoint-N`
    or an encoder export evaluates on the run's data, like the run folder), else None."""
    path = Path(os.path.expanduser(os.fspath(checkpoint))) / DATA_SOURCE_FILE
    if path.is_file():
        return path
    run = run_folder_of(checkpoint)
    if run is not None and (run / DATA_SOURCE_FILE).is_file():
        return run / DATA_SOURCE_FILE
    return None


def read_data_source(checkpoint) -> dict | None:
    """The record of a local checkpoint folder (or of the run folder it is part of, see `data_source_path`), or
    None (no record, or not a local folder)."""
    path = data_source_path(checkpoint)
    if path is None:
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


def use_recorded_source(data_args: DataSourceArguments, checkpoint) -> dict | None:
    """With no data flag at all, point `data_args` (in place) at the data `checkpoint` was pre-trained on, from its
    `attg_mae_data.json`; the image column and train split too when they are at their defaults, so that every later
    step and the results' label agree on the data. Returns the record used, or None (a data flag was given, or
    the checkpoint has no record: the synthetic defaults then apply, with a warning)."""
    if has_data_flags(data_args):
        return None
    record = read_data_source(checkpoint)
    if record is None:
        logger.warning("no data flag and no %s in %s: evaluating on the synthetic defaults", DATA_SOURCE_FILE,
                       checkpoint)
        return None
    for name in SOURCE_FLAGS:
        setattr(data_args, name, record.get(name))
    for flag, name in SYNTHETIC_FLAGS.items():
        setattr(data_args, flag, (record.get("synthetic") or {}).get(name))
    for name, default in (("image_column_name", "image"), ("train_split", "train")):
        if hasattr(data_args, name) and getattr(data_args, name) == default and record.get(name):
            setattr(data_args, name, record[name])
    logger.warning("no data flag: evaluating on the checkpoint's pre-training data %s (from %s)",
                   dataset_label(record), data_source_path(checkpoint))
    return record


def dataset_label(source: dict) -> str:
    """A name for the data of `source` that differs whenever the data does.

    Synthetic: `attg-mae-synthetic-{size}px-train{n}-val{m}-seed{s}` (+ `-colourrandom` for shape-only classes,
    `-{K}classes` for another class count than the generator's default, `-layout` / `-texture` / `-hue` for the
    class cue, `-vivid` for the vivid background palette); a Hub dataset: `name` or `name/config`;
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
    # the class count changes the data (and the task): 5 and 10 hue classes must not share a label, or one's
    # results replace the other's in the results JSON and the model card
    default_classes = synthetic_defaults()["num_classes"]
    classes = synthetic.get("num_classes", default_classes)
    colour += "" if classes == default_classes else f"-{classes}classes"
    cue = "" if synthetic.get("class_cue", "shape") == "shape" else f"-{synthetic['class_cue']}"
    cue += "" if synthetic.get("background_palette", "muted") == "muted" else f"-{synthetic['background_palette']}"
    return (f"attg-mae-synthetic-{synthetic['image_size']}px-train{synthetic['num_train']}-"
            f"val{synthetic['num_validation']}-seed{synthetic['seed']}{colour}{cue}")


__all__ = ["DATA_SOURCE_FILE", "data_source", "data_source_path", "dataset_label", "read_data_source",
           "use_recorded_source", "write_data_source"]
