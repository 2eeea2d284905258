"""The data flags every command line shares, with one set of defaults and one validation.

`DataSourceArguments` says where the images come from (the maps CLI uses it as is); `LabelledDataArguments` adds
the roles of the splits and the label column (the evaluation CLIs use it as `EvalDataArguments`, pre-training and
fine-tuning subclass it with their own flags). Both parse with `HfArgumentParser`. `load_data_source`
(`data/loading.py`) loads what they name; `data/source.py` records it next to a checkpoint.

The synthetic flags default to None, "not given": a flag left unset takes the generator's own default
(`load_synthetic_dataset`'s signature, the one home of those numbers), in every command line alike. The difference
between "not given" and "given the default value" matters only to the evaluation CLIs: with no data flag at all,
a checkpoint's `attg_mae_data.json` (its pre-training data) decides instead.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Literal, TypeVar

# the flags that choose the source; the synthetic flags and the generator argument each one sets
SOURCE_FLAGS = ("dataset_name", "dataset_config_name", "train_dir", "validation_dir")
SYNTHETIC_FLAGS = {"synthetic_num_train": "num_train", "synthetic_num_validation": "num_validation",
                   "synthetic_image_size": "image_size", "synthetic_seed": "seed",
                   "synthetic_object_color": "object_color", "synthetic_class_cue": "class_cue",
                   "synthetic_num_classes": "num_classes", "synthetic_background_palette": "background_palette"}


# synthetic flags added after records (attg_mae_data.json, feature-cache keys) were first written: at their defaults
# they are left out of a record, so that the data of an earlier run keeps the record (and the cached features) it had
ADDED_SYNTHETIC_FLAGS = ("class_cue", "num_classes", "background_palette")


def recorded_synthetic(kwargs: dict | None) -> dict | None:
    """The synthetic kwargs as a record holds them: `kwargs` without the later flags that are at their defaults."""
    if kwargs is None:
        return None
    defaults = synthetic_defaults()
    return {name: value for name, value in kwargs.items()
            if name not in ADDED_SYNTHETIC_FLAGS or value != defaults[name]}


def synthetic_defaults() -> dict:
    """The synthetic generator's own defaults for the synthetic flags (read from its signature: one home)."""
    from .synthetic import load_synthetic_dataset

    parameters = inspect.signature(load_synthetic_dataset).parameters
    return {name: parameters[name].default for name in SYNTHETIC_FLAGS.values()}


def has_data_flags(data_args: DataSourceArguments) -> bool:
    """Whether any flag choosing the data (source or synthetic parameter) was set (is not None)."""
    return any(getattr(data_args, name) is not None for name in (*SOURCE_FLAGS, *SYNTHETIC_FLAGS))


def synthetic_kwargs_of(data_args: DataSourceArguments) -> dict | None:
    """`load_synthetic_dataset` kwargs (unset flags take the generator's defaults), or None for a non-synthetic source."""
    if data_args.dataset_name is not None or data_args.train_dir is not None:
        return None
    kwargs = synthetic_defaults()
    for flag, name in SYNTHETIC_FLAGS.items():
        value = getattr(data_args, flag)
        if value is not None:
            kwargs[name] = value
    return kwargs


_DEFAULTS = synthetic_defaults()


def _synthetic_help(what: str, name: str) -> dict:
    # HfArgumentParser adds "(default: None)": None is "not given", which means the generator's default
    return {"help": f"Synthetic data (the default source): {what}; unset means {_DEFAULTS[name]}."}


@dataclass
class DataSourceArguments:
    """Where the images come from: exactly one of a Hub dataset, a `save_to_disk` folder, an image folder, or the
    embedded synthetic dataset (the default); and the column that holds the images."""

    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hub dataset id, a local folder in the Hub layout (data files `datasets.load_dataset` reads), or a "
                "folder written by `save_to_disk` (e.g. by the maps CLI; read with `datasets.load_from_disk`, every "
                "split kept). Default (with no --train_dir either): the embedded synthetic dataset."})
    dataset_config_name: str | None = field(default=None, metadata={
        "help": "Configuration of the Hub dataset (not for a save_to_disk folder)."})
    train_dir: str | None = field(default=None, metadata={
        "help": "A local image folder (one sub-folder per class gives a `label` column): the train split."})
    validation_dir: str | None = field(default=None, metadata={
        "help": "A second image folder, the validation split (needs --train_dir)."})
    image_column_name: str = field(default="image", metadata={"help": "Column holding the images."})
    synthetic_num_train: int | None = field(default=None, metadata=_synthetic_help("training images", "num_train"))
    synthetic_num_validation: int | None = field(
        default=None, metadata=_synthetic_help("images per validation split", "num_validation"))
    synthetic_image_size: int | None = field(
        default=None, metadata=_synthetic_help("image side in pixels", "image_size"))
    synthetic_seed: int | None = field(default=None, metadata=_synthetic_help("generator seed", "seed"))
    synthetic_object_color: Literal["per_class", "random"] | None = field(default=None, metadata=_synthetic_help(
        "per_class (the hue also tells the class) or random (the class is in the shape alone)", "object_color"))
    synthetic_class_cue: Literal["shape", "hue", "layout", "texture"] | None = field(
        default=None, metadata=_synthetic_help(
        "shape (class k is a silhouette), hue (class k is the object's hue on a silhouette drawn independently of the "
        "class; --synthetic_object_color per_class), layout (class k is how two random hues split a silhouette drawn "
        "independently of the class) or texture (class k is a two-colour pixel texture filling such a silhouette); "
        "layout and texture need --synthetic_object_color random", "class_cue"))
    synthetic_num_classes: int | None = field(default=None, metadata=_synthetic_help(
        "number of classes (at most 12 shapes or hues, 10 layouts, 7 textures)", "num_classes"))
    synthetic_background_palette: Literal["muted", "vivid"] | None = field(default=None, metadata=_synthetic_help(
        "muted (background colours paler or darker than the objects) or vivid (as saturated as the objects: no "
        "colour statistic of the whole image singles out the object's hue)", "background_palette"))

    def __post_init__(self):
        from .loading import check_source_choice
        from .synthetic import check_synthetic_parameters

        given = [f"--{flag}" for flag in SYNTHETIC_FLAGS if getattr(self, flag) is not None]
        check_source_choice(self.dataset_name, self.dataset_config_name, self.train_dir, self.validation_dir, given)
        if not given:
            return
        try:
            check_synthetic_parameters(**synthetic_kwargs_of(self))
        except ValueError as error:  # the generator names its argument: name the flag instead
            message = str(error)
            for flag, name in SYNTHETIC_FLAGS.items():
                if message.startswith(f"{name} "):
                    message = f"--{flag}{message[len(name):]}"
            raise ValueError(message) from None


@dataclass
class LabelledDataArguments(DataSourceArguments):
    """A data source whose splits have roles: the one to train on (or to build a k-NN bank from), the ones to
    evaluate on, and the label column. What pre-training, the evaluations and fine-tuning share."""

    train_split: str = field(default="train", metadata={
        "help": "The training split: pre-training's, the k-NN bank, the probe's training set."})
    eval_splits: list[str] | None = field(default=None, metadata={
        "help": "Splits to evaluate on, each reported separately; default: every split except --train_split."})
    label_column_name: str = field(default="label", metadata={
        "help": "Column of the classes: a ClassLabel, integer ids or class-name strings (encoded as the train "
                "split's sorted names); every split gets the train split's ids, by name (evaluation; pre-training "
                "uses it only for --run_knn / --knn_monitor)."})


Arguments = TypeVar("Arguments")


def convert_data_arguments(data_args: DataSourceArguments, cls: type[Arguments]) -> Arguments:
    """`cls` built from the fields of `data_args` that it has too (by `dataclasses.fields`; values copied): e.g.
    pre-training's data arguments as the evaluation's, for the k-NN run after training. Fields of `cls` that
    `data_args` lacks keep their defaults; `cls.__post_init__` validates the result."""
    given = {f.name for f in dataclasses.fields(data_args)}
    return cls(**{f.name: copy.deepcopy(getattr(data_args, f.name))
                  for f in dataclasses.fields(cls) if f.init and f.name in given})


__all__ = ["DataSourceArguments", "LabelledDataArguments", "SOURCE_FLAGS", "SYNTHETIC_FLAGS", "convert_data_arguments",
           "has_data_flags", "synthetic_defaults", "synthetic_kwargs_of"]
