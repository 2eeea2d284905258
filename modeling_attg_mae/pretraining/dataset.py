"""The run's data: the source dataset the arguments name, its splits checked, truncated and given attention maps.

Apart from the run (wiring.py) because data loading changes on its own schedule (one loader for every CLI is being
unified in `modeling_attg_mae.data`), and because each check here must fail once the dataset is open but before
any map is computed or any weight is built. The source itself is loaded by the one loader of
every CLI, `modeling_attg_mae.data.load_data_source`.
"""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import torch

from ..data.loading import check_split, load_data_source
from .arguments import DataArguments, ModelArguments


def load_pretraining_data(data_args: DataArguments, model_args: ModelArguments, main_process_first,
                          with_maps: bool = True, run_knn: bool = False, dataset=None) -> dict:
    """{split: Dataset} for the train (and validation) split, with an `attention_map` column when `with_maps`
    (computed by the object-discovery step and cached when the dataset has none). `run_knn`: check that the
    k-NN evaluation (after training or online) has labelled splits to work on, before any map is computed."""
    from ..data.images import undecoded_images
    from ..data.loading import check_columns
    from ..data.transforms import check_attention_map_column

    if dataset is None:
        with main_process_first(desc="dataset loading"):
            dataset = load_data_source(data_args, model_args.cache_dir,
                                       new_classes="refuse" if run_knn else "append")
    wanted = [data_args.train_split] + ([data_args.validation_split] if data_args.validation_split else [])
    for split in wanted:
        check_split(dataset, split, "--train_split" if split == data_args.train_split else "--validation_split")
        check_columns(dataset[split], data_args.image_column_name)
    if run_knn:
        check_knn_splits(dataset, data_args)
    splits = {}
    for split in wanted:
        part = dataset[split]
        limit = data_args.max_train_samples if split == data_args.train_split else data_args.max_eval_samples
        if isinstance(part, datasets.IterableDataset):  # streaming: no length, the first `limit` rows
            part = part.take(limit) if limit is not None else part
        elif limit is not None and limit < len(part):
            part = part.select(range(limit))
        if with_maps:
            if data_args.attention_column not in part.column_names:
                part = compute_attention_maps(part, data_args, main_process_first, split)
            elif data_args.attention_column != "attention_map":
                part = part.rename_column(data_args.attention_column, "attention_map")
            check_attention_map_column(part, "attention_map", split)
        # decoded by our collator, which names the split, row and file of an image that cannot be read
        splits[split] = undecoded_images(part, data_args.image_column_name)
    return splits


class StreamPasses(torch.utils.data.IterableDataset):
    """A streamed training split read pass after pass, without end, each example with its pass (`__epoch__`) and
    its position in that pass (`__index__`), the pass reshuffled by the stream's `set_epoch(pass)`.

    Why: the Trainer takes an `IterableDataset` epoch to be `max_steps` steps long, also on resume (epochs trained =
    global step // max_steps, then it skips global step batches of *that* epoch). A stream shorter than the run
    ends its epoch early and the next epoch is the next pass, so a run resumed in its second pass replayed the
    second pass from its start (the batches skipped ran off the end of a first pass). Read as one endless epoch,
    the Trainer's own count is right: the batches it skips are exactly the ones the interrupted run trained on.
    (Upstream: huggingface/transformers#26413, the skip runs off the end of the stream, and the open fix #33544;
    pinned by tests/test_fault_injection_streaming.py.)
    """

    def __init__(self, stream: datasets.IterableDataset):
        self.stream = stream
        self._skip = 0  # rows to drop at the start of the next iteration (a resume, `skip_rows_on_next_iteration`)

    def skip_rows_on_next_iteration(self, rows: int) -> None:
        """Let the next iteration start `rows` rows in, without decoding or collating them (the Trainer's
        default skip collates every skipped batch: the images of the whole trained part, decoded again)."""
        self._skip = int(rows)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        for epoch in itertools.count():
            self.stream.set_epoch(epoch)
            empty = True
            for index, example in enumerate(self.stream):
                empty = False
                if skip:
                    skip -= 1
                    continue
                yield {**example, "__epoch__": epoch, "__index__": index}
            if empty:  # no row (or none for this DataLoader worker): end, rather than loop forever
                return


def knn_eval_splits(dataset, data_args: DataArguments) -> list[str]:
    """The splits `--run_knn` and `--knn_monitor` report: `--eval_splits`, or every split but the training one."""
    return data_args.eval_splits or [split for split in dataset if split != data_args.train_split]


def check_knn_splits(dataset, data_args: DataArguments) -> None:
    """`--run_knn` / `--knn_monitor` need labelled splits besides the training one: say so before maps and
    training, not after."""
    splits = knn_eval_splits(dataset, data_args)
    if not splits:
        raise ValueError(f"--run_knn / --knn_monitor evaluate on the splits besides {data_args.train_split!r}, but "
                         f"the dataset has only {list(dataset)}; use a dataset with a validation split, or drop them")
    for split in [data_args.train_split, *splits]:
        check_split(dataset, split, "--train_split" if split == data_args.train_split else "--eval_splits")
        if split == data_args.train_split and split in (data_args.eval_splits or []):
            raise ValueError(f"--eval_splits includes the training split {split!r}: the k-NN bank would contain "
                             "every query (100%); choose other splits")
        if data_args.label_column_name not in dataset[split].column_names:
            raise ValueError(f"--run_knn / --knn_monitor need a --label_column_name {data_args.label_column_name!r} "
                             f"column of class ids; split {split!r} has {dataset[split].column_names}. Pass "
                             "--label_column_name, or drop --run_knn / --knn_monitor")
    # the evaluation's label checks, here before training: a row without a class would be refused by --run_knn
    # only after the whole run, and scored as a silent miss by the monitor
    from ..evaluation.runner import num_classes_of
    from ..evaluation.session import check_label_column, check_label_range

    label = data_args.label_column_name
    labels = {split: torch.as_tensor(np.array(dataset[split].with_format("arrow")[label].to_numpy(
                                     zero_copy_only=False)), dtype=torch.long) for split in [data_args.train_split, *splits]}
    for split in labels:
        check_label_column(dataset[split], split, data_args.image_column_name, label)
    num_classes = num_classes_of(dataset[data_args.train_split], label, labels[data_args.train_split])
    for split, split_labels in labels.items():
        if split_labels.numel():
            check_label_range(split_labels, num_classes, split, label)


def check_attention_arguments(data_args: DataArguments) -> None:
    """Fail before any data or model work when the object-discovery arguments cannot work."""
    from ..object_discovery.map_step import AttentionMapStep
    from ..object_discovery.online import check_online_method

    if data_args.attention_method == "self":  # the training model is the detector: nothing to load or check
        return
    if data_args.attention_online:
        check_online_method(data_args.attention_method)
    AttentionMapStep(data_args.attention_method, data_args.attention_model_name_or_path,
                     image_column=_attention_input_column(data_args), grid_size=data_args.attention_grid_size,
                     model_flag="--attention_model_name_or_path")


def _attention_input_column(data_args: DataArguments) -> str:
    if data_args.attention_method == "column":
        if not data_args.attention_source_column:
            raise ValueError("--attention_method column needs --attention_source_column (e.g. object_mask)")
        return data_args.attention_source_column
    return data_args.image_column_name


def compute_attention_maps(part, data_args: DataArguments, main_process_first, split: str):
    from ..object_discovery.map_step import add_attention_maps

    # the main process computes and caches the maps; the others then hit the cache
    with main_process_first(desc=f"attention maps ({split})"):
        return add_attention_maps(
            part, method=data_args.attention_method, model_name_or_path=data_args.attention_model_name_or_path,
            image_column=_attention_input_column(data_args), grid_size=data_args.attention_grid_size,
            batch_size=data_args.attention_batch_size, num_proc=data_args.attention_num_proc,
            desc=f"attention maps ({data_args.attention_method}, {split})",
        )

