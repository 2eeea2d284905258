"""Online k-NN monitor: DINO's weighted k-NN of the model being pre-trained, at regular steps, logged as
`eval/knn_top1_<split>` to TensorBoard and `trainer_state.json`.

It turns a pre-training run into a curve a researcher can trust (solo-learn and lightly do the same). It uses the
evaluation's own pieces (`extract_split_features`: masking off, patch order kept, sharded over processes;
`knn_classify`; the evaluation transform), so its last value equals `run_knn.py` on the exported checkpoint with
the same bank and queries.
"""

from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

from .knn import DEFAULT_TEMPERATURE, knn_classify
from .metrics import top_k_accuracy
from .runner import extract_split_features

logger = logging.getLogger(__name__)


def monitor_subset(dataset, size: int | None, seed: int):
    """A fixed, seeded subset of `size` rows (all rows when `size` is None or larger), in dataset order."""
    if size is None or size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(dataset), generator=generator)[:size].sort().values
    return dataset.select(rows.tolist())


class KNNMonitorCallback(TrainerCallback):
    """Every `every_steps` optimizer steps and at the end of training: features of a fixed bank (from the train
    split) and of each evaluation split, weighted k-NN top-1 (percent), logged through the trainer.

    Args:
        bank: the labelled bank (a `datasets.Dataset`, typically a seeded subset of the train split).
        queries: `{split name: Dataset}` to classify.
        transform: `image -> pixel_values (3, S, S)`, the evaluation transform.
        image_column, label_column: the columns holding images and integer class ids.
        every_steps: how often (in optimizer steps); the last step is always measured.
        k, temperature, pooling: DINO's k-NN settings and the global feature.
        num_classes: C (the ClassLabel size when known).
    """

    def __init__(self, bank, queries: dict, transform, image_column: str = "image", label_column: str = "label",
                 every_steps: int = 100, k: int = 20, temperature: float = DEFAULT_TEMPERATURE,
                 pooling: str = "cls", batch_size: int = 256, num_classes: int | None = None):
        if every_steps < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        if k > len(bank):
            raise ValueError(f"k={k} is larger than the monitor's bank ({len(bank)} images)")
        self.bank, self.queries, self.transform = bank, queries, transform
        self.image_column, self.label_column = image_column, label_column
        self.every_steps, self.k, self.temperature, self.pooling = every_steps, k, temperature, pooling
        self.batch_size, self.num_classes = batch_size, num_classes
        self.bank_labels = torch.as_tensor(bank[label_column], dtype=torch.long)
        self.query_labels = {name: torch.as_tensor(split[label_column], dtype=torch.long)
                             for name, split in queries.items()}
        self.trainer = None  # set by the caller: the trainer logs the numbers and shards the features
        self._last_step = -1

    def measure(self, model, accelerator=None) -> dict[str, float]:
        """`{"knn_top1_<split>": top-1 %}` of `model` now (every process gets the same numbers)."""
        was_training = model.training
        model.eval()
        try:
            features = lambda data: extract_split_features(  # noqa: E731
                model, data, self.image_column, self.transform, self.pooling, self.batch_size,
                accelerator=accelerator, progress=False)
            bank = features(self.bank)
            results = {}
            for name, split in self.queries.items():
                ranked = knn_classify(bank, self.bank_labels, features(split), [self.k], self.temperature,
                                      self.num_classes)[self.k]
                results[f"knn_top1_{name}"] = round(100.0 * top_k_accuracy(ranked, self.query_labels[name])["top1"], 4)
        finally:
            if was_training:
                model.train()
        return results

    def _log(self, state, model):
        if self.trainer is None or model is None or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        results = self.measure(model, self.trainer.accelerator)
        # the "eval_" prefix puts them under eval/ in TensorBoard, beside eval/loss
        self.trainer.log({f"eval_{key}": value for key, value in results.items()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # the last step is always measured (inside training, while the TensorBoard writer is open)
        if state.global_step % self.every_steps == 0 or state.global_step >= state.max_steps:
            self._log(state, model)


__all__ = ["KNNMonitorCallback", "monitor_subset"]
