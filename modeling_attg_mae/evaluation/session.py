"""One evaluation flow: the labelled data, checked once, then a frozen encoder that gives features per split.

    data = EvaluationData(data_args, model_args.model_name_or_path, model_args.cache_dir)   # no model yet
    ... checks that need only labels (k vs bank size, few-shot counts, held-out slice) ...
    session = EvaluationSession(data, model_args, run_args)                                  # loads the encoder
    bank, bank_labels = session.features(data.train_split)          # (N, D) through the feature cache
    ...
    payload = session.finish(rows, "knn_results.json")              # JSON + model card, main process only

`EvaluationData` resolves the data (the checkpoint's recorded pre-training data when no data flag is given, see
`data.source.use_recorded_source`), loads it (`data.loading.load_data_source`) and checks, once and before any
model is loaded: the train split exists, the eval splits are other splits that exist, every one of them has the
image column and an integer label column with the train split's class ids (aligned by name,
`data.loading.align_class_labels`), and every label is a class id in [0, num_classes). Fine-tuning uses it
alone (it builds its own trainable model); k-NN, the probes, the embedding plot and label-based retrieval put an
`EvaluationSession` on top: the encoder (`model_source.load_encoder`), its evaluation transform, and the features of
a split through the feature cache.
"""

from __future__ import annotations

import json
import logging
import os
from functools import cached_property
from pathlib import Path

import torch

from ..model_source import load_encoder
from .feature_cache import cache_key, checkpoint_fingerprint
from .runner import cached_features_of_all_processes, eval_transform_for, extract_split_features, num_classes_of

logger = logging.getLogger(__name__)


def check_label_column(split_dataset, split: str, image_column: str, label_column: str) -> None:
    """Both columns must exist (and the image column hold images); the message lists the columns that do."""
    import datasets

    from ..data import check_columns

    check_columns(datasets.DatasetDict({split: split_dataset}), image_column, label_column)
    feature = split_dataset.features[label_column]
    dtype = getattr(feature, "dtype", type(feature).__name__)
    if not (isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value) and (
            dtype.startswith("int") or dtype.startswith("uint")))):
        # torch.as_tensor(..., dtype=long) would truncate floats (2.7 -> 2); strings are encoded before this
        # (align_class_labels) unless the train split has no names to encode them by. Not advised:
        # DatasetDict.class_encode_column, which numbers each split's values on its own
        raise ValueError(
            f"label_column {label_column!r} in split {split!r} has dtype {dtype}, not integer class ids; store the "
            f"class ids as integers or the class names as strings (encoded with the train split's sorted names, "
            f"the same ids in every split), or pass --label_column_name for the column that holds the classes"
        )


def check_label_range(labels: torch.Tensor, num_classes: int, split: str, label_column: str) -> None:
    """Every label of `split` a class id in [0, num_classes). datasets' -1 ("no label", e.g. an unlabelled test split)
    or an id past the train split's classes is otherwise scored as a miss (k-NN, probes, retrieval), crashes the
    loss (fine-tuning) or silently indexes another class; the message names the split, the values and their rows."""
    bad = (labels < 0) | (labels >= num_classes)
    if not bool(bad.any()):
        return
    values, counts = labels[bad].unique(return_counts=True)
    found = ", ".join(f"label {v} in {c} row{'' if c == 1 else 's'}"
                      for v, c in zip(values[:5].tolist(), counts[:5].tolist()))
    if values.numel() > 5:
        found += f" and {values.numel() - 5} other values"
    raise ValueError(
        f"split {split!r} has {found}, outside the class ids [0, {num_classes}) of label_column {label_column!r}; "
        f"-1 is datasets' 'no label' (also a null class name): drop those rows first (e.g. dataset.filter(lambda r: r[{label_column!r}] >= 0)) "
        f"or choose labelled splits with --train_split / --eval_splits"
    )


class EvaluationData:
    """The labelled dataset of an evaluation (or of fine-tuning), its split roles and columns, checked once.

    Args:
        data_args: `LabelledDataArguments` (`EvalDataArguments`); with no data flag, pointed in place at the data
            `model_name_or_path` was pre-trained on.
        model_name_or_path: the checkpoint whose recorded pre-training data applies when no data flag is given.
        cache_dir: the Hugging Face cache for the dataset.
        dataset: a `DatasetDict` to use instead of loading `data_args`' source (tests, notebooks).
        new_classes: a class an eval split holds and the train split lacks: "refuse" (k-NN, probes, fine-tuning) or
            "append" (label-based retrieval, where such a query has no positive), see `align_class_labels`.
    """

    def __init__(self, data_args, model_name_or_path, cache_dir: str | None = None, dataset=None,
                 new_classes: str = "refuse"):
        from ..data.loading import align_class_labels, check_split, load_data_source
        from ..data.source import data_source, dataset_label, use_recorded_source

        use_recorded_source(data_args, model_name_or_path)
        self.data_args = data_args
        self.train_split = data_args.train_split
        self.image_column, self.label_column = data_args.image_column_name, data_args.label_column_name
        if dataset is None:
            self.dataset = load_data_source(data_args, cache_dir, new_classes)  # class ids aligned there
        else:  # a dataset of the caller's gets the loader's alignment too
            self.dataset = align_class_labels(dataset, self.train_split, self.label_column,
                                              [self.train_split, *(data_args.eval_splits or dataset.keys())],
                                              new_classes)
        source = data_source(data_args)
        # what the data is: the results' "dataset" label, and (with the split's fingerprint) the feature cache's key
        self.label = dataset_label(source)
        self.description = {**source, "label": self.label}
        check_split(self.dataset, self.train_split, "--train_split")
        self.eval_splits = data_args.eval_splits or [s for s in self.dataset if s != self.train_split]
        if self.train_split in self.eval_splits:
            raise ValueError(
                f"--eval_splits {' '.join(self.eval_splits)} includes the train split {self.train_split!r}, the "
                "k-NN bank / probe or fine-tuning training set: every query would find itself (100% for k-NN). "
                "Evaluate on other splits, or choose another train split with --train_split"
            )
        if not self.eval_splits:
            raise ValueError(f"no eval split: the dataset has only {sorted(self.dataset.keys())}; pass --eval_splits")
        for split in self.eval_splits:
            check_split(self.dataset, split, "--eval_splits")
        for split in self.splits:
            check_label_column(self.dataset[split], split, self.image_column, self.label_column)
        for split in self.splits:
            labels = self.labels(split)
            if labels.numel():  # an empty split has no label to check (its callers refuse it by role)
                check_label_range(labels, self.num_classes, split, self.label_column)
        trained = set(self.train_labels.tolist())
        for split in self.eval_splits:
            unseen = sorted(set(self.labels(split).tolist()) - trained)
            if unseen:  # e.g. a ClassLabel shared by every split, some of whose classes have no train row
                names = self.class_names
                logger.warning(f"split {split!r} holds classes with no row in the train split {self.train_split!r}: "
                               f"{[names[c] for c in unseen[:10]]}; no k-NN vote, probe or fine-tuned head can "
                               "predict them (their rows count as misses), and retrieval finds no positive for them")

    @property
    def splits(self) -> list[str]:
        """The train split, then the eval splits: the splits checked here (and the only ones with features)."""
        return [self.train_split, *self.eval_splits]

    def labels(self, split: str) -> torch.Tensor:
        """The class ids `(N,)` of a split."""
        return torch.as_tensor(self.dataset[split][self.label_column], dtype=torch.long)

    @cached_property
    def train_labels(self) -> torch.Tensor:
        return self.labels(self.train_split)

    @cached_property
    def num_classes(self) -> int:
        """From the train split's `ClassLabel` feature when there is one (classes absent from it still count), else
        its largest class id + 1."""
        return num_classes_of(self.dataset[self.train_split], self.label_column, self.train_labels)

    @property
    def class_names(self) -> list[str]:
        """The `ClassLabel` names of the train split, else the class ids as text."""
        names = getattr(self.dataset[self.train_split].features[self.label_column], "names", None)
        return list(names) if names else [str(c) for c in range(self.num_classes)]


class EvaluationSession:
    """A frozen encoder on checked data: its evaluation transform, and the features of a split through the cache.

    Args:
        data: the checked `EvaluationData`.
        model_args: `EvalModelArguments` (checkpoint, pooling, cache_dir, revision).
        run_args: `EvalRunArguments` (batch size, workers, feature cache, output, model card).
        accelerator: an `accelerate.Accelerator`; one is made when not given. Features are sharded over its processes.
        pooling: what `features` gives, when not `model_args.pooling`: "tokens" for the attentive probe. It is also the
            feature cache's key and the results' / model card's "pooling".
    """

    def __init__(self, data: EvaluationData, model_args, run_args, accelerator=None, pooling: str | None = None):
        from accelerate import Accelerator

        self.data, self.model_args, self.run_args = data, model_args, run_args
        self.accelerator = accelerator or Accelerator()
        self.pooling = pooling or model_args.pooling
        self.model, self.info = load_encoder(model_args.model_name_or_path, model_args.cache_dir, model_args.model_revision)
        self.model.to(self.accelerator.device)
        self.transform = eval_transform_for(self.info)
        self.checkpoint = checkpoint_fingerprint(self.info.model_name_or_path, self.info.commit_hash)
        self.cache_hits: dict[str, bool] = {}

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def features(self, split: str, scales=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(features (N, D), labels (N,))` of one of the data's splits, through the feature cache (`(N, 1 + P, D)`
        tokens with pooling "tokens"; `scales`: the multi-scale retrieval features, see `extract_split_features`)."""
        if split not in self.data.splits:  # the checks above ran on these splits only
            raise ValueError(f"split {split!r} is neither the train split nor an eval split ({self.data.splits})")
        split_dataset = self.data.dataset[split]
        labels = self.data.labels(split)
        # the key's content is fixed: files cached by earlier versions must still hit
        key = cache_key(
            checkpoint=self.checkpoint,
            dataset={**self.data.description, "fingerprint": split_dataset._fingerprint, "num_rows": len(split_dataset)},
            split=split,
            transform=self.info.transform_description(),
            pooling=self.pooling,
        )
        if scales is not None:  # only then: the k-NN / probe keys (and their cache files) stay what they were
            key["scales"] = [float(s) for s in scales]
        run = self.run_args

        def compute():
            features = extract_split_features(
                self.model, split_dataset, self.data.image_column, self.transform, pooling=self.pooling,
                batch_size=run.batch_size, num_workers=run.num_workers, accelerator=self.accelerator,
                progress=run.progress and self.is_main, split=split, scales=scales,
            )
            return features, labels

        features, cached_labels, hit = cached_features_of_all_processes(
            run.feature_cache_dir, key, compute, run.overwrite_cache, self.accelerator)
        if not torch.equal(cached_labels, labels):
            raise ValueError(f"cached labels of split {split!r} differ from the dataset's; rerun with overwrite_cache")
        self.cache_hits[split] = hit
        return features, labels

    def payload(self, rows: list[dict], **fields) -> dict:
        """The results JSON's content (schema in pipelines.py), with `fields` added."""
        return {
            "schema_version": 1,
            "checkpoint": self.info.model_name_or_path,
            "dataset": self.data.label,
            "train_split": self.data.train_split,
            "pooling": self.pooling,
            "num_classes": self.data.num_classes,
            "num_processes": self.accelerator.num_processes,
            "results": rows,
            **fields,
        }

    def finish(self, rows: list[dict], filename: str, **fields) -> dict:
        """Write the JSON (the payload plus `fields`) and update (and push) the model card on the main process;
        returns the payload with `cache_hits` (and, on the main process, `results_file` / `model_card`)."""
        payload = self.payload(rows, **fields)
        if self.is_main:
            payload = write_results_and_card(payload, filename, self.model_args, self.run_args, self.data.label,
                                             self.pooling)
        payload["cache_hits"] = self.cache_hits
        return payload


def write_results(path: str | os.PathLike, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def write_results_and_card(payload: dict, filename: str, model_args, run_args, dataset_label: str,
                           pooling: str | None = None) -> dict:
    """`<output_dir>/<filename>` and the checkpoint folder's model card (pushed with `push_to_hub`); the caller
    runs it on the main process only. `pooling` names the features on the card (default: `model_args.pooling`).
    Returns the payload with `results_file` (and `model_card`) added."""
    path = write_results(Path(run_args.output_dir) / filename, payload)
    payload["results_file"] = str(path)
    from ..hub import push_model_card, update_model_card_results

    checkpoint_dir = Path(model_args.model_name_or_path)
    repo_id = run_args.hub_model_id or (None if checkpoint_dir.is_dir() else model_args.model_name_or_path)
    if run_args.update_model_card and checkpoint_dir.is_dir():
        update_model_card_results(checkpoint_dir, payload["results"], dataset=dataset_label,
                                  pooling=pooling or model_args.pooling)
        payload["model_card"] = str(checkpoint_dir / "README.md")
    if run_args.push_to_hub:
        if repo_id is None:
            raise ValueError("push_to_hub needs --hub_model_id for a local checkpoint folder")
        if not checkpoint_dir.is_dir():
            raise ValueError("push_to_hub updates the card of a local checkpoint folder; download the checkpoint first")
        push_model_card(checkpoint_dir, repo_id)
    return payload


__all__ = ["EvaluationData", "EvaluationSession", "check_label_column", "check_label_range",
           "write_results", "write_results_and_card"]
