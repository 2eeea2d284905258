"""Where images come from: a Hub dataset, a `save_to_disk` folder, a local image folder, or the embedded synthetic
benchmark; `load_data_source` loads what the shared data flags (`data/arguments.py`) name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import datasets
import numpy as np

from .arguments import synthetic_kwargs_of
from .synthetic import load_synthetic_dataset

if TYPE_CHECKING:
    from .arguments import DataSourceArguments


def _image_extensions() -> tuple[str, ...]:
    # the suffixes the "imagefolder" builder itself picks up, so that our emptiness check agrees with it
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return tuple(extension.lower() for extension in ImageFolder.EXTENSIONS)


def check_image_folder(path: str | os.PathLike, argument: str = "train_dir") -> None:
    """Raise ValueError unless `path` is a directory holding at least one image file (searched recursively)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{argument}={path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"{argument}={path!r} is not a directory (expected a folder of images, optionally in "
                         "one sub-folder per class)")
    extensions = _image_extensions()
    for _, _, files in os.walk(path):
        if any(name.lower().endswith(extensions) for name in files):
            return
    raise ValueError(f"{argument}={path!r} contains no image files (looked recursively for "
                     f"{', '.join(extensions[:8])}, ...); point it at a folder of images")


def saved_dataset_kind(path: str | os.PathLike) -> str | None:
    """"dict" for a `DatasetDict.save_to_disk` folder, "dataset" for a `Dataset.save_to_disk` one, else None."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        return "dict"
    if os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json")):
        return "dataset"
    return None


def _load_saved_dataset(path: str) -> datasets.DatasetDict:
    # load_dataset(path) would read the folder's Arrow files as one generic dataset and merge the splits
    # (validation, validation_mixed_rand, ... -> "validation"); load_from_disk keeps each split as saved
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        return loaded
    return datasets.DatasetDict({str(loaded.split) if loaded.split else "train": loaded})


def check_source_choice(
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_dir: str | os.PathLike | None,
    validation_dir: str | os.PathLike | None,
    synthetic: list[str] = (),
    streaming: bool = False,
) -> None:
    """Raise ValueError unless the arguments name exactly one source (`synthetic`: the synthetic settings that were
    given, by name), which can stream if `streaming`. Cheap (no folder is listed, no data read): the data arguments
    run it when flags are parsed."""
    if dataset_name is not None and (train_dir is not None or validation_dir is not None):
        raise ValueError(f"give either --dataset_name ({dataset_name!r}) or --train_dir/--validation_dir "
                         f"({train_dir!r}/{validation_dir!r}), not both")
    if validation_dir is not None and train_dir is None:
        raise ValueError(f"--validation_dir {validation_dir!r} was given without --train_dir (the validation folder "
                         "is the second split of an image-folder source)")
    if synthetic and (dataset_name is not None or train_dir is not None):
        raise ValueError(f"{' '.join(synthetic)} only apply to the synthetic dataset, but --dataset_name or "
                         "--train_dir was given as well")
    if dataset_config_name is not None and dataset_name is None:
        raise ValueError(f"--dataset_config_name {dataset_config_name!r} needs --dataset_name")
    if dataset_config_name is not None and saved_dataset_kind(dataset_name) is not None:
        raise ValueError(f"--dataset_name {dataset_name!r} is a save_to_disk folder, which has no configurations; "
                         f"drop --dataset_config_name {dataset_config_name!r}")
    if streaming and dataset_name is None and train_dir is None:
        raise ValueError("--streaming streams a Hub dataset (--dataset_name) or an image folder (--train_dir); the "
                         "embedded synthetic data is generated whole: drop --streaming")
    if streaming and dataset_name is not None and saved_dataset_kind(dataset_name) is not None:
        raise ValueError(f"--dataset_name {dataset_name!r} is a save_to_disk folder, already prepared on disk: it does "
                         "not stream; drop --streaming")


def load_data_source(data_args: DataSourceArguments, cache_dir: str | os.PathLike | None = None,
                     new_classes: str = "refuse") -> datasets.DatasetDict:
    """The `DatasetDict` named by the data flags (`DataSourceArguments` or a subclass): the one loader of every
    command line (pre-training, the evaluations, the maps CLI).

    `cache_dir`: the `datasets` cache for Hub and image-folder data. The synthetic data is saved there too, or, when
    none is given, under `<datasets cache>/attg_mae_synthetic`: a dataset on disk lets `datasets.map` cache the
    attention maps computed on it, so a second run with the same data and maps hits that cache.

    With `LabelledDataArguments` (they name a label column and split roles), the splits in use get the train split's
    class ids by name (`align_class_labels`). `new_classes`: what becomes of a class an eval split holds and the
    train split lacks: "refuse" (k-NN, probes, fine-tuning: no id could be right), or "append" (its own id after the
    train split's: retrieval, where such a query has no positive, and pre-training, which reads no label, so that
    its splits and their cached maps are the same with or without the k-NN flags).
    """
    synthetic = synthetic_kwargs_of(data_args)
    if synthetic is not None and cache_dir is None:
        cache_dir = os.path.join(datasets.config.HF_DATASETS_CACHE, "attg_mae_synthetic")
    dataset = load_image_dataset(
        dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name,
        train_dir=data_args.train_dir, validation_dir=data_args.validation_dir, cache_dir=cache_dir,
        synthetic_kwargs=synthetic, streaming=getattr(data_args, "streaming", False))
    label_column = getattr(data_args, "label_column_name", None)
    if label_column is not None and isinstance(dataset, datasets.DatasetDict):  # a stream has no k-NN
        train_split = data_args.train_split
        dataset = align_class_labels(dataset, train_split, label_column,
                                     [train_split, *(data_args.eval_splits or dataset.keys())], new_classes)
    return dataset


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | os.PathLike | None = None,
    validation_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    synthetic_kwargs: dict | None = None,
    streaming: bool = False,
) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """Load images from exactly one source: the keyword form of `load_data_source` (which the command lines use).

    Args:
        dataset_name: a Hub dataset (`datasets.load_dataset(dataset_name, dataset_config_name)`), or a folder
            written by `save_to_disk` (e.g. by the maps CLI), loaded with `datasets.load_from_disk` with every
            split kept (a single saved `Dataset` becomes the split it was saved as, else `train`).
        dataset_config_name: its configuration, if any.
        train_dir: a local image folder (`load_dataset("imagefolder", data_dir=train_dir)`: class sub-folders
            become a `label` column); its images form the `train` split.
        validation_dir: optional second folder, loaded the same way as the `validation` split.
        cache_dir: the `datasets` cache for Hub / folder data; for the synthetic data, the folder where it is
            saved (see `load_synthetic_dataset`).
        synthetic_kwargs: arguments of `load_synthetic_dataset`, used when neither a name nor a folder is given.
        streaming: stream a Hub dataset (or a Hub-layout folder) or an image folder instead of preparing it whole
            (`load_dataset(..., streaming=True)`): an `IterableDatasetDict`, without lengths (pre-training only).

    Returns:
        `datasets.DatasetDict` (the synthetic data: train, validation, validation_mixed_rand, validation_only_fg), or
        an `IterableDatasetDict` with `streaming`.
    """
    check_source_choice(dataset_name, dataset_config_name, train_dir, validation_dir,
                        ["synthetic_kwargs"] if synthetic_kwargs else [], streaming)
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    if streaming and dataset_name is not None:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, streaming=True)
    if streaming:
        splits = {"train": train_dir} if validation_dir is None else {"train": train_dir, "validation": validation_dir}
        for split, folder in splits.items():
            check_image_folder(folder, "train_dir" if split == "train" else "validation_dir")
        return datasets.IterableDatasetDict({
            split: next(iter(datasets.load_dataset("imagefolder", data_dir=os.fspath(folder), cache_dir=cache_dir,
                                                   streaming=True).values()))
            for split, folder in splits.items()})
    if dataset_name is not None and saved_dataset_kind(dataset_name) is not None:
        return _load_saved_dataset(os.fspath(dataset_name))
    if dataset_name is not None:
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
        if not isinstance(dataset, datasets.DatasetDict):  # an IterableDatasetDict (streaming) has no __len__
            raise ValueError(f"{dataset_name!r} did not load as a DatasetDict (got {type(dataset).__name__})")
        if os.path.isdir(dataset_name):
            dataset = _with_file_class_names(dataset, dataset_name)
        return dataset
    if train_dir is not None:
        splits = {"train": train_dir} if validation_dir is None else {"train": train_dir, "validation": validation_dir}
        result = {}
        for split, folder in splits.items():
            check_image_folder(folder, "train_dir" if split == "train" else "validation_dir")
            options = {}
            if split == "validation" and "label" in result["train"].column_names and _in_class_folders(folder):
                # imagefolder adds labels only for two classes or more: a one-class validation folder would lose
                # its label column, though its class is one of the train folder's
                options["drop_labels"] = False
            loaded = datasets.load_dataset("imagefolder", data_dir=os.fspath(folder), cache_dir=cache_dir, **options)
            if len(loaded) != 1:
                raise ValueError(f"{folder!r} loaded as several splits {list(loaded)}; point "
                                 f"{'train_dir' if split == 'train' else 'validation_dir'} at one split's folder")
            result[split] = next(iter(loaded.values()))
        return datasets.DatasetDict(result)
    return load_synthetic_dataset(**(synthetic_kwargs or {}), cache_dir=cache_dir)


def _in_class_folders(path: str | os.PathLike) -> bool:
    """Whether every image under `path` sits in a first-level sub-folder (the class folders of imagefolder)."""
    extensions = _image_extensions()
    found = False
    for folder, _, files in os.walk(path):
        relative = os.path.relpath(folder, path)
        depth = 0 if relative == os.curdir else relative.count(os.sep) + 1
        if any(name.lower().endswith(extensions) for name in files):
            if depth != 1:
                return False
            found = True
    return found


def _file_class_names(path: str) -> dict[str, list[str]]:
    """`{column: names}` of the `ClassLabel` columns a parquet file's own `datasets` metadata declares."""
    import json

    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return {}
    return {name: list(feature["names"]) for name, feature in features.items()
            if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and "names" in feature}


def _with_file_class_names(dataset: datasets.DatasetDict, folder: str | os.PathLike) -> datasets.DatasetDict:
    """A Hub-layout folder's splits with the class names their own parquet files declare.

    `datasets` reads the features of the first data file and applies them to every split, so a validation file
    written with `ClassLabel([green, red])` next to a train file with `[blue, green, red]` has its ids 0, 1 read as
    blue, green, with no error (a split encoded on its own, e.g. by `class_encode_column`). Each file carries its own
    names in its schema metadata: a split whose files agree on other names than the ones it was given gets them back
    (same ids), so that `align_class_labels` can match them by name; files of one split that disagree are refused.
    """
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(os.fspath(folder)), base_path=os.fspath(folder))
    except Exception:  # not a layout datasets' patterns resolve (e.g. a loading script): nothing to compare
        return dataset
    result = dict(dataset)
    for split, paths in files.items():
        if split not in dataset:
            continue
        declared = [_file_class_names(path) for path in paths if str(path).endswith(".parquet")]
        for column, feature in dataset[split].features.items():
            if not isinstance(feature, datasets.ClassLabel):
                continue
            names = {tuple(file_names[column]) for file_names in declared if column in file_names}
            if len(names) > 1:
                raise ValueError(f"{os.fspath(folder)}: the parquet files of split {split!r} give column {column!r} "
                                 f"different class names {sorted(names)}; the same id would mean different classes "
                                 "within one split: write every file of a split with one ClassLabel")
            if names and list(next(iter(names))) != list(feature.names):  # the same ids, under the file's names
                ids = np.array(result[split].with_format("arrow")[column].to_pylist(), dtype=np.int64)
                result[split] = _with_label_column(result[split], column, ids,
                                                   datasets.ClassLabel(names=list(next(iter(names)))))
    return datasets.DatasetDict(result)


def _train_class_names(split_dataset, label_column: str) -> list[str] | None:
    """The class names that define the ids: a `ClassLabel`'s names in their order (its ids stay), or the sorted
    distinct values of a string column; None for anything else (plain integer ids carry no name to compare)."""
    feature = (split_dataset.features or {}).get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        values = split_dataset.with_format("arrow")[label_column].to_pylist()
        return sorted({value for value in values if value is not None})
    return None


def _label_kind(split_dataset, label_column: str) -> str:
    """"names" (a `ClassLabel` or class-name strings), "ids" (plain integers) or "other" (floats, ...: the label
    column check names those)."""
    feature = (split_dataset.features or {}).get(label_column)
    if isinstance(feature, datasets.ClassLabel) or (
            isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return "names"
    dtype = getattr(feature, "dtype", "")
    return "ids" if isinstance(feature, datasets.Value) and dtype.startswith(("int", "uint")) else "other"


def _names_of_rows(split_dataset, label_column: str, split: str) -> list:
    """Each row's class name (None for no label: a ClassLabel's -1 or a null string) of a "names" column."""
    feature = split_dataset.features[label_column]
    values = split_dataset.with_format("arrow")[label_column].to_pylist()
    if isinstance(feature, datasets.Value):  # strings
        return values
    names = feature.names
    bad = sorted({value for value in values if value is not None and not -1 <= value < len(names)})
    if bad:
        raise ValueError(f"label_column {label_column!r}: split {split!r} holds ids {bad[:5]} outside its own "
                         f"ClassLabel's {len(names)} names {names[:20]}: those rows name no class")
    return [None if value is None or value < 0 else names[value] for value in values]


def _with_label_column(split_dataset, label_column: str, ids: np.ndarray, feature: datasets.ClassLabel):
    """`split_dataset` with `ids` as its `label_column` under `feature`: a new in-memory column next to the
    (memory-mapped) images, since a cast or map would rewrite every image."""
    temporary = f"__{label_column}_aligned__"  # added before the old column goes: it may be the only one
    aligned = split_dataset.add_column(temporary, ids, feature=feature)
    aligned = aligned.remove_columns(label_column).rename_column(temporary, label_column)
    return aligned.select_columns(split_dataset.column_names)


NEW_CLASSES = ("refuse", "append")


def align_class_labels(dataset: datasets.DatasetDict, train_split: str, label_column: str,
                       splits: Iterable[str] | None = None, new_classes: str = "refuse") -> datasets.DatasetDict:
    """`dataset` with the `label_column` of `splits` (default: all) re-indexed to the train split's classes, by name.

    Sources give each split its own ids: `imagefolder` numbers the class folders of each split folder, and
    `class_encode_column` encodes each split on its own, so "green" is 1 in a [blue, green, red] train split but 0
    in a [green, red] validation split. The train split's names decide: a `ClassLabel`'s names in their order, or,
    for a string column, its sorted distinct values (the package encodes strings itself, with that one mapping for
    every split). Every other split's rows are mapped by name and get the same `ClassLabel`; a split lacking some
    train classes is fine.

    A class a split holds and the train split lacks: `new_classes="refuse"` raises ValueError naming the split and
    the classes (k-NN, probes, fine-tuning: no id could be right); "append" gives each such class an id after the
    train split's, in name order (retrieval: a query without positive; pre-training, which reads no label).
    Refused too: class names in some splits and plain integer ids in others (nothing says which class an id is).
    Left as they are: plain integer ids in every split, splits without the column, and a dataset without the train
    split (the column and split checks report those).
    """
    if new_classes not in NEW_CLASSES:
        raise ValueError(f"new_classes must be one of {NEW_CLASSES}, got {new_classes!r}")
    if train_split not in dataset or label_column not in dataset[train_split].column_names:
        return dataset
    used = [split for split in dict.fromkeys([train_split, *(dataset.keys() if splits is None else splits)])
            if split in dataset and label_column in dataset[split].column_names]
    kinds = {split: _label_kind(dataset[split], label_column) for split in used}
    named, numbered = [s for s in used if kinds[s] == "names"], [s for s in used if kinds[s] == "ids"]
    if named and numbered:
        raise ValueError(
            f"label_column {label_column!r} holds class names in split(s) {named} but plain integer ids in "
            f"{numbered}: nothing says which class an id is, so they cannot be matched. Store the classes the same way "
            f"in every split: as a ClassLabel or class-name strings (e.g. dataset[split] = dataset[split].cast_column("
            f"{label_column!r}, dataset[{named[0]!r}].features[{label_column!r}]) when that split's ids are already "
            f"{named[0]!r}'s), or as integer ids everywhere")
    if kinds[train_split] != "names":
        return dataset  # integer ids (or a dtype the label column check refuses) in every split
    names = _train_class_names(dataset[train_split], label_column)
    rows = {split: _names_of_rows(dataset[split], label_column, split) for split in named}
    known = set(names)
    unknown = {split: sorted({n for n in split_rows if n is not None and n not in known})
               for split, split_rows in rows.items()}
    for split, extra in unknown.items():
        if extra and new_classes == "refuse":
            shown = ", ".join(repr(name) for name in extra[:10]) + (f" and {len(extra) - 10} more"
                                                                     if len(extra) > 10 else "")
            raise ValueError(
                f"label_column {label_column!r}: split {split!r} holds class names that the train split "
                f"{train_split!r} lacks: {shown} (the train split's classes: {names[:20]}"
                f"{' ...' if len(names) > 20 else ''}). Class ids are the train split's, matched by name, so those "
                f"rows would have none: add those classes to the train split, drop their rows from {split!r}, or "
                f"leave {split!r} out with --eval_splits")
    names = names + sorted({name for extra in unknown.values() for name in extra})  # "append": after the train's
    feature = datasets.ClassLabel(names=names)
    ids = {name: index for index, name in enumerate(names)}
    result = dict(dataset)
    for split in named:
        if dataset[split].features[label_column] == feature:
            continue  # the same names in the same order: the ids already agree
        values = np.array([-1 if name is None else ids[name] for name in rows[split]], dtype=np.int64)
        result[split] = _with_label_column(dataset[split], label_column, values, feature)
    return datasets.DatasetDict(result)


def check_split(dataset, split: str, flag: str) -> None:
    """Raise ValueError unless `dataset` (a `DatasetDict` or `IterableDatasetDict`) has `split`: the one split check
    of every CLI; the message names the flag that chose the split and the splits there are."""
    if split not in dataset:
        raise ValueError(f"{flag}: unknown split {split!r}; the dataset has splits {sorted(dataset.keys())}")


def check_columns(
    dataset: datasets.Dataset | datasets.DatasetDict,
    image_column: str,
    label_column: str | None = None,
    other_columns: Iterable[str] = (),
) -> None:
    """Raise ValueError unless every split has `image_column` (a `datasets.Image`), `label_column` and `other_columns`.

    The message names the missing column, the split, and the columns that do exist.
    """
    splits = dataset.items() if isinstance(dataset, datasets.DatasetDict) else [(str(dataset.split), dataset)]
    wanted = [("image_column", image_column)]
    if label_column is not None:
        wanted.append(("label_column", label_column))
    wanted += [("column", name) for name in other_columns]
    for split, data in splits:
        columns = list(data.column_names)
        for argument, name in wanted:
            if name not in columns:
                raise ValueError(f"{argument} {name!r} not found in split {split!r}; the dataset has columns "
                                 f"{columns}")
        feature = data.features.get(image_column) if data.features is not None else None
        if feature is not None and not isinstance(feature, datasets.Image):
            raise ValueError(f"image_column {image_column!r} in split {split!r} is a {type(feature).__name__}, not "
                             f"a datasets.Image; columns with images: "
                             f"{[c for c, f in data.features.items() if isinstance(f, datasets.Image)]}")
