"""The harness of the method study (issue #6): pre-train one model on the synthetic benchmark, evaluate it.

`benchmarks/attg_vs_mae.py` (vanilla MAE vs AttG-MAE, several seeds) and `benchmarks/ablations.py` (map source,
guidance mode, temperature schedule) both call `run_study(StudyConfig)`; only the fields they change differ.

Why a hand-written loop and not the Trainer: on a 2-core CPU every second counts, and the comparison needs the
two models to see *exactly* the same inputs. With one seed, a run draws

* the initial weights from `torch.manual_seed(seed)` (the guidance mode adds no parameter, so MAE and AttG
  start from bit-identical weights),
* the data order from its own `torch.Generator` (`randperm` per epoch),
* the crops and flips from a second generator (`PretrainTransform(..., generator=)`),
* the masking noise from a third one (passed as `noise=`; ViTMAE keeps the smallest-noise patches),

so the only difference between two runs of one seed is the loss (or, for "input_masking", the mask).
The optimiser is MAE's: AdamW betas (0.9, 0.95), weight decay 0.05 except on biases, norms and the tokens,
linear warm-up then half-cycle cosine to 0, set every step; tau follows `temperature_at` every step.

Evaluation follows the package: `extract_features` (masking off) with "cls" and "mean" pooling, DINO's weighted
k-NN (`knn_classify`, T = 0.07) with the train split as the bank, and the fast linear probe
(`train_linear_probe_on_features`: BatchNorm + Linear head, LARS) on fixed train features. Evaluation images are
the dataset's images as they are (`EvalTransform(resize_ratio=1)`): the synthetic images are already at the
model's size, and the default resize + center crop would cut off parts of objects that touch the border.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from plotting import plot_curves  # noqa: F401  (attg_vs_mae.py imports it from here)

from modeling_attg_mae.configuration_attg_mae import AttGViTMAEConfig
from modeling_attg_mae.data import EvalTransform, PretrainTransform, load_synthetic_dataset
from modeling_attg_mae.evaluation.knn import knn_classify
from modeling_attg_mae.evaluation.linear_probe import train_linear_probe_on_features
from modeling_attg_mae.features import extract_features
from modeling_attg_mae.modeling_attg_mae import AttGViTMAEForPreTraining
from modeling_attg_mae.object_discovery import add_attention_maps
from modeling_attg_mae.temperature import temperature_at

Guidance = Literal["attg", "input_masking", "foreground_only", "background_only", "inverted", "none"]
MapSource = Literal["object_mask", "spectral_residual", "tokencut_self"]
EVAL_SPLITS = ("validation", "validation_mixed_rand", "validation_only_fg")
POOLINGS = ("cls", "mean")
CACHE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "outputs", "study_cache")


@dataclass(frozen=True)
class StudyConfig:
    """Every knob of one run. The defaults are the main study's setting (see docs/RESULTS.md for the choice)."""

    # data (`load_synthetic_dataset`)
    num_train: int = 4000
    num_validation: int = 1000
    image_size: int = 32
    num_classes: int = 10
    data_seed: int = 0
    background_correlation: float = 0.75
    object_color: Literal["per_class", "random"] = "per_class"
    object_area: tuple[float, float] = (0.10, 0.25)
    texture_period: tuple[float, float] = (1 / 16, 1 / 7)
    # map source: the `attention_map` column the guided loss reads
    map_source: MapSource = "object_mask"
    map_grid: int = 16
    tokencut_checkpoint: str | None = None  # folder of an AttG/ViTMAE checkpoint for map_source="tokencut_self"
    # model (ViT encoder + MAE decoder)
    patch_size: int = 4
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    decoder_hidden_size: int = 64
    decoder_num_hidden_layers: int = 2
    decoder_num_attention_heads: int = 4
    mask_ratio: float = 0.75
    # AttG
    guidance: Guidance = "attg"
    temperature: float = 0.75
    temperature_end: float = 1.0
    temperature_schedule: Literal["cosine", "constant"] = "cosine"
    # optimisation
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1.5e-3
    warmup_epochs: int = 3
    weight_decay: float = 0.05
    aug_scale: tuple[float, float] = (0.2, 1.0)
    seed: int = 0
    # evaluation
    knn_k: int = 20
    eval_every: int = 0  # k-NN on validation + mixed_rand every this many epochs (0: only at the end)
    probe_epochs: int = 50
    probe_base_lr: float = 1.0  # MAE's 0.1 is tuned for ~450k steps; here are ~750 (raw pixels: 14% -> 28%)
    # 1, not 2: with another process busy on one of the 2 cores, 2 threads ran a step 18x slower (4.6 s vs 0.25 s)
    threads: int = 1

    def model_config(self) -> AttGViTMAEConfig:
        return AttGViTMAEConfig(
            image_size=self.image_size, patch_size=self.patch_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            intermediate_size=4 * self.hidden_size, decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_hidden_layers=self.decoder_num_hidden_layers,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            decoder_intermediate_size=4 * self.decoder_hidden_size, mask_ratio=self.mask_ratio,
            norm_pix_loss=True, attg_guidance=self.guidance, attg_temperature=self.temperature,
            attg_temperature_end=self.temperature_end, attg_temperature_schedule=self.temperature_schedule,
        )

    def data_kwargs(self) -> dict:
        return dict(num_train=self.num_train, num_validation=self.num_validation, image_size=self.image_size,
                    num_classes=self.num_classes, seed=self.data_seed,
                    background_correlation=self.background_correlation, object_color=self.object_color,
                    object_area=self.object_area, texture_period=self.texture_period)


# ----------------------------------------------------------------------------------------------------------
# Data: generated once per data setting (disk cache), decoded once per process (memory cache)
# ----------------------------------------------------------------------------------------------------------
_MEMORY: dict = {}


def _dataset(config: StudyConfig):
    key = ("data", json.dumps(config.data_kwargs(), sort_keys=True))
    if key not in _MEMORY:
        _MEMORY[key] = load_synthetic_dataset(**config.data_kwargs(), cache_dir=CACHE_DIR)
    return _MEMORY[key]


def _maps(config: StudyConfig) -> torch.Tensor:
    """Attention maps of the train split, float32 `(num_train, G, G)`, from the configured source."""
    key = ("maps", json.dumps(config.data_kwargs(), sort_keys=True), config.map_source, config.map_grid,
           config.tokencut_checkpoint)
    if key in _MEMORY:
        return _MEMORY[key]
    train = _dataset(config)["train"]
    if config.map_source == "object_mask":  # the ground truth: an upper bound on what a detector can give
        mapped = add_attention_maps(train, "column", image_column="object_mask", grid_size=config.map_grid,
                                    image_size=config.image_size, device="cpu")
    elif config.map_source == "spectral_residual":
        mapped = add_attention_maps(train, "spectral_residual", grid_size=config.map_grid,
                                    image_size=config.image_size, blur_sigma=1.5, device="cpu")
    elif config.map_source == "tokencut_self":
        if config.tokencut_checkpoint is None:
            raise ValueError("map_source='tokencut_self' needs tokencut_checkpoint (a folder with a ViTModel)")
        mapped = add_attention_maps(train, "tokencut", model_name_or_path=config.tokencut_checkpoint,
                                    grid_size=config.map_grid, image_size=config.image_size, device="cpu")
    else:
        raise ValueError(f"map_source must be one of {MapSource.__args__}, got {config.map_source!r}")
    maps = torch.tensor(np.asarray(mapped.with_format("numpy")["attention_map"], dtype=np.float32))  # (N, G, G)
    _MEMORY[key] = maps
    return maps


def _train_images(config: StudyConfig) -> list:
    key = ("train_images", json.dumps(config.data_kwargs(), sort_keys=True))
    if key not in _MEMORY:
        _MEMORY[key] = [image.convert("RGB") for image in _dataset(config)["train"]["image"]]
    return _MEMORY[key]


def eval_tensors(config: StudyConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{split: (pixel_values (N, 3, S, S), labels (N,))}` for train (the k-NN bank) and the validation splits."""
    key = ("eval", json.dumps(config.data_kwargs(), sort_keys=True))
    if key not in _MEMORY:
        transform = EvalTransform(config.image_size, resize_ratio=1.0)
        dataset = _dataset(config)
        out = {}
        for split in ("train",) + EVAL_SPLITS:
            part = dataset[split]
            pixels = torch.stack([transform(image)[0] for image in part["image"]])  # (N, 3, S, S)
            out[split] = (pixels, torch.tensor(part["label"], dtype=torch.long))
        _MEMORY[key] = out
    return _MEMORY[key]


def map_quality(config: StudyConfig) -> dict:
    """How well the configured maps find the objects of the train split, against the ground-truth masks.

    On the `map_grid` grid: `iou` is the mean IoU between the ground-truth object cells (foreground fraction
    >= 0.5) and as many of the map's highest cells; `object_share` the mean share of the map's total mass that
    lies on object cells (the ground truth's own share is 1.0; a flat map scores the object's area, `area`).
    """
    maps = _maps(config).flatten(1)  # (N, G * G)
    truth = _maps(replace(config, map_source="object_mask")).flatten(1) >= 0.5  # (N, G * G)
    count = truth.sum(dim=1)  # (N,) object cells per image
    ranks = maps.argsort(dim=1, descending=True).argsort(dim=1)  # (N, G * G) rank of each cell, 0 = highest
    top = ranks < count[:, None]
    iou = (top & truth).sum(1) / (top | truth).sum(1).clamp(min=1)
    share = (maps * truth).sum(1) / maps.sum(1).clamp(min=1e-12)
    return {"iou": float(iou.mean()), "object_share": float(share.mean()),
            "area": float(truth.float().mean())}


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def features_of(model, pixel_values: torch.Tensor, pooling: str, batch_size: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([extract_features(model, pixel_values[i: i + batch_size], pooling)
                      for i in range(0, len(pixel_values), batch_size)])


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, labels: torch.Tensor, k: int,
             num_classes: int) -> float:
    ranked = knn_classify(bank, bank_labels, query, ks=(k,), num_classes=num_classes, num_ranked=1)[k]
    return 100.0 * (ranked[:, 0] == labels).float().mean().item()


def evaluate_features(features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], config: StudyConfig,
                      splits=EVAL_SPLITS, probe: bool = True) -> dict:
    """k-NN (and linear-probe) top-1 in % on each split for one set of features (the `train` entry is the bank)."""
    out = {}
    for split in splits:
        out[f"knn/{split}"] = knn_top1(features["train"], labels["train"], features[split], labels[split],
                                       config.knn_k, config.num_classes)
    if probe:
        head = train_linear_probe_on_features(features["train"], labels["train"], config.num_classes,
                                              epochs=config.probe_epochs, warmup_epochs=5, batch_size=256,
                                              base_lr=config.probe_base_lr, seed=config.seed)
        with torch.no_grad():
            for split in splits:
                predictions = head(features[split]).argmax(dim=1)
                out[f"linear/{split}"] = 100.0 * (predictions == labels[split]).float().mean().item()
    return out


def evaluate_model(model, config: StudyConfig, splits=EVAL_SPLITS, poolings=POOLINGS, probe: bool = True) -> dict:
    """`{pooling: {metric/split: top-1 %}}`."""
    data = eval_tensors(config)
    labels = {split: data[split][1] for split in ("train",) + tuple(splits)}
    # one encoder pass gives both poolings: "cls+mean" is [CLS | mean of the patch tokens], (N, 2D)
    both = {split: features_of(model, data[split][0], "cls+mean") for split in labels}
    width = both["train"].shape[1] // 2
    results = {}
    for pooling in poolings:
        columns = slice(0, width) if pooling == "cls" else slice(width, 2 * width)
        features = {split: both[split][:, columns] for split in labels}
        results[pooling] = evaluate_features(features, labels, config, splits, probe)
    return results


def evaluate_raw_pixels(config: StudyConfig) -> dict:
    """The floor every encoder should beat: k-NN / linear probe on the flattened normalised pixels."""
    data = eval_tensors(config)
    features = {split: data[split][0].flatten(1) for split in data}
    labels = {split: data[split][1] for split in data}
    return evaluate_features(features, labels, config)


# ----------------------------------------------------------------------------------------------------------
# Pre-training
# ----------------------------------------------------------------------------------------------------------
def _parameter_groups(model, weight_decay: float):
    # MAE: no weight decay on biases, norms and the tokens / position embeddings
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or name.endswith(("cls_token", "mask_token", "position_embeddings", "pos_embed")):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, lr: float) -> float:
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_model(config: StudyConfig) -> AttGViTMAEForPreTraining:
    torch.manual_seed(config.seed)  # same initial weights for every guidance mode of a seed
    return AttGViTMAEForPreTraining(config.model_config())


def pretrain(config: StudyConfig, log=print, on_epoch_end=None) -> tuple[AttGViTMAEForPreTraining, dict]:
    """Pre-train one model; returns it and a history (`loss` per epoch, timing, the callback's records)."""
    torch.set_num_threads(config.threads)
    model = build_model(config)
    images = _train_images(config)
    maps = None if config.guidance == "none" else _maps(config)
    transform = PretrainTransform(config.image_size, config.patch_size, scale=config.aug_scale)
    order_generator = torch.Generator().manual_seed(config.seed)
    augment_generator = torch.Generator().manual_seed(config.seed + 1)
    mask_generator = torch.Generator().manual_seed(config.seed + 2)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.95))
    steps_per_epoch = len(images) // config.batch_size  # drop_last, as MAE
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs
    num_patches = (config.image_size // config.patch_size) ** 2
    history = {"loss": [], "epoch_seconds": [], "evals": []}
    if on_epoch_end is not None:
        history["evals"].append({"epoch": 0, **on_epoch_end(model, 0)})
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        order = torch.randperm(len(images), generator=order_generator)
        for batch_index in range(steps_per_epoch):
            indices = order[batch_index * config.batch_size: (batch_index + 1) * config.batch_size].tolist()
            pixels, batch_maps = [], []
            for i in indices:
                # the crop and flip draws do not depend on the map: MAE (no map) and AttG get the same crops
                pixel_values, attention_map = transform(images[i], None if maps is None else maps[i],
                                                        generator=augment_generator)
                pixels.append(pixel_values)
                batch_maps.append(attention_map)
            pixel_values = torch.stack(pixels)  # (B, 3, S, S)
            attention_map = None if maps is None else torch.stack(batch_maps)  # (B, gh, gw)
            noise = torch.rand(len(indices), num_patches, generator=mask_generator)  # (B, N)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(step, total_steps, warmup_steps, config.lr)
            model.set_attg_temperature(temperature_at(step, total_steps, config.temperature, config.temperature_end,
                                                      config.temperature_schedule))
            outputs = model(pixel_values, attention_map=attention_map,
                            noise=None if config.guidance == "input_masking" else noise)
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            optimizer.step()
            # the unweighted reconstruction loss of the masked patches: comparable across guidance modes
            mask = outputs.mask.float()
            losses.append(((outputs.patch_loss.detach() * mask).sum() / mask.sum()).item())
            step += 1
        history["loss"].append(float(np.mean(losses)))
        history["epoch_seconds"].append(time.perf_counter() - start)
        record = ""
        if on_epoch_end is not None and (epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0)):
            evals = on_epoch_end(model, epoch)
            history["evals"].append({"epoch": epoch, **evals})
            record = " " + " ".join(f"{k}={v:.1f}" for k, v in evals.items())
        log(f"  [{config.guidance} seed {config.seed}] epoch {epoch}/{config.epochs} "
            f"loss {history['loss'][-1]:.4f} ({history['epoch_seconds'][-1]:.1f}s){record}")
    return model, history


def progress_knn(config: StudyConfig, pooling: str):
    """An `on_epoch_end` callback: k-NN top-1 on validation and mixed_rand with one pooling."""
    def callback(model, epoch):
        result = evaluate_model(model, config, splits=("validation", "validation_mixed_rand"), poolings=(pooling,),
                                probe=False)[pooling]
        model.train()
        return result
    return callback


def run_study(config: StudyConfig, log=print, progress_pooling: str | None = None) -> dict:
    """Pre-train + evaluate one configuration. Returns a JSON-able record."""
    start = time.perf_counter()
    callback = None if progress_pooling is None or not config.eval_every else progress_knn(config, progress_pooling)
    model, history = pretrain(config, log, callback)
    train_seconds = time.perf_counter() - start
    results = evaluate_model(model, config)
    return {"config": asdict(config), "results": results, "history": history, "train_seconds": train_seconds,
            "total_seconds": time.perf_counter() - start, "model": model}


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def save_json(record, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


__all__ = ["StudyConfig", "run_study", "pretrain", "evaluate_model", "evaluate_raw_pixels", "summarize", "replace",
           "field"]
