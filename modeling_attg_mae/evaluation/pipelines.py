"""The two evaluations end to end: `run_knn` and `run_linear_probe` (what the CLIs call).

Results JSON (`<output_dir>/knn_results.json`, `<output_dir>/linear_probe_results.json`), schema version 1:

    {
      "schema_version": 1,
      "checkpoint": "<model_name_or_path>", "dataset": "<dataset label>", "train_split": "train",
      "pooling": "cls", "num_classes": 10, "num_processes": 1,      # "tokens" for --head attentive
      "results": [
        {"method": "knn", "split": "validation", "k": 20, "shots": null, "seed": null,
         "top1": 81.2, "top5": 97.0, "num_queries": 500},
        {"method": "knn_few_shot", "split": "validation", "k": 5, "shots": 1, "seed": 0, "top1": ..., "top5": ...},
        {"method": "knn_few_shot", "split": "validation", "k": 5, "shots": 1, "seed": null, "top1": <mean>,
         "top5": <mean>, "top1_std": ..., "top5_std": ..., "num_seeds": 3},
        {"method": "linear_probe" | "linear_probe_features", "k": null, "shots": null, "seed": 0, ...,
         "lr_selection": "held_out_sweep" | "fixed", "base_lr": 3.0, "weight_decay": 0.0, "train_loss": 0.41,
         "degenerate": false, "degenerate_reason": null, "num_parameters": 7690,  # D=768, C=10
         "sweep": {"chosen_base_lr": 3.0, "chosen_weight_decay": 0.0, "held_out_split": "train",
                   "held_out_fraction": 0.15, "num_held_out": 900, "held_out_seed": 0,
                   "grid": [{"base_lr": 0.1, "weight_decay": 0.0, "held_out_top1": 24.3, "held_out_loss": ...,
                             "train_loss": ...}, ...]}},
        {"method": "linear_few_shot" | "linear_few_shot_features", "shots": 10, "seed": 0, ...}, ...
        {"method": "attentive_probe", "k": null, "shots": null, "seed": 0, ..., "lr_selection": "held_out_sweep",
         "base_lr": 0.001, "weight_decay": 0.05, "train_loss": ..., "degenerate": false, "degenerate_reason": null,
         "num_parameters": 3135208, "attentive_num_queries": 1, "attentive_num_heads": 8, "sweep": {...}},  # D=768, C=1000
        {"method": "attentive_few_shot", "shots": 10, "seed": 0, ...}, ...
      ]
    }

With `--save_embedding_plot`, the k-NN payload also has `"embedding_plot": "<output_dir>/embedding.png"` and
`"embedding_coordinates": "<output_dir>/embedding_tsne.json"` (see `embedding_plot.py`).

`top1` / `top5` are accuracies in percent. A row with `seed: null` and `num_seeds` is the mean (and sample
std) over the seeds of the rows above it. "…_features" methods are the fast mode on cached features
(no augmentation); "linear_probe" is MAE's protocol. "attentive_…" rows (`--head attentive`, features mode only)
come from the attentive probe on the cached tokens (CLS + patches) of un-augmented images; the payload's
`pooling` is then "tokens". `num_parameters` is the probe head's trainable parameter count (linear: D x C + C;
attentive: see `attentive_probe_num_parameters`), on every probe row, few-shot summary rows included.

Probe rows (linear and attentive) say how their lr was set: `lr_selection` "held_out_sweep" (features mode, the default; `sweep`
holds the grid's held-out accuracies) or "fixed" (`--base_lr`; the protocol's row carries the same sweep on
cached features as `held_out_check`). `degenerate` flags a head that did not train (`degenerate_reason` says
how); the summary row of few-shot seeds is degenerate when any seed is.
"""

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..features import TOKENS
from .attentive_probe import check_attentive_head, select_attentive_probe_hparams, train_attentive_probe_on_features
from .embedding_plot import check_plot_sizes, coordinates_path, save_embedding_plot, subsample_split
from .few_shot import held_out_split, mean_std, sample_few_shot
from .knn import knn_classify
from .linear_probe import (
    degenerate_reason,
    linear_probe_rank,
    select_linear_probe_hparams,
    train_linear_probe,
    train_linear_probe_on_features,
)
from .metrics import top_k_accuracy
from .runner import probe_train_transform_for, token_features_gb
from .session import EvaluationData, EvaluationSession

logger = logging.getLogger(__name__)
# The protocol's fixed lr is reported as off when the best grid point beats it on the held-out slice by this much.
HELD_OUT_CHECK_MARGIN = 5.0


def _accuracy_row(method: str, split: str, ranked: torch.Tensor, labels: torch.Tensor, **fields) -> dict:
    accuracy = top_k_accuracy(ranked, labels)
    return {
        "method": method,
        "split": split,
        "k": fields.pop("k", None),
        "shots": fields.pop("shots", None),
        "seed": fields.pop("seed", None),
        "top1": 100.0 * accuracy["top1"],
        "top5": 100.0 * accuracy["top5"],
        "num_queries": int(labels.shape[0]),
        **fields,
    }


# what a probe row says about its head, copied to the few-shot summary row (the same head for every seed)
_HEAD_FIELDS = ("num_parameters", "attentive_num_queries", "attentive_num_heads")


def _summary_row(rows: list[dict]) -> dict:
    top1, top1_std = mean_std([r["top1"] for r in rows])
    top5, top5_std = mean_std([r["top5"] for r in rows])
    first = rows[0]
    return {
        "method": first["method"], "split": first["split"], "k": first["k"], "shots": first["shots"], "seed": None,
        "top1": top1, "top5": top5, "top1_std": top1_std, "top5_std": top5_std, "num_seeds": len(rows),
        "num_queries": first["num_queries"],
        **({"degenerate": any(r["degenerate"] for r in rows)} if "degenerate" in first else {}),
        **{name: first[name] for name in _HEAD_FIELDS if name in first},
    }


def _check_knn_sizes(data: EvaluationData, knn_args) -> None:
    """k and the few-shot settings against the bank's size and per-class counts, from the labels alone: before
    the encoder is loaded. (The few-shot banks drawn later have exactly `shots` images of every class present.)"""
    split = data.train_split
    size = len(data.dataset[split])
    if max(knn_args.ks) > size:
        raise ValueError(f"k={max(knn_args.ks)} is larger than the k-NN bank ({size} train images in split "
                         f"{split!r}); pass --ks no larger than {size}")
    if not knn_args.few_shot:
        return
    counts = torch.bincount(data.train_labels)
    present = counts[counts > 0]
    for shots in knn_args.few_shot:
        if shots > int(present.min()):
            smallest = int(torch.nonzero(counts == present.min())[0])
            raise ValueError(f"--few_shot {shots} needs {shots} images of every class, but class {smallest} has only "
                             f"{int(present.min())} in split {split!r}; pass --few_shot sizes up to {int(present.min())}")
        if knn_args.few_shot_k > shots * present.numel():
            raise ValueError(f"--few_shot_k {knn_args.few_shot_k} is larger than the {shots}-shot bank ({shots} x "
                             f"{present.numel()} classes = {shots * present.numel()} images); pass a smaller --few_shot_k")


def run_knn(model_args, data_args, run_args, knn_args, dataset=None, accelerator=None) -> dict:
    """Weighted k-NN (all `ks`) and few-shot k-NN on every eval split; returns the results payload."""
    data = EvaluationData(data_args, model_args.model_name_or_path, model_args.cache_dir, dataset)
    _check_knn_sizes(data, knn_args)
    plot = knn_args.save_embedding_plot
    if plot:
        check_plot_sizes(data.dataset, data.eval_splits, data.label_column, knn_args.embedding_plot_max_points)
    setup = EvaluationSession(data, model_args, run_args, accelerator)
    bank, bank_labels = setup.features(data.train_split)
    num_classes = data.num_classes
    bank = bank.to(setup.accelerator.device)  # the similarity matmuls run where the model ran (the GPU if any)
    subsets = {
        (shots, seed): sample_few_shot(bank_labels, shots, seed) for shots in knn_args.few_shot for seed in run_args.seeds
    }
    rows = []
    plotted = {}  # split -> the subsample the embedding plot shows (kept small, not the whole split)
    for split in data.eval_splits:
        queries, query_labels = setup.features(split)
        if not setup.is_main:
            continue
        if plot:
            plotted[split] = subsample_split(queries, query_labels, knn_args.embedding_plot_max_points,
                                             knn_args.embedding_plot_seed)
        ranked = knn_classify(bank, bank_labels, queries, knn_args.ks, knn_args.temperature, num_classes, progress=run_args.progress)
        rows += [_accuracy_row("knn", split, ranked[k], query_labels, k=k) for k in sorted(ranked)]
        for shots in knn_args.few_shot:
            per_seed = []
            for seed in run_args.seeds:
                idx = subsets[(shots, seed)]
                few = knn_classify(bank[idx], bank_labels[idx], queries, [knn_args.few_shot_k], knn_args.temperature, num_classes)
                per_seed.append(
                    _accuracy_row("knn_few_shot", split, few[knn_args.few_shot_k], query_labels, k=knn_args.few_shot_k, shots=shots, seed=seed)
                )
            rows += per_seed + [_summary_row(per_seed)]
    extra = {}
    if plot and setup.is_main:
        record = save_embedding_plot(
            [(setup.info.model_name_or_path, plotted)], Path(run_args.output_dir) / "embedding.png",
            data.class_names, _plot_title(model_args.pooling, data.label),
            knn_args.embedding_plot_perplexity, knn_args.embedding_plot_seed,
        )
        extra = {"embedding_plot": record["image"], "embedding_coordinates": str(coordinates_path(record["image"]))}
    return setup.finish(rows, "knn_results.json", **extra)


def _plot_title(pooling: str, dataset_label: str) -> str:
    return f"t-SNE of {pooling} features, coloured by class - {dataset_label}"


def plot_embeddings(plot_args, data_args, dataset=None, accelerator=None) -> dict:
    """The comparison picture: one row per checkpoint of `plot_args.checkpoints`, one column per eval split.

    Features come through the feature cache (shared with run_knn). With no data flag, each checkpoint's recorded
    pre-training data is used, as run_knn does; checkpoints recorded on different data are an error, since their
    rows would not show the same images. Returns the coordinates record (`{}` on processes other than the main).
    """
    import copy

    from ..data.source import data_source, dataset_label, use_recorded_source
    from .arguments import EvalModelArguments, EvalRunArguments

    # every checkpoint's data source first (a json read each): a mismatch fails before any model is loaded
    per_checkpoint = []
    for checkpoint in plot_args.checkpoints:
        own = copy.deepcopy(data_args)
        use_recorded_source(own, checkpoint)
        per_checkpoint.append(own)
    labels = {checkpoint: dataset_label(data_source(own)) for checkpoint, own in zip(plot_args.checkpoints, per_checkpoint)}
    if len(set(labels.values())) > 1:
        listed = "; ".join(f"{checkpoint}: {label}" for checkpoint, label in labels.items())
        raise ValueError(f"the checkpoints were pre-trained on different data ({listed}), so their rows would show "
                         "different images; pass data flags (e.g. --dataset_name, or --train_dir/--validation_dir) to "
                         "plot them all on the same data")
    data_args = per_checkpoint[0]
    run_args = EvalRunArguments(
        output_dir=str(Path(plot_args.output).parent), feature_cache_dir=plot_args.feature_cache_dir or "",
        overwrite_cache=plot_args.overwrite_cache, batch_size=plot_args.batch_size, num_workers=plot_args.num_workers,
        update_model_card=False, progress=plot_args.progress,
    )
    # the dataset is loaded and checked once and shared: the same splits, and the same subsample, in every row
    data = EvaluationData(data_args, plot_args.checkpoints[0], plot_args.cache_dir, dataset)
    check_plot_sizes(data.dataset, data.eval_splits, data.label_column, plot_args.embedding_plot_max_points)
    rows = []
    for checkpoint in plot_args.checkpoints:
        model_args = EvalModelArguments(model_name_or_path=checkpoint, pooling=plot_args.pooling, cache_dir=plot_args.cache_dir)
        session = EvaluationSession(data, model_args, run_args, accelerator)
        accelerator = session.accelerator
        samples = {}
        for split in data.eval_splits:
            features, split_labels = session.features(split)
            samples[split] = subsample_split(features, split_labels, plot_args.embedding_plot_max_points,
                                             plot_args.embedding_plot_seed)
        rows.append((checkpoint, samples))
        session = None  # one encoder in memory at a time
    if not accelerator.is_main_process:
        return {}
    return save_embedding_plot(
        rows, plot_args.output, data.class_names, _plot_title(plot_args.pooling, data.label),
        plot_args.embedding_plot_perplexity, plot_args.embedding_plot_seed,
    )


class _AugmentedImages(Dataset):
    def __init__(self, split_dataset, image_column, label_column, transform):
        self.data, self.image_column, self.label_column, self.transform = split_dataset, image_column, label_column, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        example = self.data[int(index)]
        return {"pixel_values": self.transform(example[self.image_column]), "labels": int(example[self.label_column])}


def _degenerate_advice(fast: bool, sweep: bool) -> str:
    if fast and sweep:
        return "no lr of the grid trained the head: widen --lr_grid, train longer (--epochs), or check the features"
    if fast:
        return "its lr is off: drop --sweep false to pick the lr on held-out train images, or raise --base_lr"
    return ("MAE's base lr 0.1 assumes ImageNet's step count: raise --base_lr (see the row's held_out_check), "
            "or use --mode features, which picks the lr on held-out train images")


def _check_token_memory(setup: EvaluationSession, sweep: bool, max_gb: float) -> None:
    """The attentive probe holds every split's tokens in memory: refuse, before encoding anything, a run whose
    tokens would not fit under `max_gb` (the alternative, streaming tokens from disk every epoch, is not built).

    The lr sweep indexes the train tokens into fit and held-out parts, a second copy of them: counted too.
    """
    train_split, eval_splits, dataset = setup.data.train_split, setup.data.eval_splits, setup.data.dataset
    train_copies = 2 if sweep else 1
    num_images = train_copies * len(dataset[train_split]) + sum(len(dataset[s]) for s in eval_splits)
    size = token_features_gb(setup.info, num_images)
    if size > max_gb:
        num_tokens = 1 + (setup.info.image_size // setup.info.patch_size) ** 2
        world = setup.accelerator.num_processes
        raise ValueError(
            f"the attentive probe would hold {size:.1f} GB of float32 tokens in memory ({num_images} images x "
            f"{num_tokens} tokens x {setup.info.hidden_size} dims: splits {', '.join([train_split, *eval_splits])}"
            f"{', the train split twice for the lr sweep' if sweep else ''}"
            f"{f', in each of the {world} processes' if world > 1 else ''}), over --max_token_cache_gb {max_gb:g}; "
            f"raise --max_token_cache_gb if the machine has the memory (the feature cache needs as much disk), "
            f"evaluate fewer images (--eval_splits, a smaller --train_split), or use --head linear"
        )


def run_linear_probe(model_args, data_args, run_args, probe_args, dataset=None, accelerator=None) -> dict:
    """Linear probe (protocol or fast mode) or attentive probe (fast mode), and few-shot probes, each evaluated on
    every eval split.

    Fast mode picks base lr / weight decay on a held-out slice of the train split (`select_linear_probe_hparams`,
    or `select_attentive_probe_hparams` for `probe_args.head == "attentive"`: the same rule and slice) unless
    `probe_args.sweep` is off; the protocol keeps its fixed recipe and gets the same sweep, on cached un-augmented
    features, as a held-out check of its lr. Every row is checked with `degenerate_reason`.
    """
    fast = probe_args.mode == "features"
    attentive = probe_args.head == "attentive"  # features mode only: LinearProbeArguments refuses the protocol's
    sweep = fast and probe_args.sweep
    seed = run_args.seeds[0]
    data = EvaluationData(data_args, model_args.model_name_or_path, model_args.cache_dir, dataset)
    train_labels, num_classes = data.train_labels, data.num_classes
    if sweep or not fast:  # a class too small to split fails here, before the encoder is loaded
        held_out_split(train_labels, probe_args.held_out_fraction, seed)
    # the attentive probe trains on every token: "tokens" is then the features' (and the cache key's) pooling
    setup = EvaluationSession(data, model_args, run_args, accelerator, pooling=TOKENS if attentive else None)
    accelerator = setup.accelerator
    head_fields = {}
    if attentive:  # a bad head shape or too many tokens fail here, before any image is encoded
        head_fields = {"attentive_num_queries": probe_args.attentive_num_queries,
                       "attentive_num_heads": probe_args.attentive_num_heads}
        check_attentive_head(setup.info.hidden_size, probe_args.attentive_num_heads, probe_args.attentive_num_queries)
        _check_token_memory(setup, sweep, probe_args.max_token_cache_gb)
    # fast mode trains on these; the protocol's held-out check sweeps on them
    train_features, _ = setup.features(data.train_split)
    num_features = train_features.shape[-1]
    eval_features = {split: setup.features(split) for split in data.eval_splits}
    suffix = "_features" if fast else ""
    method, few_shot_method = (("attentive_probe", "attentive_few_shot") if attentive
                               else ("linear_probe" + suffix, "linear_few_shot" + suffix))
    schedule = dict(epochs=probe_args.epochs, warmup_epochs=probe_args.warmup_epochs)
    progress = run_args.progress and setup.is_main
    if not fast:
        augmented = _AugmentedImages(
            data.dataset[data.train_split], data.image_column, data.label_column, probe_train_transform_for(setup.info),
        )
    attentive_kwargs = dict(num_queries=probe_args.attentive_num_queries, num_heads=probe_args.attentive_num_heads,
                            device=accelerator.device)

    def select(features, labels, base_lrs, seed: int):
        common = dict(held_out_fraction=probe_args.held_out_fraction, batch_size=probe_args.probe_batch_size, seed=seed,
                      progress=progress, **schedule)
        if attentive:  # the tokens stay in host memory; batches move to the device (see attentive_probe._train_heads)
            return select_attentive_probe_hparams(features, labels, num_classes, base_lrs, probe_args.weight_decay_grid,
                                                  **attentive_kwargs, **common)
        return select_linear_probe_hparams(
            features.to(accelerator.device), labels.to(accelerator.device), num_classes, base_lrs,
            probe_args.weight_decay_grid, **common,
        )

    def train(indices: torch.Tensor | None, seed: int):
        """`(head, fields of its rows)`."""
        features = train_features if indices is None else train_features[indices]
        labels = train_labels if indices is None else train_labels[indices]
        fields = {"lr_selection": "fixed", "base_lr": probe_args.base_lr, "weight_decay": probe_args.weight_decay}
        if sweep:
            selection = select(features, labels, probe_args.lr_grid, seed)
            fields = {"lr_selection": "held_out_sweep", "base_lr": selection.base_lr,
                      "weight_decay": selection.weight_decay, "sweep": selection.as_dict()}
        hparams = dict(batch_size=probe_args.probe_batch_size, base_lr=fields["base_lr"],
                       weight_decay=fields["weight_decay"], seed=seed, progress=progress, **schedule)
        if attentive:
            return train_attentive_probe_on_features(features, labels, num_classes, **attentive_kwargs, **hparams), fields
        if fast:
            head = train_linear_probe_on_features(
                features.to(accelerator.device), labels.to(accelerator.device), num_classes, **hparams)
            return head, fields
        data = augmented if indices is None else Subset(augmented, indices.tolist())
        per_process = max(2, probe_args.probe_batch_size // accelerator.num_processes)
        loader = DataLoader(
            data, batch_size=min(per_process, len(data)), shuffle=True, drop_last=True,
            num_workers=run_args.num_workers, generator=torch.Generator().manual_seed(seed),
        )
        loader = accelerator.prepare(loader)
        head = train_linear_probe(
            setup.model, loader, num_features, num_classes, model_args.pooling, seed=seed, accelerator=accelerator,
            progress=progress, base_lr=probe_args.base_lr, weight_decay=probe_args.weight_decay, **schedule,
        )
        return head, fields

    def evaluate(head, fields: dict, method: str, **row_fields) -> list[dict]:
        rows = []
        num_parameters = sum(p.numel() for p in head.parameters())  # trainable: BatchNorm(affine=False) has none
        for split, (features, labels) in eval_features.items():
            # tokens: a batch of (b, 1 + P, D) goes through the attention, so keep it at the training batch size
            ranked = linear_probe_rank(head, features, **({"batch_size": probe_args.probe_batch_size} if attentive else {}))
            reason = degenerate_reason(ranked[:, 0], labels, num_classes, head.train_loss)
            rows.append(_accuracy_row(
                method, split, ranked, labels, **row_fields, **fields, train_loss=head.train_loss,
                degenerate=reason is not None, degenerate_reason=reason, num_parameters=num_parameters, **head_fields,
            ))
        return rows

    head, fields = train(None, seed)
    if not fast:
        check_grid = sorted({*probe_args.lr_grid, probe_args.base_lr})
        fields["held_out_check"] = _protocol_held_out_check(select(train_features, train_labels, check_grid, seed), probe_args.base_lr)
    rows = evaluate(head, fields, method, seed=seed) if setup.is_main else []
    for shots in probe_args.few_shot:
        per_seed = []
        for seed in run_args.seeds:
            head, fields = train(sample_few_shot(train_labels, shots, seed), seed)
            per_seed += evaluate(head, fields, few_shot_method, shots=shots, seed=seed)
        for split in data.eval_splits if setup.is_main else []:
            rows += [r for r in per_seed if r["split"] == split]
            rows.append(_summary_row([r for r in per_seed if r["split"] == split]))
    if setup.is_main:
        _warn_untrustworthy(rows, _degenerate_advice(fast, sweep))
    return setup.finish(rows, "linear_probe_results.json")


def _protocol_held_out_check(selection, base_lr: float) -> dict:
    """The sweep's verdict on the protocol's fixed lr: its held-out top-1 against the best grid point's."""
    own = next(point for point in selection.grid if point["base_lr"] == base_lr)
    best = max(point["held_out_top1"] for point in selection.grid)
    return {**selection.as_dict(), "base_lr_held_out_top1": own["held_out_top1"],
            "base_lr_is_off": best - own["held_out_top1"] > HELD_OUT_CHECK_MARGIN}


def _warn_untrustworthy(rows: list[dict], advice: str) -> None:
    for row in rows:
        if row.get("degenerate") and row.get("seed") is not None:
            logger.warning(
                "probe %s on %s (shots=%s, seed=%s) is degenerate: %s. The head did not train, so %.2f%% says "
                "nothing about the features; %s.",
                row["method"], row["split"], row["shots"], row["seed"], row["degenerate_reason"], row["top1"], advice,
            )
        check = row.get("held_out_check")
        if check and check["base_lr_is_off"] and row["split"] == rows[0]["split"]:
            logger.warning(
                "held-out check: the protocol's base_lr %g reaches %.1f%% on %d held-out train images where base_lr %g "
                "reaches %.1f%% (cached features, same schedule): set --base_lr %g.",
                row["base_lr"], check["base_lr_held_out_top1"], check["num_held_out"], check["chosen_base_lr"],
                max(point["held_out_top1"] for point in check["grid"]), check["chosen_base_lr"],
            )


__all__ = ["run_knn", "run_linear_probe", "plot_embeddings"]
