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
        image_size: side of the transformed images; when given, their pixels are cached (see `_pixels`).
    """

    def __init__(self, bank, queries: dict, transform, image_column: str = "image", label_column: str = "label",
                 every_steps: int = 100, k: int = 20, temperature: float = DEFAULT_TEMPERATURE,
                 pooling: str = "cls", batch_size: int = 256, num_classes: int | None = None,
                 image_size: int | None = None):
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
        self.image_size, self.max_cache_bytes = image_size, 512 * 2**20
        self._pixel_cache: dict = {}
        self._last_step = -1

    def _pixels(self, name: str, data):
        """The evaluation transform is deterministic: decode and transform each image once, then keep the
        pixels (float16; images are re-decoded at every measurement when they would take over 512 MiB)."""
        if name not in self._pixel_cache:
            size = len(data) * 3 * self.image_size ** 2 * 2 if self.image_size else float("inf")
            if size > self.max_cache_bytes:
                return data, self.image_column, self.transform
            self._pixel_cache[name] = _Pixels(torch.stack([self.transform(data[i][self.image_column])
                                                           for i in range(len(data))]).half())
        return self._pixel_cache[name], "pixel_values", _to_float

    def measure(self, model, accelerator=None) -> dict[str, float]:
        """`{"knn_top1_<split>": top-1 %}` of `model` now (every process gets the same numbers)."""
        was_training = model.training
        model.eval()
        try:
            def features(name, data):
                data, column, transform = self._pixels(name, data)
                return extract_split_features(model, data, column, transform, pooling=self.pooling,
                                              batch_size=self.batch_size, accelerator=accelerator, progress=False)

            bank = features("__bank__", self.bank)
            results = {}
            for name, split in self.queries.items():
                ranked = knn_classify(bank, self.bank_labels, features(name, split), [self.k], self.temperature,
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


class _Pixels:
    """Rows `{"pixel_values": (3, S, S)}` of a cached pixel tensor, indexable like a `datasets.Dataset`."""

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels

    def __len__(self):
        return self.pixels.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.pixels[index]}


def _to_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float()


__all__ = ["KNNMonitorCallback", "monitor_subset"]
